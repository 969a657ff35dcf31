"""Fast, in-process checks of the training pieces (no DeepSpeed engine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import build_tiny_run, subprocess_env, train_tokenizer

from grace.errors import GraceError, InputError
from grace.model.prompt import IGNORE_INDEX, training_sequence
from grace.train import TrainConfig
from grace.train.data import MixedBatches, SampleOrder, load_feature_cache
from grace.train.engine import deepspeed_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_tiny_dataset):
    values = build_tiny_run(tmp_path_factory.mktemp("units"), shared_tiny_dataset)
    return values, train_tokenizer(values)


def test_loss_masking_only_identifier_and_eoc_have_labels(tiny_run):
    _, tok = tiny_run
    ids, labels = training_sequence(tok, "4 2", "a red circle")
    target = tok.encode_identifier("4 2") + [tok.eoc_token_id]
    prompt = tok.encode_text("caption:a red circle") + [tok.image_token_id] + tok.encode_text("id")
    assert ids == prompt + target  # concatenated id lists, never a re-tokenised joined string
    assert [l for l in labels if l != IGNORE_INDEX] == target
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    i2id_ids, i2id_labels = training_sequence(tok, "4 2", "")
    assert i2id_ids[0] == tok.image_token_id and sum(l != IGNORE_INDEX for l in i2id_labels) == len(target)


def test_mixed_batches_masks_padding_and_orders_i2id_first(tiny_run, shared_tiny_dataset):
    values, tok = tiny_run
    data = MixedBatches(Path(values["shards_dir"]), tok, batch_size_i2id=2, batch_size_t2id=3, rank=0, world_size=1,
                        seed=0, max_length=64, keep_images=False)
    batch, rows = data.batch(0)
    assert batch["lang_x"].shape[0] == 5 and [s.task for s in rows] == ["i2id"] * 2 + ["t2id"] * 3  # row order
    labelled = batch["labels"] != IGNORE_INDEX
    assert not (labelled & (batch["attention_mask"] == 0)).any()
    eoc_rows = (batch["labels"] == tok.eoc_token_id).sum(1)
    assert eoc_rows.tolist() == [1] * 5
    first = batch["attention_mask"].argmax(1)  # left padding: the first real token of each row
    assert (batch["lang_x"][:2].gather(1, first[:2, None]) == tok.image_token_id).all()  # i2id rows start with <image>
    assert (batch["labels"][:, -1] == tok.eoc_token_id).all()  # every target ends its row
    assert batch["position_ids"].gather(1, first[:, None]).eq(0).all()
    ids, array = load_feature_cache(Path(values["features_cache"]))
    assert ids == [r.image_id for r in shared_tiny_dataset.images] and array.shape[0] == len(ids)


def test_sample_order_is_disjoint_across_ranks_and_fast_forwards():
    orders = [SampleOrder(10, 2, rank=r, world_size=2, seed=3, stream=0) for r in range(2)]
    epoch = sorted(i for m in range(2) for o in orders for i in o.indices(m)) + orders[0].indices(2)
    assert sorted(epoch[:8] + orders[1].indices(2)) == list(range(10))  # one epoch = every sample once
    fresh = SampleOrder(10, 2, rank=1, world_size=2, seed=3, stream=0)
    assert fresh.indices(7) == orders[1].indices(7)  # a resumed run jumps straight to its position
    assert SampleOrder(10, 2, rank=1, world_size=2, seed=4, stream=0).indices(0) != orders[1].indices(0) or \
        SampleOrder(10, 2, rank=1, world_size=2, seed=4, stream=0).indices(1) != orders[1].indices(1)


def test_deepspeed_config_fills_auto_and_accepts_override(tmp_path):
    cfg = TrainConfig(shards_dir=tmp_path, batch_size_i2id=3, batch_size_t2id=5, grad_accum=2, lr=1e-3, steps=9,
                      warmup_steps=2)
    ds = deepspeed_config(cfg, "cpu", world_size=2)
    assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"]["stage"] == 3 and ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["scheduler"]["params"]["total_num_steps"] == 9 and not ds["bf16"]["enabled"]
    assert deepspeed_config(cfg, "cuda", world_size=2)["bf16"]["enabled"]
    override = tmp_path / "ds.json"
    override.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 2},
                                    "optimizer": {"type": "SGD", "params": {"lr": "auto"}}}))
    cfg.deepspeed_config = override
    ds = deepspeed_config(cfg, "cpu", world_size=2)
    assert ds["zero_optimization"]["stage"] == 2 and ds["optimizer"]["params"]["lr"] == 1e-3


def test_zero_stage_is_3_across_processes_and_0_for_one_unless_set(tmp_path):
    cfg = TrainConfig(shards_dir=tmp_path)
    assert deepspeed_config(cfg, "cpu", world_size=1)["zero_optimization"]["stage"] == 0
    one = deepspeed_config(cfg, "cpu", world_size=1)["zero_optimization"]
    assert not any(k.startswith("stage3_") for k in one)  # stage-3 keys dropped below stage 3
    assert deepspeed_config(cfg, "cuda", world_size=8)["zero_optimization"]["stage"] == 3
    cfg.zero_stage = 3
    assert deepspeed_config(cfg, "cpu", world_size=1)["zero_optimization"]["stage"] == 3
    cfg.zero_stage = 1
    assert deepspeed_config(cfg, "cuda", world_size=8)["zero_optimization"]["stage"] == 1


def test_bad_configs_raise_one_line_errors(tmp_path):
    with pytest.raises(GraceError, match="shards_dir is required"):
        TrainConfig().validate()
    with pytest.raises(InputError, match="shards folder not found"):
        TrainConfig(shards_dir=tmp_path / "nope").validate()
    with pytest.raises(GraceError, match="steps must be >= 1"):
        TrainConfig(shards_dir=tmp_path, steps=0).validate()


def test_cli_missing_shards_dir_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--shards-dir", str(tmp_path / "missing"),
                           "--output-dir", str(tmp_path / "out")], env=subprocess_env(), capture_output=True, check=False,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("grace: error:") and "shards folder not found" in lines[-1]
    assert "Traceback" not in proc.stderr
