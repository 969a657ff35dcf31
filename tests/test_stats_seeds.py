"""Verdicts over training seeds: the mean difference, its interval over each query's mean hit, and a
significance that needs McNemar p < 0.05 on every seed."""

from __future__ import annotations

from grace.experiments.selection import verdict, verdict_markdown
from grace.stats import seeds_comparison


def test_seeds_comparison_averages_seeds_and_needs_every_seed_significant():
    ref = [0] * 60 + [1] * 40  # reference: 40% at R@1
    strong = [[1] * 60 + [1] * 40, [1] * 55 + [0] * 5 + [1] * 40, [1] * 58 + [0] * 2 + [1] * 40]
    c = seeds_comparison(strong, ref, 1)
    assert abs(c["diff"] - (0.60 + 0.55 + 0.58) / 3) < 1e-9 and c["seeds"] == 3
    assert c["low"] > 0 and c["significant"] and len(c["per_seed"]) == 3
    mixed = [strong[0], [0] * 60 + [1] * 40, strong[2]]  # one seed ties the reference
    m = seeds_comparison(mixed, ref, 1)
    assert not m["significant"] and m["sd"] > 0.3


def test_the_verdict_reads_every_seed_and_says_so():
    ref = {"gold_ranks": [0] * 50 + [1] * 50, "recall@1": 0.5}
    seeds = {"0": [1] * 100, "1": [1] * 70 + [0] * 30, "2": [0] * 50 + [1] * 50}
    test = {"rq": {"gold_ranks": seeds["0"], "recall@1": 1.0, "training_seeds": {"gold_ranks": seeds}},
            "bm25": ref, "sibling": ref, "clip_faiss": ref}
    selection = {"generative": "rq", "non_generative": "clip_faiss", "split": "val", "families": {}}
    decided = verdict(test, selection, [1])
    assert decided["seeds"] == [0, 1, 2] and set(decided["over_seeds"]) == {"clip_faiss", "bm25", "sibling"}
    text = verdict_markdown(decided, [1])
    assert "over training seeds 0, 1, 2" in text and "not significant" in text  # seed 2 ties the reference
    single = verdict({**test, "rq": {"gold_ranks": seeds["0"], "recall@1": 1.0}}, selection, [1])
    assert "one training seed" in verdict_markdown(single, [1])
