"""Every fallback is recorded (and logged once): compile → eager, bf16 → fp32 on a CPU, PLAID → exact, auto → CPU;
training writes its fallbacks into metrics.json and the ablation's provenance gathers them, labelled."""

from __future__ import annotations

import json

import pytest

from grace.fallbacks import clear_fallbacks, record_fallback, recorded_fallbacks


@pytest.fixture(autouse=True)
def fresh():
    clear_fallbacks()
    yield
    clear_fallbacks()


def test_fallback_is_recorded_and_logged_once(caplog):
    with caplog.at_level("WARNING", logger="grace.fallbacks"):
        for _ in range(3):
            record_fallback("decode step", "compiled", "eager", "no GPU")
    assert recorded_fallbacks() == [{"what": "decode step", "wanted": "compiled", "used": "eager", "reason": "no GPU"}]
    assert caplog.text.count("decode step ran as eager, not compiled") == 1


def test_fallback_compile_on_cpu_and_auto_device(tmp_path):
    import torch

    from grace.infer.beam_search import compile_for_decoding, runs_compiled
    from grace.retrieval_baselines.clip_faiss.dual_encoder import resolve_device

    model = torch.nn.Linear(2, 2)
    assert compile_for_decoding(model, "cpu") is model and not runs_compiled(model)
    device = resolve_device("auto")
    used = {(f["what"], f["used"]) for f in recorded_fallbacks()}
    assert ("decode step", "eager") in used
    assert (("dense encoder device", "cpu") in used) == (device == "cpu")


def test_fallback_bf16_on_cpu_reaches_the_training_metrics(tmp_path):
    from grace.train import TrainConfig
    from grace.train.engine import deepspeed_config, write_metrics

    override = tmp_path / "ds.json"
    override.write_text(json.dumps({"bf16": {"enabled": True}}))
    deepspeed_config(TrainConfig(shards_dir=tmp_path, deepspeed_config=override), "cpu")
    write_metrics(tmp_path / "metrics.json", [1.0], [1], 0.1)
    saved = json.loads((tmp_path / "metrics.json").read_text())["fallbacks"]
    assert [(f["what"], f["wanted"], f["used"]) for f in saved] == [("training precision", "bf16", "fp32")]


def test_fallbacks_of_evaluation_and_of_each_training_reach_the_ablation_provenance(tmp_path):
    from grace.experiments.ablation_report import run_fallbacks
    from grace.experiments.configs import AblateConfig

    record_fallback("late-interaction search", "plaid", "exact", "no PLAID index")
    metrics = tmp_path / "ckpt" / "structured" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"steps": [1], "losses": [1.0], "fallbacks": [
        {"what": "training precision", "wanted": "bf16", "used": "fp32", "reason": "cpu"}]}))
    found = run_fallbacks(AblateConfig(run=tmp_path))
    assert [(f["where"], f["used"]) for f in found] == [("evaluation", "exact"), ("train/structured", "fp32")]
