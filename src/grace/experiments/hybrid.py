"""The hybrid rows of ``grace ablate --hybrid KIND``: each scheme's generative beam re-scored by a baseline.

The candidate pool (the beam's top ``depth``, or its union with the baseline's top ``depth``) and the fusion
weight are chosen on the val queries (:func:`choose_weight`, one pass of both retrievers scores every choice),
then every query set is scored with them; ``RUN/hybrid/<scheme>+<kind>/hybrid.json`` is the test retriever
(``grace search / serve / eval --retriever hybrid:DIR``), ``hybrid-val.json`` beside it the val one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from grace.errors import GraceError
from grace.experiments.rows import Row
from grace.experiments.scoring import query_set_digest, score_sets
from grace.experiments.stage import RunContext, Stage
from grace.fusion import HybridConfig, HybridRetriever, fuse
from grace.infer.evaluate import DEFAULT_KS as KS
from grace.infer.evaluate import gold_rank
from grace.io_utils import read_json, write_json

#: the weights :func:`choose_weight` tries by default (0: the generative order; 1: the re-ranker's)
WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


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


def stage_hybrid(ctx: RunContext, row: Row, dataset, *, sets: list, depth: int = 20, fusion: str = "interpolate",
                 pools: Sequence[str] = ("first",), num_beams: int = 10,
                 load: Callable[..., object] | None = None) -> dict[str, dict]:
    """The stage ``hybrid/<name>`` (RUN/hybrid/<name>: the candidate pool among ``pools`` and the weight chosen
    on the ``val`` set, saved as the test retriever ``hybrid.json`` and ``hybrid-<split>.json`` for the other
    corpora), then every query set scored, each over its split's corpus (the scheme's trie and the baseline's
    index of that split; :func:`~grace.experiments.scoring.score_sets`) → ``{set name: result}`` with ``pool``,
    ``weight``, ``depth`` and the val choice in each. ``row``: the hybrid row (``rows.hybrid(scheme, kind,
    seed)``): the checkpoint of its generator (``rq``, or ``rq@seed1`` retrained) generates, its rescorer
    re-scores. ``load`` (default ``grace.experiments.retrievers.load_retriever``) opens ``KIND:PATH`` specs."""
    from grace.experiments.retrievers import load_retriever

    load = load or load_retriever
    splits = sorted({query_set.split for query_set in sets})
    if "val" not in splits:
        raise GraceError("--hybrid chooses its fusion weight on val: it needs --select-on val")
    layout, scheme, kind, name = ctx.layout, row.retriever, row.rescorer, row.name
    export = layout.export(row.generator.name)
    val_set = next(s for s in sets if s.split == "val" and s.name == "val")
    # an _expanded baseline is the same kind of retriever over another index (its keys carry the pseudo-queries)
    retriever_kind = kind.removesuffix("_expanded")
    hybrids: dict[str, HybridRetriever] = {}

    def hybrid_for(split: str) -> HybridRetriever:
        if split not in hybrids:
            first = load(f"generative:{export}", trie=layout.trie(scheme, split), num_beams=max(num_beams, depth))
            second_spec = f"{retriever_kind}:{layout.baseline_index(kind, split)}"
            hybrids[split] = HybridRetriever(first, load(second_spec), HybridConfig(
                first=f"generative:{export}", second=second_spec, depth=depth, fusion=fusion))
        return hybrids[split]

    def choose(folder: Path) -> dict:
        choice = choose_weight(hybrid_for("val"), val_set.texts, val_set.gold, pools=pools)
        for split in splits:
            hybrid = configured(split, {**choice, "chosen": dict(hybrids["val"].config.chosen)})
            if split == "test":  # the test retriever is what search / serve / eval load by default
                hybrid.save(folder)
            else:
                write_json(folder / f"hybrid-{split}.json", asdict(hybrid.config))
        return read_choice(folder)

    def read_choice(folder: Path) -> dict:
        config = read_json(folder / ("hybrid.json" if "test" in splits else f"hybrid-{splits[0]}.json"))
        return {"split": config["chosen"]["split"], "pool": config["pool"], "weight": config["weight"],
                "chosen": config["chosen"]}

    def configured(split: str, choice: dict) -> HybridRetriever:
        hybrid = hybrid_for(split)
        hybrid.config.pool, hybrid.config.weight = choice["pool"], choice["weight"]
        hybrid.config.chosen = dict(choice["chosen"])
        return hybrid

    parts = {"train": layout.ckpt(row.generator.name)}
    for split in splits:
        parts |= {f"trie-{split}": layout.trie(scheme, split), f"index-{split}": layout.baseline_index(kind, split)}
    choice = ctx.stage(Stage(f"hybrid/{name}", layout.hybrid(name), choose, read_choice, inputs=parts,
                             settings={"depth": depth, "fusion": fusion, "pools": list(pools), "num_beams": num_beams,
                                       "val": query_set_digest(val_set)}))

    def extra(split: str, retriever) -> dict:
        return {"weight": choice["weight"], "pool": choice["pool"], "depth": depth, "fusion": fusion,
                "weight_chosen_on": choice["split"], "corpus_size": len(dataset.split(split))}

    return score_sets(ctx, name, sets, lambda split: configured(split, choice), extra=extra,
                      inputs={"hybrid": layout.hybrid(name)})
