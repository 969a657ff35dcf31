"""benchmarks/query_overlap.py: recall split by word overlap with the gold image's pseudo-queries."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import query_overlap  # (benchmarks/ is a folder of scripts, not a package)


def test_content_words_drop_stop_words_and_stem():
    assert query_overlap.content_words("Winking face with the Tongue", 4) == {"wink", "face", "tong"}
    assert query_overlap.content_words("winking face", 0) == {"winking", "face"}
    assert query_overlap.overlaps(["winking face", "red heart"], ["a", "b"],
                                  {"a": ["wink"], "b": ["love"]}, 4) == [True, False]


def test_recall_is_split_by_overlap(shared_tiny_dataset, tmp_path):
    from grace.experiments.query_sets import split_queries

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    test = split_queries(shared_tiny_dataset)
    queries, gold = test.texts, test.gold
    # the first gold image's pseudo-query repeats its query's first word; the others share nothing
    pseudo = {g: ["zzz"] for g in gold}
    pseudo[gold[0]] = [queries[0].split()[-1]]
    (tmp_path / "pq.json").write_text(json.dumps(pseudo))
    ranks = [1] + [5] * (len(queries) - 1)  # found first only where the words overlap
    results = {"structured": {"gold_ranks": ranks}, "clip_faiss": {"gold_ranks": [1] * len(queries)},
               "provenance": {"config": {"model": "tiny"}}}
    (tmp_path / "res.json").write_text(json.dumps(results))
    report = query_overlap.main([str(tmp_path / "res.json"), "--dataset", str(dataset_json), "--pseudo-queries",
                                 str(tmp_path / "pq.json"), "--out", str(tmp_path / "out")])
    assert report["tiny/structured"]["recall@1 shares a word"][0] == 1.0
    assert report["tiny/structured"]["recall@1 shares no word"][0] == 0.0
    assert report["tiny/structured"]["recall@10 shares no word"][0] == 1.0
    assert report["clip_faiss"]["recall@1 shares no word"][0] == 1.0
    assert "1 of 4 test queries share" in (tmp_path / "out.md").read_text()
    (tmp_path / "short.json").write_text(json.dumps({**results, "structured": {"gold_ranks": [1]}}))
    with pytest.raises(SystemExit, match="has 1 queries"):
        query_overlap.main([str(tmp_path / "short.json"), "--dataset", str(dataset_json), "--pseudo-queries",
                            str(tmp_path / "pq.json"), "--out", str(tmp_path / "out")])
