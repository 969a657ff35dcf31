"""The streaming loader (data_loader=stream): GRACE batches from webdataset shards under a DataLoader,
memory bounded by the shuffle buffer (not the corpus), distinct streams per seed, and a training run."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from train_helpers import build_tiny_run, subprocess_env, train_tokenizer

from grace.model.prompt import IGNORE_INDEX
from grace.train.data import MixedBatches
from grace.train.stream import StreamingBatches


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_tiny_dataset):
    values = build_tiny_run(tmp_path_factory.mktemp("stream"), shared_tiny_dataset)
    return values, train_tokenizer(values)


def _write_t2id_shards(out: Path, shards: int, per_shard: int) -> Path:
    """``shards`` t2id tars of ``per_shard`` samples each (numeric ids, 200-character queries)."""
    import webdataset as wds

    out.mkdir(parents=True)
    for s in range(shards):
        with wds.TarWriter(str(out / f"t2id-{s:06d}.tar")) as sink:
            for i in range(per_shard):
                meta = {"image_id": f"img{s}_{i}", "identifier": f"{s % 10} {i % 10}", "task": "t2id",
                        "text": f"query {s} {i} " + "x" * 200, "split": "train"}
                sink.write({"__key__": f"{s}_{i}", "json": json.dumps(meta).encode()})
    return out


def _peak_bytes(make, steps: int) -> int:
    tracemalloc.start()
    source = make()
    for m in range(steps):
        source.batch(m)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_streaming_memory_does_not_grow_with_the_number_of_shards(tmp_path, tiny_run):
    _, tok = tiny_run
    few, many = _write_t2id_shards(tmp_path / "few", 2, 300), _write_t2id_shards(tmp_path / "many", 30, 300)
    kw = dict(batch_size_i2id=0, batch_size_t2id=8, seed=0, start_step=0, max_length=32, keep_images=False,
              num_workers=0, shuffle_buffer=50)
    stream_few = _peak_bytes(lambda: StreamingBatches(few, tok, **kw), 40)
    stream_many = _peak_bytes(lambda: StreamingBatches(many, tok, **kw), 40)
    assert stream_many < 1.3 * stream_few + 200_000, (stream_few, stream_many)
    indexed = dict(batch_size_i2id=0, batch_size_t2id=8, rank=0, world_size=1, seed=0, max_length=32, keep_images=False)
    indexed_few = _peak_bytes(lambda: MixedBatches(few, tok, **indexed), 40)
    indexed_many = _peak_bytes(lambda: MixedBatches(many, tok, **indexed), 40)
    assert indexed_many > 5 * indexed_few  # the measurement sees corpus-sized memory when there is some


def test_streaming_batches_are_grace_rows_from_both_tasks(tiny_run):
    values, tok = tiny_run
    data = StreamingBatches(Path(values["shards_dir"]), tok, batch_size_i2id=2, batch_size_t2id=3, seed=0, start_step=0,
                            max_length=64, keep_images=False, num_workers=1, shuffle_buffer=10)
    seen = set()
    for m in range(6):
        batch, rows = data.batch(m)
        assert batch["lang_x"].shape[0] == 5 and [s.task for s in rows] == ["i2id"] * 2 + ["t2id"] * 3  # row order
        i2id = rows[:2]
        assert (batch["labels"][:, -1] == tok.eoc_token_id).all()  # every target ends its row
        labelled = batch["labels"] != IGNORE_INDEX
        assert not (labelled & (batch["attention_mask"] == 0)).any()
        first = batch["attention_mask"].argmax(1)
        assert (batch["lang_x"][:2].gather(1, first[:2, None]) == tok.image_token_id).all()  # i2id rows first
        assert batch["position_ids"].gather(1, first[:, None]).eq(0).all()
        seen.update(s.image_id for s in i2id)
    assert len(seen) > 3  # shuffled, resampled shards: not one sample over and over
    with pytest.raises(ValueError, match="in order"):
        data.batch(9)
    other = StreamingBatches(Path(values["shards_dir"]), tok, batch_size_i2id=2, batch_size_t2id=3, seed=0, start_step=6,
                             max_length=64, keep_images=False, num_workers=0, shuffle_buffer=10)
    assert other.batch(6)[0]["lang_x"].shape[0] == 5  # a resumed run starts at its micro-step


def test_training_with_the_streaming_loader(tmp_path, tiny_run):
    values, _ = tiny_run
    run = dict(values, output_dir=str(tmp_path / "out"), steps=6, data_loader="stream", num_workers=1,
               shuffle_buffer=16, export=False)
    (tmp_path / "cfg.json").write_text(json.dumps(run))
    proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--config", str(tmp_path / "cfg.json")],
                          env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = json.loads((tmp_path / "out" / "metrics.json").read_text())["losses"]
    assert len(losses) == 6 and losses[-1] < losses[0]
