"""Honest statistics for Recall@K: bootstrap confidence intervals and paired comparisons.

Every evaluation keeps, per query, the rank of its first gold image (``gold_ranks``: 1-based among the
distinct images returned, 0 when absent), so any Recall@K and its interval can be recomputed later.
Queries that share a gold image are not independent (Flickr30K has five captions per image), so the
bootstrap resamples *clusters* (by default: the gold image) rather than single queries.

- :func:`recall_ci`: percentile bootstrap 95% interval of Recall@K.
- :func:`paired_comparison`: retriever A vs B on the same queries: the recall difference, its paired
  bootstrap interval and p-value, and McNemar's exact test on the discordant queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 10_000
ALPHA = 0.05


def hits_from_ranks(gold_ranks: Sequence[int], k: int) -> np.ndarray:
    """(Q,) 0/1: the gold image is within the first ``k`` distinct results."""
    ranks = np.asarray(gold_ranks, dtype=np.int64)
    return ((ranks > 0) & (ranks <= k)).astype(np.float64)


def _cluster_index(clusters: Sequence | None, n: int) -> tuple[np.ndarray, int]:
    """Cluster id per query (0..G-1) and G; every query its own cluster when ``clusters`` is None."""
    if clusters is None:
        return np.arange(n), n
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster labels for {n} queries")
    _, inverse = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    return inverse, int(inverse.max()) + 1 if n else 0


def _boot_means(values: np.ndarray, clusters: Sequence | None, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot,) bootstrap means of per-query ``values`` (Q,), resampling clusters of queries."""
    index, n_groups = _cluster_index(clusters, values.shape[0])
    sums = np.bincount(index, weights=values, minlength=n_groups)
    counts = np.bincount(index, minlength=n_groups).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))
    return sums[draws].sum(1) / counts[draws].sum(1)


def recall_ci(gold_ranks: Sequence[int], k: int, *, clusters: Sequence | None = None, n_boot: int = N_BOOT,
              alpha: float = ALPHA, seed: int = 0) -> tuple[float, float, float]:
    """(recall, low, high): Recall@K and its percentile-bootstrap ``1 - alpha`` interval, in [0, 1]."""
    hits = hits_from_ranks(gold_ranks, k)
    if hits.size == 0:
        return 0.0, 0.0, 0.0
    boots = _boot_means(hits, clusters, n_boot, seed)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(hits.mean()), float(low), float(high)


@dataclass
class PairedComparison:
    """A vs B at one K on the same queries (differences in recall, A minus B, in [−1, 1])."""

    k: int
    recall_a: float
    recall_b: float
    diff: float
    low: float
    high: float
    p_bootstrap: float
    p_mcnemar: float
    a_only: int
    b_only: int
    num_queries: int
    n_boot: int = N_BOOT

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value (binomial test of the discordant pairs at p = 1/2)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(a_only, b_only), n, 0.5).pvalue)


def paired_comparison(ranks_a: Sequence[int], ranks_b: Sequence[int], k: int, *, clusters: Sequence | None = None,
                      n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = 0) -> PairedComparison:
    """Paired bootstrap of Recall@K(A) − Recall@K(B): both resampled with the *same* draws of queries.

    ``p_bootstrap`` is the two-sided share of resamples whose difference has the other sign (or is 0)
    than the observed one: the probability of seeing A ahead (or behind) by chance of the query sample.
    """
    if len(ranks_a) != len(ranks_b):
        raise ValueError(f"paired comparison needs the same queries: {len(ranks_a)} vs {len(ranks_b)} ranks")
    a, b = hits_from_ranks(ranks_a, k), hits_from_ranks(ranks_b, k)
    n = int(a.size)
    if n == 0:
        return PairedComparison(k, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0, 0, 0)
    boots = _boot_means(a - b, clusters, n_boot, seed)
    diff = float(a.mean() - b.mean())
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    if diff > 0:
        p = 2 * float(np.mean(boots <= 0))
    elif diff < 0:
        p = 2 * float(np.mean(boots >= 0))
    else:
        p = 1.0
    a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return PairedComparison(k, float(a.mean()), float(b.mean()), diff, float(low), float(high), min(1.0, p),
                            _mcnemar_exact(a_only, b_only), a_only, b_only, n, n_boot)


