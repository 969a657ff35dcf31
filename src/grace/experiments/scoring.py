"""Scoring one table row on every query set, as a :class:`~grace.experiments.stage.Stage` (``eval/<row>``).

Every row of ``grace ablate`` — a generative scheme, a baseline, a control, a hybrid — is scored by
:func:`score_sets`: its folder RUN/evals/<row>/ holds one result per query set (``<set>.json``) and the record
they were scored from (the retriever's artefacts as inputs, each query set's digest and the scoring settings),
so an unchanged row is not re-scored; each result is also written where the report reads it
(``RunLayout.result``: RUN/results/[<set>/]<row>.json).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from grace.experiments.stage import RunContext, Stage
from grace.infer.evaluate import DEFAULT_KS, evaluate
from grace.io_utils import read_json, to_jsonable, write_json
from grace.retrieval_baselines.random import RandomRetriever
from grace.retriever import Retriever


def query_set_digest(query_set) -> str:
    """A fingerprint of a query set: its corpus split, texts, gold images and query ids."""
    payload = json.dumps(to_jsonable([query_set.split, query_set.texts, query_set.gold, query_set.ids]),
                         sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def score_sets(ctx: RunContext, row: str, sets: list, retriever_for: Callable[[str], Retriever], *,
               inputs: dict[str, Path], settings: dict | None = None,
               extra: Callable[[str, Retriever], dict] | None = None) -> dict[str, dict]:
    """Score ``row`` on every query set of ``sets`` → ``{set name: result}``: ``retriever_for(split)`` gives the
    retriever over that split's corpus (called once per split, only when the row is (re)scored); ``inputs`` are
    the stage folders or files it is built from and ``settings`` what else changes its scores (beams, ...);
    ``extra(split, retriever)`` adds fields to each result of that split (index size, corpus size, ...)."""
    wanted_sets = {s.name: {"split": s.split, "queries": query_set_digest(s)} for s in sets}

    def build(folder: Path) -> dict[str, dict]:
        folder.mkdir(parents=True, exist_ok=True)
        scored = {}
        for split in dict.fromkeys(s.split for s in sets):
            retriever = retriever_for(split)
            added = extra(split, retriever) if extra else {}
            for query_set in (s for s in sets if s.split == split):
                result = evaluate(retriever, query_set.texts, query_set.gold)
                result["retriever"] = retriever.name  # what actually ran, e.g. late_interaction[flmr,exact]
                result.update(added)
                write_json(folder / f"{query_set.name}.json", result)
                scored[query_set.name] = result
        return scored

    def load(folder: Path) -> dict[str, dict]:
        return {s.name: read_json(folder / f"{s.name}.json") for s in sets}

    results = ctx.stage(Stage(f"eval/{row}", ctx.layout.evaluation(row), build, load,
                              {"sets": wanted_sets, **(settings or {})}, inputs))
    for set_name, result in results.items():
        write_json(ctx.layout.result(set_name, row), result)
    return results


def random_baseline(dataset, query_set, *, seed: int = 0) -> dict:
    """Recall of the random ranking over the query set's corpus (+ its analytic expectation K/N); not a stage:
    it has no artefact and costs nothing to score."""
    corpus = [r.image_id for r in dataset.split(query_set.split)]
    res = evaluate(RandomRetriever(corpus, seed=seed), query_set.texts, query_set.gold, progress=False)
    res["expected"] = {f"recall@{k}": min(1.0, k / len(corpus)) for k in DEFAULT_KS}
    return res
