"""One plain ``python -m grace.cli train`` process (no torchrun: the trainer sets up a 1-process group),
computing i2id image features with the frozen encoder from the shards' image bytes (no features cache)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from train_helpers import build_tiny_run, subprocess_env


def test_single_process_with_frozen_encoder(tmp_path, shared_tiny_dataset):
    from grace.model.config import CONFIG_DIR

    values = build_tiny_run(tmp_path, shared_tiny_dataset)
    tiny = json.loads((CONFIG_DIR / "tiny.json").read_text())
    model_json = tmp_path / "tiny-effnet.json"  # tiny LM, 1280-d EfficientNet-Lite0 tokens, encoder outside
    model_json.write_text(json.dumps(dict(tiny, name="tiny-effnet", vis_dim=1280, n_visual_tokens=49,  # 7x7 tokens
                                          vision_encoder=None)))
    values.update(model=str(model_json), features_cache=None, image_encoder="efficientnet-lite0", steps=2,
                  batch_size_i2id=2, batch_size_t2id=1, export=False, i2id_views=3)  # views augmented on the fly
    (tmp_path / "cfg.json").write_text(json.dumps(values))
    proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--config", str(tmp_path / "cfg.json")],
                          env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["steps"] == [1, 2] and all(loss > 0 for loss in metrics["losses"])
    state = json.loads((tmp_path / "out" / "checkpoints" / "step00000002" / "trainer_state_rank0.json").read_text())
    assert state["world_size"] == 1 and state["micro_step"] == 2
    assert not (tmp_path / "out" / "export").exists()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["i2id_views"] == 3


def test_one_process_zero_stage_0_and_3_give_the_same_loss_curve(tmp_path, shared_tiny_dataset):
    """Stage 0 (the 1-process default: no partitioning) trains exactly as stage 3 does."""
    values = build_tiny_run(tmp_path, shared_tiny_dataset)
    curves = {}
    for stage in (0, 3):
        run = dict(values, output_dir=str(tmp_path / f"zero{stage}"), zero_stage=stage, steps=5)
        (tmp_path / f"zero{stage}.json").write_text(json.dumps(run))
        proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--config", str(tmp_path / f"zero{stage}.json")],
                              env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        curves[stage] = json.loads((tmp_path / f"zero{stage}" / "metrics.json").read_text())["losses"]
    assert len(curves[0]) == 5 and curves[0][-1] < curves[0][0]
    assert curves[0] == pytest.approx(curves[3], abs=1e-5)
    assert not list((tmp_path / "zero0" / "checkpoints").glob("*/zero_pp_rank_*"))  # nothing partitioned
    from safetensors.torch import load_file

    exports = [load_file(str(tmp_path / f"zero{stage}" / "export" / "model.safetensors")) for stage in (0, 3)]
    assert exports[0].keys() == exports[1].keys()  # stage 3: built under zero.Init, gathered module by module
    for name, tensor in exports[0].items():
        torch.testing.assert_close(exports[1][name], tensor, atol=1e-5, rtol=1e-4, msg=name)



def test_identifier_head_run_trains_exports_the_head_and_retrieves(tmp_path, shared_tiny_dataset):
    """``output_head ids`` through ``grace train`` (ZeRO stage 3, one process): the loss falls, the export records
    the head and its tokens (the digits and the end-of-chunk), and the retriever decodes with it."""
    from train_helpers import train_tokenizer

    from grace.infer.retriever import GenerativeRetriever
    from grace.retriever import Query

    values = build_tiny_run(tmp_path, shared_tiny_dataset)
    values.update(output_head="ids", zero_stage=3, steps=8)
    (tmp_path / "cfg.json").write_text(json.dumps(values))
    proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--config", str(tmp_path / "cfg.json")],
                          env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = json.loads((tmp_path / "out" / "metrics.json").read_text())["losses"]
    assert losses[-1] < losses[0]
    exported = json.loads((tmp_path / "out" / "export" / "config.json").read_text())
    exported = exported.get("model", exported)
    assert exported["output_head"] == "ids"
    assert exported["identifier_token_ids"] == train_tokenizer(values).identifier_token_ids()
    retriever = GenerativeRetriever.load(tmp_path / "out" / "export", ids=tmp_path / "ids", trie=tmp_path / "trie",
                                         device="cpu", num_beams=4)
    assert retriever.model.identifier_head is not None
    hits = retriever.search([Query(text="a red heart")], k=4)[0]
    known = {r.image_id for r in shared_tiny_dataset.images}
    assert len(hits) == 4 and {h.image_id for h in hits} <= known


def test_lora_run_trains_only_adapters_and_exports_a_mergeable_model(tmp_path, shared_tiny_dataset):
    """``lm_training: lora`` through ``grace train`` (DeepSpeed): loss falls, the LM's base weights are the
    initial ones, and the export reloads (adapters merged) to the logits of the unmerged adapters."""
    from train_helpers import reference_model, train_tokenizer

    from grace.model import load_pretrained
    from grace.model.config import CONFIG_DIR

    values = build_tiny_run(tmp_path, shared_tiny_dataset)
    tiny = json.loads((CONFIG_DIR / "tiny.json").read_text())
    model_json = tmp_path / "tiny-lora.json"
    model_json.write_text(json.dumps(dict(tiny, name="tiny-lora", lm_training="lora", lora_rank=4)))
    values.update(model=str(model_json), steps=6, lr=5e-3, output_dir=str(tmp_path / "lora"))
    (tmp_path / "cfg.json").write_text(json.dumps(values))
    proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--config", str(tmp_path / "cfg.json")],
                          env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = json.loads((tmp_path / "lora" / "metrics.json").read_text())["losses"]
    assert losses[-1] < losses[0]
    export = tmp_path / "lora" / "export"
    unmerged, _ = load_pretrained(export, merge_lora=False)
    merged, _ = load_pretrained(export)
    initial = reference_model(str(model_json), train_tokenizer(values))
    start = dict(initial.named_parameters())
    for name, param in unmerged.named_parameters():
        if "base_layer" in name:
            torch.testing.assert_close(param, start[name], msg=name)  # the LM's own weights never moved
    assert any(not torch.equal(p, start[n]) for n, p in unmerged.named_parameters() if "lora_B" in n)
    ids = torch.tensor([[5, 6, 7, 8]])
    feats = unmerged.null_vision_features(1)
    with torch.no_grad():
        torch.testing.assert_close(merged(lang_x=ids, vision_features=feats).logits,
                                   unmerged(lang_x=ids, vision_features=feats).logits, atol=1e-5, rtol=1e-4)


def test_init_from_an_export_starts_where_it_left_off(tmp_path, shared_tiny_dataset):
    """``--init-from EXPORT``: fresh optimiser and step 0, the export's weights (embedding rows by token)."""
    values = build_tiny_run(tmp_path, shared_tiny_dataset)
    losses = {}
    runs = {"first": {"steps": 6, "zero_stage": 0},
            "second": {"steps": 2, "zero_stage": 0, "export": False, "init_from": str(tmp_path / "first" / "export")}}
    for name, extra in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(dict(values, output_dir=str(tmp_path / name), **extra)))
        proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--config", str(tmp_path / f"{name}.json")],
                              env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses[name] = json.loads((tmp_path / name / "metrics.json").read_text())["losses"]
    report = json.loads((tmp_path / "second" / "init_from.json").read_text())
    assert report["kind"] == "export" and report["copied"] > 10 and report["rows_new"] == 0
    assert losses["second"][0] < 0.8 * losses["first"][0]  # not a fresh model
    assert losses["second"][0] == pytest.approx(losses["first"][-1], rel=0.5)


