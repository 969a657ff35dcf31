"""CPU training benchmark: the same model, shards and batches under a plain torch loop, DeepSpeed ZeRO
stage 0 (with the full head and with the identifier head, ``output_head`` ids), and stage 3 with one and with
two processes; samples/s of each, timed in one run (variants run
one after another, never side by side: two torch processes on 2 cores slow each other 10x).

    python benchmarks/bench_train_cpu.py --run runs/emoji-quick --scheme structured --model tiny-effnet \\
        --steps 40 --batch-size-i2id 16 --batch-size-t2id 32 --out docs/results/train-cpu
    python benchmarks/bench_train_cpu.py --run runs/emoji-quick --model smollm2-effnet --steps 8 \\
        --batch-size-i2id 4 --batch-size-t2id 4 --out docs/results/train-cpu-smollm2

``--run`` is a ``grace ablate`` run folder (its shards/, ids/, features/ are reused). Each variant is a
separate process; seconds/step leave out the first step. The plain loop uses the same model factory,
batches, null image, loss, AdamW, learning-rate schedule (DeepSpeed's WarmupDecayLR class, stepped by hand)
and gradient clipping as ``grace train``, without the DeepSpeed engine: its loss curve is ``grace train``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# name: (processes, ZeRO stage or None for the plain loop, output head)
VARIANTS = {"plain": (1, None, "full"), "zero0": (1, 0, "full"), "zero0-ids": (1, 0, "ids"), "zero3": (1, 3, "full"),
            "zero3-2proc": (2, 3, "full")}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="grace ablate run folder (shards, ids, features)")
    p.add_argument("--scheme", default="structured")
    p.add_argument("--model", default="tiny-effnet")
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size-i2id", type=int, default=16)
    p.add_argument("--batch-size-t2id", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--repeats", type=int, default=1,
                   help="run the variants this many times, interleaved (a, b, a, b, ...); report the median and range")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # internal: run one variant
    p.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _train_values(args: argparse.Namespace, out: Path, zero_stage: int, output_head: str = "full") -> dict:
    from grace.experiments.ablate import train_config
    from grace.experiments.configs import AblateConfig
    from grace.experiments.settings import ablation_settings
    from grace.experiments.stage import RunContext

    overrides = {"max_length": args.max_length, "warmup_steps": 5, "export": "false", "resume": "false",
                 "zero_stage": zero_stage, "log_every": args.steps, "output_head": output_head}
    training = ablation_settings(AblateConfig(
        run=args.run, model=args.model, steps=args.steps, lr=args.lr, batch_size_i2id=args.batch_size_i2id,
        batch_size_t2id=args.batch_size_t2id, train_overrides=[f"{k}={v}" for k, v in overrides.items()])).training
    values = train_config(RunContext(args.run), args.scheme, training, encoder=args.encoder, seed=0)
    values["output_dir"] = str(out)
    return values


def plain_loop(args: argparse.Namespace, out: Path) -> dict:
    """The reference: grace.train's pieces in a plain torch loop (no DeepSpeed, no process group)."""
    import torch
    from deepspeed.runtime.lr_schedules import WarmupDecayLR

    from grace.config import dataclass_from_dict
    from grace.io_utils import seed_everything
    from grace.train import TrainConfig
    from grace.train import engine as E
    from grace.train.data import VisionSource
    from grace.train.trainer import training_batches, vision_batch

    cfg = dataclass_from_dict(TrainConfig, _train_values(args, out, 0))
    seed_everything(cfg.seed)
    tokenizer = E.load_tokenizer(cfg)
    model, _ = E.create_model(cfg.model, tokenizer, with_encoder=False)  # features cache: no encoder
    vision = VisionSource(features_cache=cfg.features_cache, n_visual_tokens=model.config.n_visual_tokens)
    data = training_batches(cfg, tokenizer, rank=0, world=1, micro_step=0, keep_images=False)
    params = E.trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    ds_config = E.deepspeed_config(cfg, "cpu")  # grace train's schedule and clipping, without its engine
    schedule = WarmupDecayLR(optimizer, **ds_config["scheduler"]["params"])
    model.train()
    times, losses = [], []
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        batch, i2id = data.batch(step)
        feats = vision_batch(model, vision, i2id, batch["lang_x"].shape[0], "cpu", torch.float32)
        output = model(lang_x=batch["lang_x"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"], vision_features=feats, labels=batch["labels"])
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, ds_config["gradient_clipping"])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(output.loss.detach())
        times.append(time.perf_counter() - t0)
    timed = times[1:] or times
    return {"seconds_per_step": sum(timed) / len(timed), "losses": [float(x) for x in losses]}


def deepspeed_run(args: argparse.Namespace, out: Path, nproc: int, stage: int, output_head: str) -> dict:
    """``grace train`` (1 process, or torchrun with ``nproc``) at ZeRO ``stage``; reads its metrics.json."""
    config = out.with_suffix(".json")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(_train_values(args, out, stage, output_head)))
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // nproc)))
    cmd = [sys.executable, "-m", "grace.cli", "train", "--config", str(config)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), *cmd[1:]]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"seconds_per_step": metrics["seconds_per_step_last_run"], "losses": metrics["losses"]}


