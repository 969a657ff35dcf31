"""One plain ``python -m grace.cli train`` process (no torchrun: the trainer sets up a 1-process group),
computing i2id image features with the frozen encoder from the shards' image bytes (no features cache)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from train_helpers import build_tiny_run, subprocess_env


def test_single_process_with_frozen_encoder(tmp_path, shared_tiny_dataset):
    from grace.model.config import CONFIG_DIR

    values = build_tiny_run(tmp_path, shared_tiny_dataset)
    tiny = json.loads((CONFIG_DIR / "tiny.json").read_text())
    model_json = tmp_path / "tiny-effnet.json"  # tiny LM, 1280-d EfficientNet-Lite0 tokens, encoder outside
    model_json.write_text(json.dumps(dict(tiny, name="tiny-effnet", vis_dim=1280, n_visual_tokens=49,  # 7x7 tokens
                                          vision_encoder=None)))
    values.update(model=str(model_json), features_cache=None, image_encoder="efficientnet-lite0", steps=2,
                  batch_size_i2id=2, batch_size_t2id=1, export=False)
    (tmp_path / "cfg.json").write_text(json.dumps(values))
    proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--config", str(tmp_path / "cfg.json")],
                          env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["steps"] == [1, 2] and all(loss > 0 for loss in metrics["losses"])
    state = json.loads((tmp_path / "out" / "checkpoints" / "step00000002" / "trainer_state_rank0.json").read_text())
    assert state["world_size"] == 1 and state["micro_step"] == 2
    assert not (tmp_path / "out" / "export").exists()


def test_one_process_zero_stage_0_and_3_give_the_same_loss_curve(tmp_path, shared_tiny_dataset):
    """Stage 0 (the 1-process default: no partitioning) trains exactly as stage 3 does."""
    values = build_tiny_run(tmp_path, shared_tiny_dataset)
    curves = {}
    for stage in (0, 3):
        run = dict(values, output_dir=str(tmp_path / f"zero{stage}"), zero_stage=stage, steps=5, export=stage == 0)
        (tmp_path / f"zero{stage}.json").write_text(json.dumps(run))
        proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--config", str(tmp_path / f"zero{stage}.json")],
                              env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        curves[stage] = json.loads((tmp_path / f"zero{stage}" / "metrics.json").read_text())["losses"]
    assert len(curves[0]) == 5 and curves[0][-1] < curves[0][0]
    assert curves[0] == pytest.approx(curves[3], abs=1e-5)
    assert not list((tmp_path / "zero0" / "checkpoints").glob("*/zero_pp_rank_*"))  # nothing partitioned
    assert (tmp_path / "zero0" / "export" / "model.safetensors").is_file()
