"""Choices on val: the best generative and non-generative rows, and the best row of each retriever family,
which the verdict on test names beside the chosen non-generative row and the BM25 control."""

from __future__ import annotations

from grace.experiments.selection import select_on, verdict


def _row(ranks: list[int]) -> dict:
    return {"gold_ranks": ranks, **{f"recall@{k}": sum(0 < r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}}


def test_the_verdict_names_the_best_dense_and_late_interaction_rows_chosen_on_val():
    val = {"rq": _row([1, 2, 3, 9]), "clip_faiss": _row([1, 1, 2, 2]), "clip_faiss_expanded": _row([1, 1, 1, 2]),
           "late_interaction": _row([3, 3, 3, 3]), "late_interaction_expanded": _row([1, 3, 3, 3]),
           "bm25": _row([1, 9, 9, 9])}
    selection = select_on(val, ["rq"], ["clip_faiss", "clip_faiss_expanded", "late_interaction",
                                        "late_interaction_expanded", "bm25"])
    assert selection["non_generative"] == "clip_faiss_expanded"
    assert selection["families"] == {"dense": "clip_faiss_expanded", "late_interaction": "late_interaction_expanded"}
    test = {name: _row([1, 2, 1, 4] if name == "rq" else [2, 1, 1, 1]) for name in val}
    result = verdict(test, selection, (1, 5, 10))
    assert list(result["against"]) == ["clip_faiss_expanded", "late_interaction_expanded", "bm25"]
    assert result["against"]["bm25"]["R@1"]["diff"] == 0.5 - 0.75
    only_bm25 = select_on(val, ["rq"], ["bm25"])
    assert only_bm25["families"] == {} and list(verdict(test, only_bm25, (1,))["against"]) == ["bm25"]