def add_intervals(result: dict, ks: Sequence[int], *, clusters: Sequence | None = None, seed: int = 0) -> dict:
    """Add ``recall@K_ci = [low, high]`` to one result that holds ``gold_ranks`` (in place; returned)."""
    ranks = result.get("gold_ranks")
    if ranks is None:
        return result
    for k in ks:
        _, low, high = recall_ci(ranks, k, clusters=clusters, seed=seed)
        result[f"recall@{k}_ci"] = [low, high]
    result["ci_level"] = 1 - ALPHA
    result["ci_method"] = "percentile bootstrap over gold-image clusters" if clusters is not None \
        else "percentile bootstrap over queries"
    return result


def best_by_recall(results: dict[str, dict], names: Sequence[str], k: int = 1) -> str | None:
    """The name among ``names`` (present in ``results`` with per-query ranks) with the highest Recall@K."""
    present = [n for n in names if n in results and results[n].get("gold_ranks") is not None]
    return max(present, key=lambda n: results[n][f"recall@{k}"]) if present else None


def compare_to(results: dict[str, dict], names: Sequence[str], reference: str, ks: Sequence[int], *,
               clusters: Sequence | None = None, seed: int = 0) -> dict[str, dict]:
    """``{name: {"vs": reference, "R@K": PairedComparison dict, ...}}`` for every name with per-query ranks."""
    out: dict[str, dict] = {}
    ref_ranks = results[reference]["gold_ranks"]
    for name in names:
        ranks = results.get(name, {}).get("gold_ranks")
        if ranks is None or name == reference:
            continue
        out[name] = {"vs": reference, **{f"R@{k}": paired_comparison(ranks, ref_ranks, k, clusters=clusters,
                                                                    seed=seed).as_dict() for k in ks}}
    return out


def summarise(results: dict[str, dict], ks: Sequence[int], *, candidates: Sequence[str],
              references: Sequence[str], clusters: Sequence | None = None, seed: int = 0) -> dict:
    """Add intervals to every result and compare each candidate with the best reference (by R@1).

    Returns ``{"reference": name | None, "by_retriever": compare_to(...)}`` (empty when nothing to compare).
    """
    for result in results.values():
        add_intervals(result, ks, clusters=clusters, seed=seed)
    reference = best_by_recall(results, references, k=min(ks))
    if reference is None:
        return {"reference": None, "by_retriever": {}}
    return {"reference": reference,
            "by_retriever": compare_to(results, candidates, reference, ks, clusters=clusters, seed=seed)}


#: a difference is called significant only when McNemar's exact test gives p below this (on every seed)
SIGNIFICANCE = 0.05


def seeds_comparison(ranks_by_seed: Sequence[Sequence[int]], ref_ranks: Sequence[int], k: int, *,
                     clusters: Sequence | None = None, n_boot: int = N_BOOT, alpha: float = ALPHA,
                     seed: int = 0) -> dict:
    """A row trained under several seeds against one reference on the same queries, at one K.

    ``diff`` is the mean over seeds of Recall@K(A) − Recall@K(B), with ``sd`` over seeds; ``low`` / ``high`` is the
    paired bootstrap interval of each query's hit averaged over the seeds minus the reference's hit (clusters
    resampled as :func:`paired_comparison` does); ``per_seed`` holds each seed's own paired comparison (McNemar
    included). ``significant``: every seed's McNemar p is below :data:`SIGNIFICANCE`, all on the same side."""
    if not ranks_by_seed:
        raise ValueError("seeds_comparison needs at least one seed's ranks")
    per_seed = [paired_comparison(ranks, ref_ranks, k, clusters=clusters, n_boot=n_boot, alpha=alpha, seed=seed)
                for ranks in ranks_by_seed]
    mean_hits = np.mean([hits_from_ranks(r, k) for r in ranks_by_seed], axis=0)
    ref = hits_from_ranks(ref_ranks, k)
    boots = _boot_means(mean_hits - ref, clusters, n_boot, seed) if ref.size else np.zeros(1)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    diffs = [c.diff for c in per_seed]
    same_side = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    return {"k": k, "seeds": len(per_seed), "diff": float(np.mean(diffs)),
            "sd": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0,
            "low": float(low), "high": float(high), "recall_b": float(ref.mean()) if ref.size else 0.0,
            "recall_a_mean": float(mean_hits.mean()) if mean_hits.size else 0.0,
            "significant": bool(same_side and all(c.p_mcnemar < SIGNIFICANCE for c in per_seed)),
            "per_seed": [c.as_dict() for c in per_seed]}
