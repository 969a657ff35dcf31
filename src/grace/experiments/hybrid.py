"""The hybrid rows of ``grace ablate --hybrid KIND``: each scheme's generative beam re-scored by a baseline.

The candidate pool (the beam's top ``depth``, or its union with the baseline's top ``depth``) and the fusion
weight are chosen on the val queries (:func:`choose_weight`, one pass of both retrievers scores every choice),
then every query set is scored with them; ``RUN/hybrid/<scheme>+<kind>/hybrid.json`` is the test retriever
(``grace search / serve / eval --retriever hybrid:DIR``), ``hybrid-val.json`` beside it the val one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from grace.errors import GraceError
from grace.fusion import HybridConfig, HybridRetriever, fuse
from grace.infer.evaluate import DEFAULT_KS as KS
from grace.infer.evaluate import gold_rank
from grace.run_layout import RunLayout

#: the weights :func:`choose_weight` tries by default (0: the generative order; 1: the re-ranker's)
WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def hybrid_name(scheme: str, kind: str) -> str:
    """The row (and folder) name of ``scheme`` re-scored by baseline ``kind``."""
    return f"{scheme}+{kind}"


def choose_weight(hybrid: HybridRetriever, queries: Sequence, gold: Sequence, *,
                  weights: Sequence[float] = WEIGHT_GRID, pools: Sequence[str] | None = None,
                  split: str = "val") -> dict:
    """Score every (candidate pool, weight) on ``queries`` (the val split's) from one pass of both retrievers,
    and set the best by (R@1, R@5, R@10) on ``hybrid`` (ties: the earlier pool, then the smaller weight);
    ``pools`` defaults to the config's. Returns ``{"split", "pool", "weight", "recall@K": {weight: recall}}``
    (with several pools the keys are ``"pool/weight"``), also kept in ``hybrid.config.chosen``."""
    pools = list(pools or [hybrid.config.pool])
    widest = hybrid.candidates(list(queries), pool="union" if "union" in pools else "first")
    by_pool = {pool: widest if pool == "union" else widest.of_first() for pool in pools}
    table: dict[str, dict[str, float]] = {f"recall@{k}": {} for k in KS}
    best, best_key = None, None
    for pool, candidates in by_pool.items():
        for weight in weights:
            ranks = [gold_rank([h.image_id for h in hits], g)
                     for hits, g in zip(fuse(candidates, weight, hybrid.config.fusion), gold)]
            recalls = tuple(sum(0 < r <= k for r in ranks) / max(1, len(ranks)) for k in KS)
            key = str(weight) if len(pools) == 1 else f"{pool}/{weight}"
            for k, recall in zip(KS, recalls):
                table[f"recall@{k}"][key] = recall
            if best_key is None or recalls > best_key:
                best, best_key = (pool, weight), recalls
    hybrid.config.pool, hybrid.config.weight = best[0], float(best[1])
    hybrid.config.chosen = {"split": split, "pools": pools, "weights": [float(w) for w in weights], **table}
    return {"split": split, "pool": best[0], "weight": float(best[1]), **table}


def stage_hybrid(run: Path, scheme: str, kind: str, dataset, timer, *, sets: list, depth: int = 20,
                 fusion: str = "interpolate", pools: Sequence[str] = ("first",), num_beams: int = 10,
                 export_name: str | None = None, load: Callable[..., object] | None = None) -> dict[str, dict]:
    """Choose the candidate pool (among ``pools``) and the weight on the ``val`` set, score every query set (each
    over its split's corpus: the scheme's trie and the baseline's index of that split) → ``{set name: result}``
    (``pool``, ``weight``, ``depth`` and the val choice in each), written to ``RunLayout.result``.
    ``export_name`` (default ``scheme``): the checkpoint that generates, e.g. ``rq@seed1`` (its row is then
    ``rq@seed1+<kind>``). ``load`` (default ``grace.experiments.retrievers.load_retriever``) opens ``KIND:PATH``
    specs."""
    from grace.experiments.retrievers import load_retriever
    from grace.infer.evaluate import evaluate
    from grace.io_utils import write_json

    load = load or load_retriever
    run = Path(run)
    by_split = {query_set.split for query_set in sets}
    if "val" not in by_split:
        raise GraceError("--hybrid chooses its fusion weight on val: it needs --select-on val")
    export = RunLayout(run).export(export_name or scheme)
    name = hybrid_name(export_name or scheme, kind)

    # an _expanded baseline is the same kind of retriever over another index (its keys carry the pseudo-queries)
    retriever_kind = kind.removesuffix("_expanded")

    def hybrid_for(split: str) -> HybridRetriever:
        first = load(f"generative:{export}", trie=RunLayout(run).trie(scheme, split), num_beams=max(num_beams, depth))
        second_spec = f"{retriever_kind}:{RunLayout(run).baseline_index(kind, split)}"
        return HybridRetriever(first, load(second_spec), HybridConfig(
            first=f"generative:{export}", second=second_spec, depth=depth, fusion=fusion))

    def build() -> dict[str, dict]:
        val_set = next(s for s in sets if s.split == "val" and s.name == "val")
        hybrids = {split: hybrid_for(split) for split in sorted(by_split)}
        choice = choose_weight(hybrids["val"], val_set.texts, val_set.gold, pools=pools)
        out = {}
        for split, hybrid in hybrids.items():
            hybrid.config.pool, hybrid.config.weight = choice["pool"], choice["weight"]
            hybrid.config.chosen = dict(hybrids["val"].config.chosen)
            folder = RunLayout(run).hybrid(name)
            if split == "test":  # the test retriever is what search / serve / eval load by default
                hybrid.save(folder)
            else:
                folder.mkdir(parents=True, exist_ok=True)
                write_json(folder / f"hybrid-{split}.json", hybrid.config.__dict__)
            for query_set in (s for s in sets if s.split == split):
                result = evaluate(hybrid, query_set.texts, query_set.gold)
                result.update(retriever=hybrid.name, weight=choice["weight"], pool=choice["pool"], depth=depth,
                              fusion=fusion, weight_chosen_on=choice["split"],
                              corpus_size=len(dataset.split(split)))
                write_json(RunLayout(run).result(query_set.name, name), result)
                out[query_set.name] = result
        return out

    return timer.run(f"eval/{name}", False, build, lambda: None)