LONE_ALLREDUCE = """
import json, torch, deepspeed
from grace.train import engine as E
E.init_deepspeed("cpu")
out = {}
for skip in (False, True):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=0.1),
                                      config={"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 0}})
    if skip:
        E.skip_lone_allreduce(engine, 1)
    calls, real = [], engine.allreduce_gradients
    engine.allreduce_gradients = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        engine.backward(engine(x).pow(2).mean())
        engine.step()
    out[str(skip)] = {"allreduces": len(calls), "weight": model.weight.detach().flatten().tolist()}
print(json.dumps(out))
"""


def test_one_process_at_stage_0_skips_the_gradient_allreduce(tmp_path):
    """DeepSpeed all-reduces every gradient even over a 1-process group; skip_lone_allreduce turns that off
    there (the update stays the same) and nowhere else (stage 3, or more than one process)."""
    from types import SimpleNamespace

    from grace.train.engine import skip_lone_allreduce

    (tmp_path / "lone.py").write_text(LONE_ALLREDUCE)
    proc = subprocess.run([sys.executable, str(tmp_path / "lone.py")], env=subprocess_env(), capture_output=True,
                          text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs["False"]["allreduces"] == 2 and runs["True"]["allreduces"] == 0
    assert runs["True"]["weight"] == pytest.approx(runs["False"]["weight"], abs=1e-7)
    for stage, world in ((3, 1), (0, 2)):
        engine = SimpleNamespace(enable_backward_allreduce=True, zero_optimization_stage=lambda s=stage: s)
        skip_lone_allreduce(engine, world)
        assert engine.enable_backward_allreduce
