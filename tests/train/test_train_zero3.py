"""2-process DeepSpeed ZeRO-3 runs (gloo, CPU): loss falls, stop/resume is exact, export reloads identically.

Three torchrun launches in all, shared by the tests through one module-scoped fixture.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from train_helpers import (
    build_tiny_run,
    load_export,
    reference_model,
    subprocess_env,
    torchrun_cmd,
    torchrun_prefix,
    train_tokenizer,
)

STEPS, STOP = 6, 3


def _launch(cfg_path: Path, values: dict, *extra: str) -> subprocess.CompletedProcess:
    cfg_path.write_text(json.dumps(values))
    proc = subprocess.run(torchrun_cmd(2, cfg_path, *extra), env=subprocess_env(), capture_output=True, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


pytestmark = pytest.mark.multiproc


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_tiny_dataset):
    root = tmp_path_factory.mktemp("train")
    values = build_tiny_run(root, shared_tiny_dataset)
    full = dict(values, output_dir=str(root / "full"), checkpoint_every=STOP, steps=STEPS)
    _launch(root / "full.json", full)
    stopped = dict(full, output_dir=str(root / "resumed"))
    _launch(root / "stopped.json", stopped, "--stop-after", str(STOP))
    stopped_metrics = json.loads((root / "resumed" / "metrics.json").read_text())
    exported_early = (root / "resumed" / "export").exists()
    _launch(root / "resumed.json", stopped)  # resume=True by default: picks up checkpoints/latest
    return {"root": root, "values": values, "stopped_metrics": stopped_metrics, "exported_early": exported_early,
            "dataset": shared_tiny_dataset}


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_two_process_zero3_loss_falls(runs):
    full = runs["root"] / "full"
    losses = _metrics(full)["losses"]
    assert len(losses) == STEPS
    assert losses[-1] < losses[0] - 0.5, losses
    last = full / "checkpoints" / f"step{STEPS:08d}"
    # ZeRO-3 over two ranks: each rank wrote its own partition and trainer state
    assert {p.name for p in last.glob("trainer_state_rank*.json")} == {"trainer_state_rank0.json", "trainer_state_rank1.json"}
    assert len(list(last.glob("zero_pp_rank_*_optim_states.pt"))) == 2
    assert json.loads((full / "config.json").read_text())["steps"] == STEPS


def test_stop_and_resume_reaches_the_same_loss(runs):
    full = _metrics(runs["root"] / "full")
    assert runs["stopped_metrics"]["steps"] == list(range(1, STOP + 1))
    assert not runs["exported_early"], "a stopped run must not export"
    resumed = _metrics(runs["root"] / "resumed")
    assert resumed["steps"] == full["steps"]
    assert resumed["losses"] == pytest.approx(full["losses"], abs=1e-5)
    assert (runs["root"] / "resumed" / "export").is_dir()


def test_export_loads_without_deepspeed_with_engine_weights(runs, tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    values, spec = runs["values"], runs["values"]["model"]
    export = runs["root"] / "full" / "export"
    assert {"ids", "tokenizer", "train_config.json", "model.safetensors"} <= {p.name for p in export.iterdir()}
    assert (export / "trie").is_dir()
    model, exported_tok = load_export(export)
    tok = train_tokenizer(values)
    # the ONE tokenizer travels with the model, token ids unchanged
    assert exported_tok.encode_identifier("1 2") == tok.encode_identifier("1 2")
    assert exported_tok.image_token_id == tok.image_token_id
    # the engine's weights: consolidated from the per-rank ZeRO-3 partitions of the last checkpoint
    engine_state = get_fp32_state_dict_from_zero_checkpoint(str(runs["root"] / "full" / "checkpoints"),
                                                            tag=f"step{STEPS:08d}")
    reference, fresh = reference_model(spec, tok, engine_state), reference_model(spec, tok)
    lang_x = torch.tensor([[tok.image_token_id] + tok.encode_text("id") + tok.encode_identifier("1 2")])
    feats = torch.randn(1, 1, 1, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want, init = (m.eval()(lang_x=lang_x, vision_features=feats).logits for m in (model, reference, fresh))
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, init, atol=1e-3), "export must hold the trained, not the initial, weights"


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches(runs):
    """A real kill (SIGKILL to torchrun and its workers) after a checkpoint, then a plain re-run."""
    import psutil

    root = runs["root"]
    values = dict(runs["values"], output_dir=str(root / "killed"), checkpoint_every=1, steps=STEPS)
    cfg = root / "killed.json"
    cfg.write_text(json.dumps(values))
    proc = subprocess.Popen(torchrun_cmd(2, cfg), env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    latest = root / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() >= "step00000002":
            break
        time.sleep(0.05)
    workers = psutil.Process(proc.pid).children(recursive=True)  # torchrun gives workers their own sessions
    for victim in [psutil.Process(proc.pid), *workers]:
        victim.send_signal(signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(workers, timeout=30)
    assert latest.is_file() and not (root / "killed" / "export").exists()
    _launch(cfg, values)
    full = _metrics(root / "full")
    resumed = _metrics(root / "killed")
    assert resumed["steps"] == full["steps"]
    assert resumed["losses"][-1] == pytest.approx(full["losses"][-1], abs=1e-5)


BUILD_UNDER_ZERO3 = """
import json, sys
from grace.config import dataclass_from_dict
from grace.train import engine as E
from grace.train.config import TrainConfig
cfg = dataclass_from_dict(TrainConfig, json.loads(open(sys.argv[1]).read()))
rank, world, _ = E.init_deepspeed("cpu")
model, _ = E.create_model(cfg.model, E.load_tokenizer(cfg), E.deepspeed_config(cfg, "cpu", world), world)
params = list(model.parameters())
if rank == 0:
    print(json.dumps({"partitioned": E.partitioned(model), "held": sum(p.ds_tensor.numel() for p in params),
                      "local": sum(p.numel() for p in params), "full": sum(p.ds_numel for p in params)}))
