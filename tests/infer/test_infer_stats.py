"""Recall intervals and paired comparisons: they cover the truth, shrink with more queries, respect
clusters of queries sharing a gold image, and tell a real difference from none."""

from __future__ import annotations

import numpy as np
import pytest

from grace.infer.evaluate import gold_rank, metrics
from grace.stats import paired_comparison, recall_ci, summarise


def _ranks(rng: np.random.Generator, n: int, p_hit: float) -> list[int]:
    """Per-query gold ranks: rank 1 with probability p_hit, else not retrieved."""
    return [1 if h else 0 for h in rng.random(n) < p_hit]


def test_gold_rank_counts_distinct_images():
    assert gold_rank(["a", "a", "b", "c"], "c") == 3
    assert gold_rank(["a", "b"], {"x", "b"}) == 2
    assert gold_rank(["a", "b"], "z") == 0
    res = metrics([["a", "b"], ["b", "a"]], ["b", "b"], [1.0, 1.0], ks=(1, 2))
    assert res["gold_ranks"] == [2, 1] and res["recall@1"] == 0.5 and res["recall@2"] == 1.0


def test_interval_covers_the_true_recall_and_shrinks_with_more_queries():
    rng = np.random.default_rng(0)
    covered, widths = 0, {}
    for trial in range(40):
        ranks = _ranks(rng, 200, 0.3)
        _, low, high = recall_ci(ranks, 1, n_boot=2000, seed=trial)
        covered += low <= 0.3 <= high
    assert covered >= 34  # nominal 95%: 38 of 40 expected; far fewer means the interval is wrong
    for n in (50, 800):
        _, low, high = recall_ci(_ranks(rng, n, 0.3), 1, n_boot=2000)
        widths[n] = high - low
    assert 0.15 < widths[50] < 0.35 and widths[800] < widths[50] / 3  # ~1/sqrt(n)


def test_cluster_bootstrap_is_wider_when_queries_of_one_image_agree():
    # 40 images x 5 captions, every caption of an image hit or missed together: 40 independent units, not 200
    per_image = _ranks(np.random.default_rng(1), 40, 0.5)
    ranks = [r for r in per_image for _ in range(5)]
    clusters = [i for i in range(40) for _ in range(5)]
    _, lo_q, hi_q = recall_ci(ranks, 1, n_boot=4000)
    _, lo_c, hi_c = recall_ci(ranks, 1, clusters=clusters, n_boot=4000)
    assert (hi_c - lo_c) > 1.8 * (hi_q - lo_q)


def test_paired_comparison_finds_a_real_gap_and_not_a_null_one():
    rng = np.random.default_rng(2)
    base = rng.random(300)
    strong = [1 if u < 0.5 else 0 for u in base]
    weak = [1 if u < 0.3 else 0 for u in base]  # the same queries, 20 points fewer hits
    gap = paired_comparison(strong, weak, 1, n_boot=4000)
    assert gap.diff == pytest.approx(np.mean(strong) - np.mean(weak))
    assert gap.low > 0.1 and gap.p_bootstrap < 0.001 and gap.p_mcnemar < 1e-6
    assert gap.b_only == 0 and gap.a_only == sum(strong) - sum(weak)
    shuffled = list(strong)
    rng.shuffle(shuffled)  # same recall, unrelated per-query hits
    null = paired_comparison(strong, shuffled, 1, n_boot=4000)
    assert null.diff == 0 and null.low < 0 < null.high and null.p_bootstrap == 1.0
    with pytest.raises(ValueError, match="same queries"):
        paired_comparison([1, 0], [1], 1)


def test_summarise_adds_intervals_and_compares_with_the_best_baseline():
    rng = np.random.default_rng(3)
    results = {name: {"gold_ranks": _ranks(rng, 120, p)} for name, p in
               (("structured", 0.4), ("numeric", 0.1), ("clip_faiss", 0.35), ("late_interaction", 0.2))}
    for res in results.values():
        res["recall@1"] = float(np.mean([r == 1 for r in res["gold_ranks"]]))
    out = summarise(results, (1, 5), candidates=["structured", "numeric"],
                    references=["clip_faiss", "late_interaction"])
    assert out["reference"] == "clip_faiss"
    assert set(out["by_retriever"]) == {"structured", "numeric"}
    assert out["by_retriever"]["numeric"]["R@1"]["diff"] < 0
    low, high = results["structured"]["recall@1_ci"]
    assert low < results["structured"]["recall@1"] < high
