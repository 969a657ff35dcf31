"""The evaluation harness: Recall@K (GRACE semantics) and latency for any :class:`Retriever`.

A query hits at K when its gold image is among the top-K *distinct images* returned. Gold may be one
image id or a set of acceptable ids. Identifier-level results (e.g. semantic ids, where every caption id
of an image names that image) are mapped to images by the retriever before scoring, so any caption id of
the gold image counts. Under ``torchrun`` the queries are sharded across ranks (rank::world_size), every
rank scores its shard, and rank 0 gathers per-query results in the original order — so the metrics equal
a single-process run for deterministic retrievers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from grace.distributed import rank_and_world
from grace.retriever import Query, Retriever

DEFAULT_KS = (1, 5, 10)


def _gold_set(gold: str | Iterable[str]) -> set[str]:
    return {gold} if isinstance(gold, str) else set(gold)


def gold_rank(ranked: Sequence[str], gold: str | Iterable[str]) -> int:
    """1-based rank of the first gold image among the distinct ranked images; 0 when none is returned."""
    gold_ids = _gold_set(gold)
    seen: set[str] = set()
    for image_id in ranked:
        if image_id in seen:
            continue
        seen.add(image_id)
        if image_id in gold_ids:
            return len(seen)
    return 0


def hits_at_k(ranked: Sequence[str], gold: str | Iterable[str], ks: Sequence[int] = DEFAULT_KS) -> dict[int, bool]:
    """For one query: is a gold image among the first K distinct ranked images, for every K."""
    rank = gold_rank(ranked, gold)
    return {k: 0 < rank <= k for k in ks}


def _recall_from_ranks(ranks: Sequence[int], ks: Sequence[int]) -> dict[str, float]:
    if not ranks:
        return {f"recall@{k}": 0.0 for k in ks}
    return {f"recall@{k}": sum(0 < r <= k for r in ranks) / len(ranks) for k in ks}


def recall_at_k(rankings: Sequence[Sequence[str]], gold: Sequence[str | Iterable[str]],
                ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Recall@K in [0, 1] over queries (``rankings[i]`` = ranked image ids of query ``i``)."""
    if len(rankings) != len(gold):
        raise ValueError(f"{len(rankings)} rankings for {len(gold)} gold entries")
    return _recall_from_ranks([gold_rank(ranked, g) for ranked, g in zip(rankings, gold)], ks)


def _as_queries(queries: Sequence[str | Query]) -> list[Query]:
    return [q if isinstance(q, Query) else Query(text=q) for q in queries]


def run_queries(retriever: Retriever, queries: Sequence[str | Query], k: int, *, batch_size: int = 32,
                progress: bool = True, desc: str | None = None) -> tuple[list[list[str]], list[float]]:
    """Ranked image ids and wall-time per query in ms (a batch's time shared by its queries)."""
    from tqdm import tqdm

    queries = _as_queries(queries)
    rankings: list[list[str]] = []
    latencies: list[float] = []
    bar = tqdm(total=len(queries), desc=desc or retriever.name, disable=not progress, leave=False)
    for start in range(0, len(queries), batch_size):
        batch = queries[start:start + batch_size]
        t0 = time.perf_counter()
        hits = retriever.search(batch, k)
        per_query = (time.perf_counter() - t0) * 1000.0 / len(batch)
        rankings.extend([h.image_id for h in row] for row in hits)
        latencies.extend([per_query] * len(batch))
        bar.update(len(batch))
    bar.close()
    return rankings, latencies


def metrics(rankings: Sequence[Sequence[str]], gold: Sequence, latencies: Sequence[float],
            ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Recall@K, mean latency, query count, and ``gold_ranks`` (per query, for intervals and paired tests)."""
    if len(rankings) != len(gold):
        raise ValueError(f"{len(rankings)} rankings for {len(gold)} gold entries")
    ranks = [gold_rank(ranked, g) for ranked, g in zip(rankings, gold)]
    out: dict = _recall_from_ranks(ranks, ks)
    out["latency_ms"] = sum(latencies) / len(latencies) if latencies else 0.0
    out["num_queries"] = len(rankings)
    out["gold_ranks"] = ranks
    return out


def evaluate(retriever: Retriever, queries: Sequence[str | Query], gold: Sequence[str | Iterable[str]],
             ks: Sequence[int] = DEFAULT_KS, *, batch_size: int = 32, progress: bool = True) -> dict[str, float]:
    """``{"recall@1": …, "recall@5": …, "recall@10": …, "latency_ms": …, "num_queries": …,
    "gold_ranks": [...]}`` (``gold_ranks``: per query, see :func:`gold_rank`).

    Distributed when ``torch.distributed`` is initialised: each rank scores ``queries[rank::world]``
    and every rank returns the metrics of all queries.
    """
    rank, world = rank_and_world()
    index = list(range(rank, len(queries), world))
    rankings, latencies = run_queries(retriever, [queries[i] for i in index], max(ks), batch_size=batch_size,
                                      progress=progress and rank == 0)
    if world > 1:
        rankings, latencies = _gather_in_order(index, rankings, latencies, len(queries))
    return metrics(rankings, gold, latencies, ks)


def _gather_in_order(index: list[int], rankings: list, latencies: list, n: int) -> tuple[list, list[float]]:
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (index, rankings, latencies))
    all_rankings: list = [None] * n
    all_latencies: list[float] = [0.0] * n
    for idx, ranks, lats in parts:
        for i, r, t in zip(idx, ranks, lats):
            all_rankings[i], all_latencies[i] = r, t
    return all_rankings, all_latencies
