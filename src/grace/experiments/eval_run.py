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
from grace.experiments.configs import EvalConfig
from grace.experiments.m2kr_eval import run_m2kr_eval
from grace.experiments.report import write_results
from grace.experiments.retrievers import load_for_eval
from grace.io_utils import read_json, seed_everything
from grace.run_layout import retriever_name

log = logging.getLogger(__name__)


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


def run_eval(config: EvalConfig) -> dict[str, dict]:
    """Load every retriever (+ the random baseline), evaluate, write artefacts on rank 0."""
    import torch.distributed as dist

    from grace.distributed import close_distributed, init_distributed

    owns_group = not (dist.is_available() and dist.is_initialized())
    rank, world = init_distributed()
    results = _run_eval(config, world, rank)
    if owns_group:  # not in a `finally` (see close_distributed)
        close_distributed()
    return results


def _run_eval(config: EvalConfig, world: int, rank: int) -> dict[str, dict]:
    from grace.data_process.dataset import load_karpathy

    if config.m2kr:
        return run_m2kr_eval(config, rank)
    if config.checkpoints:
        from grace.experiments.eval_checkpoints import run_checkpoint_eval

        return run_checkpoint_eval(config, rank)
    seed_everything(config.seed)
    protocol = check_protocol(config.protocol, Path(config.dataset))
    dataset = load_karpathy(config.dataset, config.image_root, check_files=False)
    from grace.experiments.query_sets import load_natural_queries, split_queries

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
        name = retriever_name(spec)  # the names search and serve give (generative/<scheme> for a run's export)
        name = name if name not in retrievers else spec
        retrievers[name] = load_for_eval(spec, config)
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
    pseudo-queries record one (RUN/pseudo_queries/pseudo_queries.config.json) — the same one."""
    from grace.data_process.protocol import get_protocol
    from grace.data_process.pseudo_queries import config_path
    from grace.run_layout import RunLayout

    protocol = get_protocol(name).name
    made = config_path(RunLayout(dataset_json.parent.parent).pseudo_queries)
    if made.is_file():
        built = read_json(made).get("protocol")
        if built and built != protocol:
            raise GraceError(f"--protocol {protocol}, but the run's pseudo-queries were made under {built!r} ({made})")
    return protocol
