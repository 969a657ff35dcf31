"""``grace ablate``: every identifier scheme through ids → shards → trie → train → eval, one table.

The table (scheme × R@1/5/10 × train time × query latency, the random baseline as the last row) is
printed and written to RUN/results/ablation.{json,md,png}. Stages reuse what RUN/ already holds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from grace.errors import GraceError
from grace.infer import pipeline as P
from grace.infer.baseline_stages import stage_baseline
from grace.infer.configs import BASELINES, SCHEMES, AblateConfig
from grace.io_utils import save_config, seed_everything, write_json

KS = (1, 5, 10)


def run_scheme(run: Path, scheme: str, dataset, features, pseudo_queries, config: AblateConfig,
               timer: P.StageTimer) -> dict:
    """One scheme end to end; returns its eval metrics plus train/stage seconds."""
    overrides = json_options(config.train_overrides, "--train-overrides")
    if config.i2id_views != 1:
        overrides = {"i2id_views": config.i2id_views, **overrides}
    scheme_settings = json_options(config.scheme_overrides, "--scheme-overrides")
    idmap = P.stage_ids(run, scheme, dataset, features, timer, force=config.force, pseudo_queries=pseudo_queries,
                        **({"seed": config.seed, "tokenizer": config.tokenizer} | scheme_settings))
    tokenizer = P.load_tokenizer(run / "ids" / scheme)
    force = config.force or f"ids/{scheme}" not in timer.skipped  # new ids: nothing built on the old ones is kept
    P.stage_shards(run, scheme, dataset, idmap, pseudo_queries, timer, force=force)
    trie = P.stage_trie(run, scheme, dataset, idmap, tokenizer, timer, force=force)
    values = P.train_config_values(run, scheme, model=config.model, steps=config.steps, lr=config.lr,
                                   batch_size_i2id=config.batch_size_i2id, batch_size_t2id=config.batch_size_t2id,
                                   encoder=config.encoder, seed=config.seed, overrides=overrides)
    export = P.stage_train(run, scheme, values, timer, nproc=config.nproc, force=force)
    res = P.stage_eval(run, scheme, export, dataset, idmap, trie, tokenizer, timer, num_beams=config.num_beams,
                       max_queries=config.max_queries, seed=config.seed)
    res["train_s"] = stage_seconds(run, timer, f"train/{scheme}", scheme)
    return res


def json_options(text: str, option: str) -> dict:
    """A JSON-object option (``""`` = none); anything else is a one-line error naming the option."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise GraceError(f"{option} is not valid JSON ({err.msg} at character {err.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise GraceError(f"{option} must be a JSON object like '{{\"key\": value}}', got {text!r}")
    return value


def stage_seconds(run: Path, timer: P.StageTimer, stage: str, name: str) -> float:
    """Seconds a stage took: now, or (reused) as recorded in the previous ablation of this run."""
    if stage not in timer.skipped:
        return timer.seconds[stage]
    path = run / "results" / "ablation.json"
    if path.is_file():
        return float(json.loads(path.read_text()).get(name, {}).get("train_s", 0.0))
    return 0.0


def write_ablation(run: Path, results: dict[str, dict], config, gold: list[str] | None = None) -> str:
    """ablation.json / ablation.md / ablation.png; returns the Markdown tables.

    Every recall gets its 95% bootstrap interval (resampling gold images), and every generative scheme
    is compared, on the same queries, with the best baseline by R@1 (paired bootstrap + McNemar).
    """
    from grace.infer.report import markdown_table, paired_markdown, plot_recall_bars, recall_rows, write_table
    from grace.stats import summarise

    out = run / "results"
    schemes = [name for name in results if name in SCHEMES]
    baselines = [name for name in results if name in BASELINES]
    comparisons = summarise(results, KS, candidates=schemes, references=baselines, clusters=gold, seed=config.seed)
    write_json(out / "ablation.json", {**results, "comparisons": comparisons})
    save_config(out, config, name="ablation_config.json")
    columns = ["retriever"] + [f"R@{k}" for k in KS] + ["train_s", "latency_ms", "index_kB", "num_queries"]
    rows = recall_rows(results, KS)
    paired = paired_markdown(comparisons, KS, "baseline")
    write_table(out / "ablation.md", "Identifier ablation", rows, columns,
                notes="Recall in % on held-out test queries, [95% bootstrap interval over gold images]; "
                      "train_s = training wall time; latency in ms/query; index_kB = trie / index size.", extra=paired)
    plot_recall_bars(results, KS, out / "ablation.png", title="Identifier schemes: Recall@K (95% CI)")
    return markdown_table(rows, columns) + paired


def run_ablation(config: AblateConfig) -> dict[str, dict]:
    unknown = sorted(set(config.schemes) - set(SCHEMES))
    if unknown:
        raise GraceError(f"unknown identifier schemes {unknown}; known: {list(SCHEMES)}")
    baselines = [b for b in config.baselines if b != "none"]
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise GraceError(f"unknown baselines {unknown}; known: {list(BASELINES)}")
    seed_everything(config.seed)
    run = Path(config.run)
    timer = P.StageTimer()
    started = time.perf_counter()
    dataset = P.stage_dataset(run, timer, dataset=config.dataset, limit=config.limit, seed=config.seed,
                              benchmark=config.benchmark, image_root=config.image_root)
    features = P.stage_features(run, dataset, config.encoder, timer,
                                tokens=bool(config.schemes) and P.model_visual_tokens(config.model) > 1,
                                views=config.i2id_views if config.schemes else 1, seed=config.seed)
    pseudo_queries = P.stage_pseudo_queries(run, dataset, timer, json_options(config.pseudo_queries,
                                                                              "--pseudo-queries"))
    results = {scheme: run_scheme(run, scheme, dataset, features, pseudo_queries, config, timer)
               for scheme in config.schemes}
    dataset_json = run / "data" / "dataset.json"
    for kind in baselines:
        results[kind] = stage_baseline(run, kind, dataset_json, dataset, timer, encoder=config.encoder,
                                       seed=config.seed, max_queries=config.max_queries)
        results[kind]["train_s"] = stage_seconds(run, timer, f"build/{kind}", kind)  # training + indexing
    results["random"] = P.random_baseline(dataset, max_queries=config.max_queries, seed=config.seed)
    _, gold = P.test_split_queries(dataset, config.max_queries)
    tables = write_ablation(run, results, config, gold)
    print(tables, end="")
    print(f"stage seconds: { {k: round(v, 1) for k, v in timer.seconds.items()} }")
    if config.publish is not None:
        paths = publish(run, config, tables, time.perf_counter() - started, timer)
        print(f"published {', '.join(map(str, paths))}")
    return results


def machine_description() -> str:
    """One line: CPU cores and model, memory, accelerator, torch version (for published results)."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        mem = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}){mem}, {gpu}, torch {torch.__version__}, {platform.system()}"


def publish(run: Path, config: AblateConfig, tables: str, wall_s: float, timer: P.StageTimer) -> list[Path]:
    """Copy the ablation to ``config.publish/<benchmark>-<model>.{md,json,png}`` with its provenance."""
    import shlex
    import shutil
    import sys

    from grace.io_utils import atomic_write_text, read_json

    name = f"{_benchmark_name(config)}-{Path(config.model).stem}"
    out = Path(config.publish)
    out.mkdir(parents=True, exist_ok=True)
    args = shlex.join(sys.argv[1:])
    command = f"grace {args}" if Path(sys.argv[0]).name in ("grace", "cli.py", "__main__.py") \
        else shlex.join(sys.argv)
    provenance = {"command": command, "machine": machine_description(), "wall_s": round(wall_s, 1),
                  "date": time.strftime("%Y-%m-%d"), "stage_seconds": {k: round(v, 1) for k, v in timer.seconds.items()},
                  "reused_stages": sorted(timer.skipped), "config": read_json(run / "results" / "ablation_config.json")}
    previous = out / f"{name}.json"  # a re-run that reuses trained stages keeps the full run's wall time
    if timer.skipped and previous.is_file():
        old = read_json(previous).get("provenance", {})
        full = old.get("full_run_wall_s") or (old.get("wall_s") if not old.get("reused_stages") else None)
        if full:
            provenance["full_run_wall_s"], provenance["full_run_date"] = full, old.get("full_run_date", old.get("date"))
    record = {**read_json(run / "results" / "ablation.json"), "provenance": provenance}
    write_json(out / f"{name}.json", record)
    reused = f" (stages reused from an earlier run: {', '.join(sorted(timer.skipped))})" if timer.skipped else ""
    if "full_run_wall_s" in provenance:
        reused += (f"; the run that built them took {provenance['full_run_wall_s'] / 60:.1f} min "
                   f"({provenance['full_run_date']})")
    text = (f"# Identifier ablation: {_benchmark_name(config)}, model {Path(config.model).stem}\n\n{tables}\n"
            f"Recall in % on the held-out test queries with [95% bootstrap intervals over gold images]; latency in "
            f"ms/query; train_s = training (baselines: building) wall time; index_bytes in the JSON.\n\n"
            f"- command: `{command}`\n- machine: {provenance['machine']}\n"
            f"- wall time: {wall_s / 60:.1f} min{reused}\n- date: {provenance['date']}\n")
    atomic_write_text(out / f"{name}.md", text)
    shutil.copyfile(run / "results" / "ablation.png", out / f"{name}.png")
    return [out / f"{name}.{ext}" for ext in ("md", "json", "png")]


def _benchmark_name(config: AblateConfig) -> str:
    return Path(config.dataset).parent.name if config.dataset else config.benchmark