from grace.distributed import close_distributed, exit_process
close_distributed()  # a gloo group left open can abort the rank at interpreter shutdown
exit_process(0)  # and so can a background thread still joinable then (the command line exits the same way)
"""


def test_two_process_stage_3_builds_the_model_already_partitioned(tmp_path, shared_tiny_dataset):
    """zero.Init: each rank holds only its partition of every parameter from the moment it is built."""
    values = dict(build_tiny_run(tmp_path, shared_tiny_dataset), zero_stage=3)
    (tmp_path / "cfg.json").write_text(json.dumps(values))
    (tmp_path / "build.py").write_text(BUILD_UNDER_ZERO3)
    proc = subprocess.run([*torchrun_prefix(2), str(tmp_path / "build.py"), str(tmp_path / "cfg.json")],
                          env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = json.loads(proc.stdout.strip().splitlines()[-1])
    assert built["partitioned"] and built["local"] == 0 and built["full"] > 10_000
    assert built["held"] <= 0.55 * built["full"]  # half of every tensor (rounded up), not all of it


@pytest.mark.slow
def test_checkpoint_sweep_gathers_two_ranks_partitions_and_ends_at_the_export(runs, tmp_path):
    """grace eval --checkpoints over a 2-process ZeRO-3 run: each step's two partition files consolidated; the
    last checkpoint ranks the test queries exactly as the export does."""
    import shutil

    from grace.data_process.dataset import save_karpathy
    from grace.experiments.configs import EvalConfig
    from grace.experiments.eval_run import run_eval
    from grace.experiments.query_sets import split_queries
    from grace.identifiers import IdentifierMap, build_trie
    from grace.infer.evaluate import evaluate
    from grace.infer.retriever import GenerativeRetriever
    from grace.run_layout import RunLayout

    dataset = runs["dataset"]
    run = tmp_path / "run"
    save_karpathy(dataset, run / "data" / "dataset.json")
    shutil.copytree(runs["root"] / "ids", run / "ids" / "numeric")
    idmap = IdentifierMap.load(run / "ids" / "numeric")
    for split in ("test", "val"):
        if dataset.split(split):
            build_trie(idmap, idmap.tokenizer(), [r.image_id for r in dataset.split(split)]).save(
                RunLayout(run).trie("numeric", split))
    (run / "ckpt").mkdir()
    (run / "ckpt" / "numeric").symlink_to(runs["root"] / "full", target_is_directory=True)
    last = runs["root"] / "full" / "checkpoints" / f"step{STEPS:08d}"
    assert len(list(last.glob("zero_pp_rank_*_mp_rank_00_model_states.pt"))) == 2  # two ranks' partitions

    report = run_eval(EvalConfig(checkpoints=run / "ckpt" / "numeric", out=tmp_path / "out", num_beams=4,
                                 progress=False))
    assert sorted({r["step"] for r in report["rows"]}) == [STOP, STEPS]
    retriever = GenerativeRetriever.load(run / "ckpt" / "numeric" / "export", ids=run / "ids" / "numeric",
                                         trie=RunLayout(run).trie("numeric", "test"), device="cpu", num_beams=4)
    test = split_queries(dataset, "test")
    exported = evaluate(retriever, test.texts, test.gold, progress=False)
    swept = next(r for r in report["rows"] if r["step"] == STEPS and r["set"] == "test")
    assert swept["gold_ranks"] == exported["gold_ranks"]
