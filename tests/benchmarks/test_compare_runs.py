"""benchmarks/compare_runs.py: rows from separate runs, paired on the same queries against the best or a chosen row."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import compare_runs  # (benchmarks/ is a folder of scripts, not a package)


def _result(ranks: list[int], model: str, dataset, ids: list[str] | None = None) -> dict:
    from grace.experiments.query_sets import split_queries
    from grace.provenance import query_provenance

    recall = {f"recall@{k}": sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
    test = split_queries(dataset)
    queries = query_provenance(ids or test.ids, test.gold, "test", "t")
    return {"structured": {"gold_ranks": ranks, "num_queries": len(ranks), **recall},
            "clip_faiss": {"gold_ranks": [1] * len(ranks), "num_queries": len(ranks), "recall@1": 1.0,
                           "recall@5": 1.0, "recall@10": 1.0},
            "provenance": {"config": {"model": model}, "queries": queries}}


def test_rows_are_paired_against_the_best_or_the_chosen_reference(shared_tiny_dataset, tmp_path):
    from grace.experiments.query_sets import split_queries

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    n = len(split_queries(shared_tiny_dataset).texts)
    (tmp_path / "good.json").write_text(json.dumps(_result([1] * n, "m", shared_tiny_dataset)))
    (tmp_path / "bad.json").write_text(json.dumps(_result([20] * n, "m", shared_tiny_dataset)))
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


def test_runs_are_paired_by_query_id_not_by_count(shared_tiny_dataset, tmp_path):
    """Two runs with as many queries but other query ids (another split, another order) are refused."""
    from grace.experiments.query_sets import split_queries

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    test = split_queries(shared_tiny_dataset)
    n, ids = len(test.texts), test.ids
    (tmp_path / "a.json").write_text(json.dumps(_result([1] * n, "a", shared_tiny_dataset)))
    (tmp_path / "b.json").write_text(json.dumps(_result([1] * n, "b", shared_tiny_dataset, ids=ids[::-1])))
    with pytest.raises(SystemExit, match="different query ids"):
        compare_runs.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--dataset", str(dataset_json),
                           "--out", str(tmp_path / "x")])
    old = _result([1] * n, "c", shared_tiny_dataset)
    del old["provenance"]["queries"]  # made before query ids were recorded
    (tmp_path / "c.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="no query ids"):
        compare_runs.main([str(tmp_path / "a.json"), str(tmp_path / "c.json"), "--dataset", str(dataset_json),
                           "--out", str(tmp_path / "y")])


def test_runs_are_compared_on_another_query_set_with_each_runs_own_extra_rows(shared_tiny_dataset, tmp_path):
    """--query-set val pairs the rows every input scored on val (by id); --rows bm25 keeps each run's own control."""
    from grace.provenance import query_provenance

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    test = [r.image_id for r in shared_tiny_dataset.split("test")]
    val = query_provenance([f"{i}#0" for i in test[::-1]], test[::-1], "val", "v")  # any ids, as recorded

    def run(ranks: list[int], bm25: list[int], model: str) -> dict:
        data = _result([1] * len(test), model, shared_tiny_dataset)
        rows = {name: {"gold_ranks": r, "num_queries": len(r),
                       **{f"recall@{k}": sum(x <= k for x in r) / len(r) for k in (1, 5, 10)}}
                for name, r in (("structured", ranks), ("bm25", bm25), ("clip_faiss", [1] * len(ranks)))}
        data["query_sets"] = {"val": rows}
        data["provenance"]["query_sets"] = {"val": val}
        return data

    n = len(test)
    (tmp_path / "a.json").write_text(json.dumps(run([1] * n, [2] * n, "a")))
    (tmp_path / "b.json").write_text(json.dumps(run([30] * n, [1] * n, "b")))
    report = compare_runs.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--dataset", str(dataset_json),
                                "--query-set", "val", "--rows", "bm25", "--reference", "b/structured",
                                "--out", str(tmp_path / "val")])
    assert report["query_set"] == "val" and set(report["rows"]) == {"a/structured", "b/structured", "a/bm25",
                                                                     "b/bm25", "clip_faiss"}
    by = report["comparisons"]["by_retriever"]
    assert by["a/structured"]["R@1"]["diff"] == pytest.approx(1.0)  # the val rows, not the test rows (all rank 1)
    assert by["b/bm25"]["R@1"]["diff"] == pytest.approx(1.0) and by["a/bm25"]["R@1"]["diff"] == pytest.approx(0.0)
    assert "Query set: `val`" in (tmp_path / "val.md").read_text()
    with pytest.raises(SystemExit, match="no query set 'val-natural'"):
        compare_runs.main([str(tmp_path / "a.json"), "--dataset", str(dataset_json), "--query-set", "val-natural",
                           "--out", str(tmp_path / "x")])
