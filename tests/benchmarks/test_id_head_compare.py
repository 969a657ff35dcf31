"""benchmarks/id_head_compare.py: the two heads scored on the same val and test queries, timed in one run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import id_head_compare  # (benchmarks/ is a folder of scripts, not a package)


def _run(root: Path, dataset, head: str) -> Path:
    """A run folder as grace ablate lays it out: ids, the test and val tries, an export (untrained tiny model)."""
    from grace.identifiers import IdentifierMap, build_trie
    from grace.model import create_model, save_pretrained
    from grace.run_layout import RunLayout

    idmap = IdentifierMap("numeric", {r.image_id: " ".join(str(i)) for i, r in enumerate(dataset.images)},
                          {"tokenizer": "byte"})
    idmap.save(root / "ids" / "structured")
    tokenizer = idmap.tokenizer()
    for split in ("test", "val"):
        build_trie(idmap, tokenizer, [r.image_id for r in dataset.split(split)]).save(RunLayout(root).trie("structured", split))
    model = create_model("tiny", tokenizer=tokenizer, output_head=head, seed=0)
    save_pretrained(model, root / "ckpt" / "structured" / "export", tokenizer=tokenizer)
    return root


def test_both_heads_are_scored_on_the_same_queries_and_timed_together(tmp_path):
    from grace.data_process.synthetic import build_synthetic

    dataset = build_synthetic(tmp_path / "data", n_images=12, val_every=3)
    full, ids = _run(tmp_path / "full", dataset, "full"), _run(tmp_path / "ids", dataset, "ids")
    args = ["--full", str(full), "--ids", str(ids), "--dataset", str(tmp_path / "data" / "dataset.json"),
            "--num-beams", "3", "--batch-size", "2", "--out", str(tmp_path / "out")]
    report = id_head_compare.main(args)
    assert list(report["sets"]) == ["val", "test"]
    for res in report["sets"].values():
        full_row, ids_row = res["rows"]["full"], res["rows"]["ids"]
        assert full_row["num_queries"] == ids_row["num_queries"] == res["queries"]["count"] > 0
        assert res["qps_ratio"] == pytest.approx(ids_row["queries_per_s"] / full_row["queries_per_s"])
        paired = res["ids_vs_full"]["R@1"]
        assert paired["diff"] == pytest.approx(ids_row["recall@1"] - full_row["recall@1"])
        assert 0.0 <= res["top1_agreement"] <= 1.0
    assert "top-1 agreement" in (tmp_path / "out.md").read_text()
    with pytest.raises(SystemExit, match="output_head is ids, not full"):  # the runs given the wrong way round
        id_head_compare.main(["--full", str(ids), "--ids", str(full), *args[4:]])


def test_training_seeds_are_scored_per_head_beside_the_agreement_of_two_seeds_of_one_head(tmp_path):
    """--seeds: RUN/ckpt/<scheme>@seed<s> of both runs scored; a seed that is a copy of its run's own model agrees
    with it on every top-1, and the runs' protocol and seeds are copied from their tables."""
    import shutil

    from grace.data_process.synthetic import build_synthetic
    from grace.io_utils import write_json
    from grace.model import create_model, load_pretrained, save_pretrained

    dataset = build_synthetic(tmp_path / "data", n_images=12, val_every=3)
    runs = {head: _run(tmp_path / head, dataset, head) for head in ("full", "ids")}
    shutil.copytree(runs["ids"] / "ckpt" / "structured", runs["ids"] / "ckpt" / "structured@seed1")
    _, tokenizer = load_pretrained(runs["full"] / "ckpt" / "structured" / "export")
    other = create_model("tiny", tokenizer=tokenizer, output_head="full", seed=1)
    save_pretrained(other, runs["full"] / "ckpt" / "structured@seed1" / "export", tokenizer=tokenizer)
    for run in runs.values():
        write_json(run / "results" / "ablation.json", {"provenance": {
            "protocol": "image-only", "selected_on": "val", "seeds": {"training": [0, 1]}, "git": {"commit": "abc"}}})
    args = ["--full", str(runs["full"]), "--ids", str(runs["ids"]), "--dataset", str(tmp_path / "data" / "dataset.json"),
            "--num-beams", "3", "--batch-size", "2", "--seeds", "1", "--out", str(tmp_path / "out")]
    report = id_head_compare.main(args)
    for res in report["sets"].values():
        seeds = res["seeds"]
        assert seeds["seeds"] == [0, 1]
        assert seeds["top1_agreement"]["ids_vs_ids"] == {"0-1": 1.0}  # the copy answers exactly as its original
        ids_r1 = seeds["recall"]["ids"]["recall@1"]
        assert ids_r1["0"] == ids_r1["1"] == res["rows"]["ids"]["recall@1"]
        assert seeds["ids_vs_full"]["0"]["diff"] == pytest.approx(res["ids_vs_full"]["R@1"]["diff"])
        assert set(seeds["top1_agreement"]["ids_vs_full"]) == {"0", "1"}
    assert report["run_provenance"]["full"]["protocol"] == "image-only"
    text = (tmp_path / "out.md").read_text()
    assert "Training seeds 0, 1 of both heads" in text and "protocol `image-only`" in text
    write_json(runs["ids"] / "results" / "ablation.json", {"provenance": {"seeds": {"training": [5, 1]}}})
    with pytest.raises(SystemExit, match="different --seed"):
        id_head_compare.main(args)
