"""benchmarks/beam_sweep.py: every beam count scored on val and test; at b beams only b candidates count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import beam_sweep  # (benchmarks/ is a folder of scripts, not a package)
from test_id_head_compare import _run  # a run folder as grace ablate lays it out (tiny untrained model)


def test_beam_sweep_scores_each_beam_count_on_val_and_test(tmp_path, monkeypatch):
    """Both sets from one load of the model; the run's own provenance is copied into the report and its footer."""
    import grace.model.factory as factory
    from grace.data_process.dataset import save_karpathy
    from grace.data_process.synthetic import build_synthetic
    from grace.io_utils import write_json

    dataset = build_synthetic(tmp_path / "data", n_images=12, val_every=3)
    run = _run(tmp_path / "run", dataset, "full")
    save_karpathy(dataset, run / "data" / "dataset.json")
    write_json(run / "results" / "ablation.json", {"provenance": {
        "protocol": "image-only", "selected_on": "val", "seeds": {"training": [0]}, "git": {"commit": "abc123"},
        "pseudo_queries": {"generator": "knn-captions", "digest": "d1g3st", "splits": {}}}})
    loads = []
    real_load = factory.load_pretrained
    monkeypatch.setattr(factory, "load_pretrained", lambda *a, **kw: loads.append(a) or real_load(*a, **kw))
    report = beam_sweep.main(["--run", str(run), "--beams", "1", "3", "--batch-size", "2",
                              "--out", str(tmp_path / "sweep")])
    for res in report["sets"].values():
        one, three = res["beams"]["1"]["generative"], res["beams"]["3"]["generative"]
        assert one["recall@10"] == one["recall@1"]  # one beam: one candidate
        assert three["recall@10"] >= one["recall@10"] and three["num_queries"] == res["queries"]["count"]
        assert one["latency_ms"] > 0 and "gold_ranks" not in one
    assert set(report["sets"]) == {"val", "test"}
    assert (tmp_path / "sweep.png").stat().st_size > 0 and "(best on val)" in (tmp_path / "sweep.md").read_text()
    assert json.loads((tmp_path / "sweep.json").read_text())["beams"] == [1, 3]
    assert len(loads) == 1  # one model for both query sets
    assert report["run_provenance"] == {"protocol": "image-only", "selected_on": "val", "seeds": {"training": [0]},
                                        "git": {"commit": "abc123"},
                                        "pseudo_queries": {"generator": "knn-captions", "digest": "d1g3st"}}
    text = (tmp_path / "sweep.md").read_text()
    assert "protocol `image-only`" in text and "digest d1g3st" in text and "trained at abc123" in text
    assert "benchmarks/beam_sweep.py --run " in report["command"] and "- commit: " in text


def test_beam_sweep_refuses_a_hybrid_built_on_another_row(tmp_path):
    from grace.data_process.dataset import save_karpathy
    from grace.data_process.synthetic import build_synthetic
    from grace.io_utils import write_json

    dataset = build_synthetic(tmp_path / "data", n_images=12, val_every=3)
    run = _run(tmp_path / "run", dataset, "full")
    save_karpathy(dataset, run / "data" / "dataset.json")
    for name in ("hybrid.json", "hybrid-val.json"):
        write_json(run / "hybrid" / "x" / name, {"first": "generative:/elsewhere/export", "second": "random:x"})
    with pytest.raises(SystemExit, match="not the structured row"):
        beam_sweep.main(["--run", str(run), "--hybrid", "x", "--beams", "1", "--out", str(tmp_path / "sweep")])
