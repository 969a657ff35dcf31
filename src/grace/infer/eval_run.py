"""``grace eval``: score retrievers on a dataset split, single process or under torchrun.

``RUN/results/results.json`` holds one entry per retriever (the random baseline always included),
``table.md`` the Markdown table, ``recall.png`` the Recall@K bars and ``latency.png`` latency vs corpus
size (one point per evaluated corpus size, accumulated in ``history.json`` across runs).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from grace.errors import GraceError
from grace.infer.configs import EvalConfig
from grace.io_utils import read_json, save_config, seed_everything, write_json

log = logging.getLogger(__name__)


def _load(spec: str, config: EvalConfig):
    from grace.retriever import load_retriever

    kind = spec.partition(":")[0]
    kwargs: dict[str, Any] = {}
    if kind == "generative":
        kwargs = {"num_beams": config.num_beams, "length_penalty": config.length_penalty, "compile": config.compile,
                  "trust_remote_code": config.trust_remote_code}
    elif kind == "random":
        kwargs = {"split": config.split, "seed": config.seed}
    return load_retriever(spec, **kwargs)


def evaluate_retrievers(retrievers: dict[str, Any], queries: list[str], gold: list, config: EvalConfig,
                        corpus_size: int, extra: dict[str, dict] | None = None) -> dict[str, dict]:
    """Evaluate already-loaded retrievers (rank 0 writes the artefacts); returns the results."""
    from grace.infer.evaluate import evaluate

    results: dict[str, dict] = {}
    for name, retriever in retrievers.items():
        res = evaluate(retriever, queries, gold, tuple(config.ks), batch_size=config.batch_size, progress=config.progress)
        res["corpus_size"] = corpus_size
        res.update((extra or {}).get(name, {}))
        results[name] = res
        log.info("%s: %s", name, {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()})
    return results


def write_results(out: Path, results: dict[str, dict], config: Any, ks: list[int], title: str = "Retrieval results",
                  comparisons: dict | None = None,
                  notes: str = "Recall in % [95% bootstrap interval over gold images], latency in ms/query.",
                  provenance: dict | None = None) -> None:
    """results.json, table.md, recall.png, latency.png (+ history.json of latency vs corpus size); recalls
    with their intervals when the results carry them, and the paired comparisons when given; ``provenance``
    (protocol, query ids, commit) goes into results.json."""
    from grace.infer.report import (
        paired_markdown,
        plot_latency_vs_size,
        plot_recall_bars,
        recall_rows,
        write_table,
    )

    out.mkdir(parents=True, exist_ok=True)
    paired = paired_markdown(comparisons, ks, "other retriever")
    write_json(out / "results.json", {**results, **({"comparisons": comparisons} if paired else {}),
                                      **({"provenance": provenance} if provenance else {})})
    save_config(out, config)
    pseudo = [f"PR@{k}" for k in ks if any(f"pseudo_recall@{k}" in r for r in results.values())]
    columns = ["retriever"] + [f"R@{k}" for k in ks] + pseudo + ["latency_ms", "num_queries", "corpus_size"]
    if any("train_s" in r for r in results.values()):
        columns.append("train_s")
    write_table(out / "table.md", title, recall_rows(results, ks), columns,
                notes=notes, extra=paired)
    plot_recall_bars(results, ks, out / "recall.png", title=title)
    history_path = out / "history.json"
    history = read_json(history_path) if history_path.is_file() else {}
    for name, res in results.items():
        pts = {tuple(p) for p in history.get(name, [])}
        pts.add((res["corpus_size"], res["latency_ms"]))
        history[name] = sorted(pts)
    write_json(history_path, history)
    plot_latency_vs_size({k: [tuple(p) for p in v] for k, v in history.items()}, out / "latency.png")


def run_eval(config: EvalConfig) -> dict[str, dict]:
    """Load every retriever (+ the random baseline), evaluate, write artefacts on rank 0."""
    import torch.distributed as dist

    from grace.distributed import close_distributed
    from grace.infer.evaluate import init_distributed

    owns_group = not (dist.is_available() and dist.is_initialized())
    world, rank = init_distributed()
    results = _run_eval(config, world, rank)
    if owns_group:  # not in a `finally` (see close_distributed)
        close_distributed()
    return results


def _run_eval(config: EvalConfig, world: int, rank: int) -> dict[str, dict]:
    from grace.data_process.dataset import load_karpathy

    if config.m2kr:
        from grace.infer.m2kr_eval import run_m2kr_eval

        return run_m2kr_eval(config, rank)
    if config.checkpoints:
        from grace.infer.eval_checkpoints import run_checkpoint_eval

        return run_checkpoint_eval(config, rank)
    seed_everything(config.seed)
    protocol = check_protocol(config.protocol, Path(config.dataset))
    dataset = load_karpathy(config.dataset, config.image_root, check_files=False)
    from grace.infer.query_sets import load_natural_queries, split_queries

    chosen = load_natural_queries(config.queries_file, dataset) if config.queries_file else \
        split_queries(dataset, config.split)
    split, source = chosen.split, chosen.source
    queries, gold, ids = chosen.texts, chosen.gold, chosen.ids
    if config.max_queries:
        queries, gold, ids = queries[: config.max_queries], gold[: config.max_queries], ids[: config.max_queries]
    specs = list(config.retriever)
    if not any(s.startswith("random:") for s in specs):
        specs.append(f"random:{config.dataset}")
    config = dataclasses.replace(config, split=split)  # the corpus of the queries' split (random baseline, sizes)
    retrievers = {}
    for spec in specs:
        name = spec.partition(":")[0]
        name = name if name not in retrievers else spec
        retrievers[name] = _load(spec, config)
    results = evaluate_retrievers(retrievers, queries, gold, config, corpus_size=len(dataset.split(split)))
    for res in results.values():
        res["world_size"] = world
    if rank == 0:
        from grace.stats import summarise

        generative = [name for name in results if name.startswith("generative")]
        others = [name for name in results if name not in generative and not name.startswith("random")]
        comparisons = summarise(results, config.ks, candidates=generative, references=others, clusters=gold,
                                seed=config.seed)
        from grace.fallbacks import recorded_fallbacks
        from grace.provenance import git_state, query_provenance

        provenance = {"protocol": protocol, "queries": query_provenance(ids, gold, split, source),
                      "seeds": {"random": config.seed, "bootstrap": config.seed}, "git": git_state(),
                      "fallbacks": recorded_fallbacks()}
        write_results(Path(config.out), results, config, list(config.ks), comparisons=comparisons,
                      provenance=provenance)
    return results


def check_protocol(name: str, dataset_json: Path) -> str:
    """The protocol of an evaluation: a known name, and — when the dataset sits in a run folder whose
    pseudo-queries record one (RUN/data/pseudo_queries.config.json) — the same one."""
    from grace.data_process.protocol import get_protocol

    protocol = get_protocol(name).name
    made = dataset_json.parent / "pseudo_queries.config.json"
    if made.is_file():
        built = read_json(made).get("protocol")
        if built and built != protocol:
            raise GraceError(f"--protocol {protocol}, but the run's pseudo-queries were made under {built!r} ({made})")
    return protocol
