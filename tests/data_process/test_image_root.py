"""Flickr30K / COCO from the command line: a Karpathy JSON written as the released files are (no image_id,
``imgid``/``sentids``, ``restval``, COCO's ``filepath``), its images in a folder elsewhere (``--image-root``);
``grace data check`` names the missing and corrupt images; every stage takes ``--image-root``; ``grace
ablate`` keeps a resolved copy of the dataset in the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from grace.data_process.dataset import load_karpathy
from grace.errors import InputError

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 40)}


def _write_karpathy(tmp_path: Path, *, coco: bool = False) -> tuple[Path, Path]:
    """dataset_flickr30k.json (or dataset_coco.json) in tmp/annotations, images in tmp/images-elsewhere."""
    root = tmp_path / "images-elsewhere"
    entries = []
    splits = ["train", "restval", "val", "test"]
    for i, (name, rgb) in enumerate(COLOURS.items()):
        filename = f"{1000092795 + i}.jpg" if not coco else f"COCO_val2014_{i:012d}.jpg"
        folder = root / ("val2014" if coco else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), rgb).save(folder / filename)
        entry = {"filename": filename, "imgid": i, "split": splits[i],
                 "sentids": [2 * i, 2 * i + 1],
                 "sentences": [{"tokens": ["a", name, "square"], "raw": f"A {name} square.", "imgid": i,
                                "sentid": 2 * i},
                               {"tokens": ["plain", name], "raw": f"Plain {name}", "imgid": i, "sentid": 2 * i + 1}]}
        if coco:
            entry.update(filepath="val2014", cocoid=391895 + i)
        entries.append(entry)
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    json_path = annotations / ("dataset_coco.json" if coco else "dataset_flickr30k.json")
    json_path.write_text(json.dumps({"images": entries, "dataset": "coco" if coco else "flickr30k"}))
    return json_path, root


@pytest.mark.parametrize("coco", [False, True])
def test_image_root_resolves_the_released_layout(tmp_path, coco):
    json_path, root = _write_karpathy(tmp_path, coco=coco)
    with pytest.raises(InputError, match="image file not found"):
        load_karpathy(json_path)  # the images are not beside the JSON
    dataset = load_karpathy(json_path, root)
    assert len(dataset) == 4 and all(r.path.is_file() for r in dataset.images)
    assert dataset.image_ids()[0] == ("391895" if coco else "1000092795")
    assert len(dataset.split("train")) == 2  # restval trains


def test_data_check_names_missing_and_corrupt_images(tmp_path, capsys):
    from grace.cli import main

    json_path, root = _write_karpathy(tmp_path)
    args = ["data", "check", "--dataset", str(json_path), "--workers", "2"]
    assert main(args) == 1  # nothing found beside the JSON
    out = capsys.readouterr().out
    assert "missing 4" in out and "pass --image-root" in out
    assert main(args + ["--image-root", str(root)]) == 0
    assert "ok 4, missing 0, corrupt 0" in capsys.readouterr().out

    (root / "1000092796.jpg").unlink()
    jpeg = (root / "1000092797.jpg").read_bytes()
    (root / "1000092797.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated mid-scan
    (root / "1000092798.jpg").write_bytes(b"not an image")
    report_path = tmp_path / "report.json"
    assert main(args + ["--image-root", str(root), "--report", str(report_path)]) == 1
    out = capsys.readouterr().out
    assert "ok 1, missing 1, corrupt 2" in out and "1000092796 (entry 1)" in out
    report = json.loads(report_path.read_text())
    assert [p["image_id"] for p in report["missing"]] == ["1000092796"]
    assert {p["image_id"] for p in report["corrupt"]} == {"1000092797", "1000092798"}
    assert all(p["error"] for p in report["corrupt"])
    # without decoding, a truncated file passes (only existence is checked)
    assert main(args + ["--image-root", str(root), "--no-decode", "--report", str(report_path)]) == 1
    assert json.loads(report_path.read_text())["corrupt"] == []


def test_stage_commands_take_image_root(tmp_path, capsys):
    from grace.cli import main

    json_path, root = _write_karpathy(tmp_path)
    ids = tmp_path / "ids"
    assert main(["ids", "build", "--dataset", str(json_path), "--image-root", str(root), "--scheme", "numeric",
                 "--tokenizer", "byte", "--out", str(ids)]) == 0
    assert main(["shards", "build", "--dataset", str(json_path), "--ids", str(ids), "--out", str(tmp_path / "shards")]) == 2
    assert main(["shards", "build", "--dataset", str(json_path), "--image-root", str(root), "--ids", str(ids),
                 "--out", str(tmp_path / "shards")]) == 0
    assert "i2id 4 samples" in capsys.readouterr().out


def test_ablate_keeps_a_resolved_copy_of_the_dataset(tmp_path):
    from grace.experiments.pipeline import stage_dataset
    from grace.experiments.stage import RunContext

    json_path, root = _write_karpathy(tmp_path, coco=True)
    run = tmp_path / "run"
    ctx = RunContext(run)
    timer = ctx.timer
    dataset = stage_dataset(ctx, dataset=json_path, image_root=root)
    copy = run / "data" / "dataset.json"
    assert copy.is_file() and "data" not in timer.skipped
    reloaded = load_karpathy(copy)  # no image root needed any more
    assert [r.path for r in reloaded.images] == [r.path for r in dataset.images]
    assert all(r.path.is_absolute() and r.path.is_file() for r in reloaded.images)
    assert reloaded.images[0].meta["cocoid"] == 391895 and reloaded.split_counts() == dataset.split_counts()
    source = json.loads((run / "data" / "source.json").read_text())
    assert source == {"dataset": str(json_path.resolve()), "image_root": str(root.resolve())}
    stage_dataset(ctx, dataset=json_path, image_root=root)
    assert "data" in timer.skipped  # same source: reused
    moved = tmp_path / "moved"
    root.rename(moved)
    again = RunContext(run)
    assert stage_dataset(again, dataset=json_path, image_root=moved).images[0].path.is_relative_to(moved)
    assert "data" not in again.timer.skipped  # a new image root: copied again
