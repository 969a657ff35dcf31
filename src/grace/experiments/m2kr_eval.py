"""``grace eval --m2kr``: Recall@K (any K) and pseudo-recall of passage retrievers on an M2KR task.

Every retriever is a passage index of the task's corpus (``grace baselines late-interaction index
--m2kr ... --m2kr-task ...``, e.g. with a released PreFLMR checkpoint). A query hits at K when one of its
``pos_item_ids`` is in the top K; pseudo-recall counts a hit when a top-K passage contains one of its
answers. Both get 95% bootstrap intervals; with several retrievers, each is compared (paired, same
queries) with the best by R@min(K).
"""

from __future__ import annotations

import logging
from pathlib import Path

from grace.errors import GraceError
from grace.experiments.configs import EvalConfig
from grace.retrieval_baselines.late_interaction.retriever import LateInteractionRetriever

log = logging.getLogger(__name__)
BLANK_SIZE = 336


def blank_image(folder: Path) -> Path:
    """A black 336×336 PNG (PreFLMR's stand-in for a query without an image), written once."""
    from PIL import Image

    path = Path(folder) / f"blank_{BLANK_SIZE}.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (BLANK_SIZE, BLANK_SIZE), color="black").save(path)
    return path


def _corpus_check(name: str, retriever, task) -> None:
    """A late-interaction passage index must hold the task's positive passages (other kinds are not checked)."""
    if not isinstance(retriever, LateInteractionRetriever):
        return
    known = set(retriever.searcher.ids)
    gold = {p for q in task.queries for p in q.pos_item_ids}
    covered = len(gold & known) / max(1, len(gold))
    if covered == 0:
        raise GraceError(f"{name}: none of the {len(gold)} positive passage ids is in its index: index the "
                         f"{task.name} {task.split} passages (late-interaction index --m2kr ...)")
    if covered < 1:
        log.warning("%s: %.1f%% of the positive passages are not in its index", name, 100 * (1 - covered))


def run_m2kr_eval(config: EvalConfig, rank: int = 0) -> dict[str, dict]:
    """Score every ``--retriever`` on ``--m2kr-task``'s ``--split``; rank 0 writes the artefacts."""
    from grace.data_process.m2kr import load_m2kr, pseudo_rank
    from grace.experiments.report import write_results
    from grace.experiments.retrievers import load_for_eval
    from grace.infer.evaluate import metrics, run_queries
    from grace.retriever import Query
    from grace.stats import recall_ci, summarise

    if not config.retriever:
        raise GraceError("--m2kr needs at least one --retriever late_interaction:INDEX over the task's passages")
    task = load_m2kr(config.m2kr, config.m2kr_task, config.split, image_root=config.image_root,
                     limit=config.max_queries)
    if not task.queries:
        raise GraceError(f"M2KR {task.name} split {task.split!r} has no queries")
    blank = blank_image(Path(config.out)) if config.blank_image and any(q.image is None for q in task.queries) else None
    queries = [Query(text=q.text, image=q.image or blank) for q in task.queries]
    gold = [q.pos_item_ids for q in task.queries]
    texts = task.passage_text()
    ks, results = list(config.ks), {}
    for spec in config.retriever:
        name = spec.partition(":")[0]
        name = name if name not in results else spec
        retriever = load_for_eval(spec, config)
        _corpus_check(name, retriever, task)
        rankings, latencies = run_queries(retriever, queries, max(ks), batch_size=config.batch_size,
                                          progress=config.progress, desc=name)
        res = metrics(rankings, gold, latencies, ks)
        res["corpus_size"] = len(task.passage_ids)
        if config.pseudo_recall:
            ranks = [pseudo_rank([texts.get(pid, "") for pid in ranked], q.answers)
                     for ranked, q in zip(rankings, task.queries)]
            res["pseudo_ranks"] = ranks
            for k in ks:
                value, low, high = recall_ci(ranks, k, seed=config.seed)
                res[f"pseudo_recall@{k}"], res[f"pseudo_recall@{k}_ci"] = value, [low, high]
        res["m2kr"] = {"source": str(config.m2kr), "task": task.name, "split": task.split}
        results[name] = res
    if rank == 0:
        names = list(results)
        comparisons = summarise(results, ks, candidates=names, references=names, seed=config.seed)
        write_results(Path(config.out), results, config, ks, title=f"M2KR {task.name} ({task.split})",
                      comparisons=comparisons if len(names) > 1 else None,
                      notes="R@K: a positive passage in the top K; PR@K (pseudo-recall): a top-K passage contains "
                            "an answer. In % [95% bootstrap interval over queries]; latency in ms/query.")
    return results