def run_variant(args: argparse.Namespace) -> dict:
    nproc, stage, output_head = VARIANTS[args.variant]
    out = args.workdir / args.variant
    if args.variant == "plain":
        return plain_loop(args, out)
    return deepspeed_run(args, out, nproc, stage, output_head)


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    if args.variant:  # child process: one variant, result as the last stdout line
        print(json.dumps(run_variant(args)))
        return {}
    import tempfile

    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    samples = args.batch_size_i2id + args.batch_size_t2id
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for repeat in range(args.repeats):
            for name in args.variants:
                child = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--variant", name,
                         "--workdir", str(Path(tmp) / f"r{repeat}")]
                proc = subprocess.run(child, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"variant {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                entry = results.setdefault(name, {"runs_seconds_per_step": [], "losses": res["losses"]})
                entry["runs_seconds_per_step"].append(res["seconds_per_step"])
                print(f"{name} (run {repeat + 1}/{args.repeats}): {res['seconds_per_step']:.3f} s/step, "
                      f"loss {res['losses'][0]:.4f} -> {res['losses'][-1]:.4f}", flush=True)
    for name, entry in results.items():
        entry["seconds_per_step"] = statistics.median(entry["runs_seconds_per_step"])
        entry["samples_per_s"] = samples * VARIANTS[name][0] / entry["seconds_per_step"]
    report = {"model": args.model, "steps": args.steps, "batch": [args.batch_size_i2id, args.batch_size_t2id],
              "repeats": args.repeats, "variants": results}
    if "plain" in results and "zero0" in results:
        report["zero0_over_plain_time"] = results["zero0"]["seconds_per_step"] / results["plain"]["seconds_per_step"]
    if "zero0-ids" in results and "zero0" in results:  # the identifier head's training speed-up (same engine)
        report["id_head_speedup"] = results["zero0"]["seconds_per_step"] / results["zero0-ids"]["seconds_per_step"]
    if "zero3" in results and "zero0" in results:
        report["zero3_over_zero0_time"] = results["zero3"]["seconds_per_step"] / results["zero0"]["seconds_per_step"]
    if args.out:
        _write(args, report)
    print(json.dumps({k: v for k, v in report.items() if k != "variants"}, indent=1))
    return report


def _write(args: argparse.Namespace, report: dict) -> None:
    from grace.io_utils import atomic_write_text, write_json
    from grace.provenance import provenance_lines, script_provenance

    report.update(script_provenance(__file__))
    write_json(args.out.with_suffix(".json"), report)
    lines = [(f"# Training speed, {args.model}, {args.batch_size_i2id} i2id + {args.batch_size_t2id} t2id per "
              f"process and step, {args.steps} steps\n"),
             "| variant | processes | ZeRO stage | output head | s/step (median) | s/step range | samples/s | first loss "
             "| last loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, res in report["variants"].items():
        nproc, stage, head = VARIANTS[name]
        runs = res["runs_seconds_per_step"]
        lines.append(f"| {name} | {nproc} | {'-' if stage is None else stage} | {head} | {res['seconds_per_step']:.3f} | "
                     f"{min(runs):.3f}-{max(runs):.3f} | {res['samples_per_s']:.1f} | {res['losses'][0]:.4f} | "
                     f"{res['losses'][-1]:.4f} |")
    ratios = [(k, report[k]) for k in ("zero0_over_plain_time", "zero3_over_zero0_time", "id_head_speedup")
              if k in report]
    lines += ["", *provenance_lines(report),
              (f"- s/step leaves out the first step; variants ran one after another in one invocation, "
               f"{report['repeats']} time(s) interleaved (median and range over those runs)."),
              *[f"- {k.replace('_', ' ')} (medians): {v:.3f}" for k, v in ratios]]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
