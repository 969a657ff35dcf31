"""``grace ablate``: every identifier scheme through ids → shards → trie → train → eval, one table.

The table (scheme × R@1/5/10 × train time × query latency, the random baseline as the last row) is
printed and written to RUN/results/ablation.{json,md,png}. Stages reuse what RUN/ already holds.
"""

from __future__ import annotations

import json
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
    overrides = json.loads(config.train_overrides) if config.train_overrides else {}
    idmap = P.stage_ids(run, scheme, dataset, features, timer, force=config.force, seed=config.seed,
                        tokenizer=config.tokenizer)
    tokenizer = P.load_tokenizer(run / "ids" / scheme)
    P.stage_shards(run, scheme, dataset, idmap, pseudo_queries, timer, force=config.force)
    trie = P.stage_trie(run, scheme, dataset, idmap, tokenizer, timer, force=config.force)
    values = P.train_config_values(run, scheme, model=config.model, steps=config.steps, lr=config.lr,
                                   batch_size_i2id=config.batch_size_i2id, batch_size_t2id=config.batch_size_t2id,
                                   encoder=config.encoder, seed=config.seed, overrides=overrides)
    export = P.stage_train(run, scheme, values, timer, nproc=config.nproc, force=config.force)
    res = P.stage_eval(run, scheme, export, dataset, idmap, trie, tokenizer, timer, num_beams=config.num_beams,
                       max_queries=config.max_queries, seed=config.seed)
    train_key = f"train/{scheme}"
    res["train_s"] = timer.seconds[train_key] if train_key not in timer.skipped else _recorded_train_s(run, scheme)
    return res


def _recorded_train_s(run: Path, scheme: str) -> float:
    """Train time of a reused checkpoint, from the previous ablation record when there is one."""
    path = run / "results" / "ablation.json"
    if path.is_file():
        return float(json.loads(path.read_text()).get(scheme, {}).get("train_s", 0.0))
    return 0.0


def write_ablation(run: Path, results: dict[str, dict], config) -> str:
    """ablation.json / ablation.md / ablation.png; returns the Markdown table."""
    from grace.infer.report import markdown_table, plot_recall_bars, recall_rows, write_table

    out = run / "results"
    write_json(out / "ablation.json", results)
    save_config(out, config, name="ablation_config.json")
    columns = ["retriever"] + [f"R@{k}" for k in KS] + ["train_s", "latency_ms", "num_queries"]
    rows = recall_rows(results, KS)
    write_table(out / "ablation.md", "Identifier ablation", rows, columns,
                notes="Recall in % on held-out test queries; train_s = training wall time; latency in ms/query.")
    plot_recall_bars(results, KS, out / "ablation.png", title="Identifier schemes: Recall@K")
    return markdown_table(rows, columns)


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
    dataset = P.stage_dataset(run, timer, dataset=config.dataset, limit=config.limit, seed=config.seed)
    features = P.stage_features(run, dataset, config.encoder, timer)
    pseudo_queries = P.stage_pseudo_queries(run, dataset, timer)
    results = {scheme: run_scheme(run, scheme, dataset, features, pseudo_queries, config, timer)
               for scheme in config.schemes}
    dataset_json = Path(config.dataset) if config.dataset else run / "data" / "dataset.json"
    for kind in baselines:
        results[kind] = stage_baseline(run, kind, dataset_json, dataset, timer, encoder=config.encoder,
                                       seed=config.seed, max_queries=config.max_queries)
        results[kind]["train_s"] = timer.seconds.get(f"build/{kind}", 0.0)  # heads/model training + indexing
    results["random"] = P.random_baseline(dataset, max_queries=config.max_queries, seed=config.seed)
    print(write_ablation(run, results, config), end="")
    print(f"stage seconds: { {k: round(v, 1) for k, v in timer.seconds.items()} }")
    return results
