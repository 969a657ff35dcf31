"""benchmarks/compare_runs.py: rows from separate runs, paired on the same queries against the best or a chosen row."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import compare_runs  # (benchmarks/ is a folder of scripts, not a package)


def _result(ranks: list[int], model: str) -> dict:
    recall = {f"recall@{k}": sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
    return {"structured": {"gold_ranks": ranks, "num_queries": len(ranks), **recall},
            "clip_faiss": {"gold_ranks": [1] * len(ranks), "num_queries": len(ranks), "recall@1": 1.0,
                           "recall@5": 1.0, "recall@10": 1.0},
            "provenance": {"config": {"model": model}}}


def test_rows_are_paired_against_the_best_or_the_chosen_reference(shared_tiny_dataset, tmp_path):
    from grace.infer.pipeline import test_split_queries

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    n = len(test_split_queries(shared_tiny_dataset)[0])
    (tmp_path / "good.json").write_text(json.dumps(_result([1] * n, "m")))
    (tmp_path / "bad.json").write_text(json.dumps(_result([20] * n, "m")))
    inputs = [f"good={tmp_path / 'good.json'}", f"bad={tmp_path / 'bad.json'}", "--dataset", str(dataset_json)]

    best = compare_runs.main([*inputs, "--out", str(tmp_path / "best")])
    assert best["comparisons"]["reference"] == "good/structured"
    assert best["comparisons"]["by_retriever"]["bad/structured"]["R@1"]["diff"] == pytest.approx(-1.0)

    chosen = compare_runs.main([*inputs, "--reference", "bad/structured", "--out", str(tmp_path / "chosen")])
    assert chosen["comparisons"]["reference"] == "bad/structured"
    assert chosen["comparisons"]["by_retriever"]["good/structured"]["R@1"]["diff"] == pytest.approx(1.0)
    assert "Paired vs bad/structured, the chosen reference" in (tmp_path / "chosen.md").read_text()

    with pytest.raises(SystemExit, match="is not a row"):
        compare_runs.main([*inputs, "--reference", "nope/structured", "--out", str(tmp_path / "x")])
