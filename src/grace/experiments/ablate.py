"""``grace ablate``: every identifier scheme through ids → shards → trie → train → eval, one table.

The table (scheme × R@1/5/10 × train time × query latency, the baselines and the controls, the random baseline
as the last row) is printed and written to RUN/results/ablation.{json,md,png}
(:mod:`grace.experiments.ablation_report`). The flags are read once into grouped settings
(:mod:`grace.experiments.settings`); every stage is reused while its record matches
(:mod:`grace.experiments.stage`); ``--force STAGE`` rebuilds one and everything downstream of it.
"""

from __future__ import annotations

import time
from pathlib import Path

from grace.experiments import pipeline as P
from grace.experiments import rows
from grace.experiments.ablation_report import run_provenance, seed_spread, write_ablation
from grace.experiments.baseline_stages import dense_image_embedding, heads_stage, stage_baseline
from grace.experiments.configs import CONTROLS, AblateConfig
from grace.experiments.hybrid import stage_hybrid
from grace.experiments.scoring import random_baseline
from grace.experiments.settings import (
    AblationSettings,
    IdentifierSettings,
    TrainingSettings,
    ablation_settings,
    check_rq_embedding,
)
from grace.experiments.stage import RunContext
from grace.io_utils import seed_everything


def scheme_artefacts(ctx: RunContext, scheme: str, dataset, features, pseudo_queries, ids: IdentifierSettings,
                     splits, stages: P.StageFunctions) -> tuple:
    """ids → shards → tries (one per split in ``splits``) of one scheme; returns ``(idmap, tokenizer, tries)``."""
    features_stage = P.features_dir(ctx.run, ids.encoder)
    if scheme == "rq":
        features, features_stage = rq_embedding(ctx, dataset, features, ids.encoder, ids.rq_embedding)
    idmap = P.stage_ids(ctx, scheme, dataset, features, features_stage=features_stage, pseudo_queries=pseudo_queries,
                        stages=stages, **({"seed": ctx.seed, "tokenizer": ids.tokenizer} | ids.of(scheme)))
    tokenizer = stages.load_tokenizer(ctx.layout.ids(scheme) / "tokenizer")
    P.stage_shards(ctx, scheme, dataset, idmap, pseudo_queries, stages=stages)
    tries = {split: P.stage_trie(ctx, scheme, dataset, idmap, tokenizer, split=split, stages=stages)
             for split in dict.fromkeys(splits)}
    return idmap, tokenizer, tries


def rq_embedding(ctx: RunContext, dataset, features, encoder: str, embedding: str) -> tuple:
    """What the ``rq`` scheme quantises, and the stage folder it comes from: the run's image features, or the
    dense retriever's image embedding (LiT's image head: RUN/baselines/clip_faiss/heads)."""
    check_rq_embedding(embedding)
    if embedding == "features":
        return features, P.features_dir(ctx.run, encoder)
    heads = heads_stage(ctx.run, ctx.layout.dataset, encoder=encoder, seed=ctx.seed, progress=ctx.progress).folder
    return dense_image_embedding(ctx, ctx.layout.dataset, dataset, features, encoder=encoder), heads


def train_config(ctx: RunContext, scheme: str, training: TrainingSettings, *, encoder: str, seed: int,
                 name: str | None = None) -> dict:
    """The one place a ``grace train`` config is made: ``scheme``'s run-layout inputs (its shards, ids, trie and
    the image features, or in the joint space the LiT embeddings and the model config reading them) into
    RUN/ckpt/<name or scheme>, under training ``seed``, with the typed ``--train-overrides`` on top."""
    layout = ctx.layout
    values = {"shards_dir": layout.shards(scheme), "ids_dir": layout.ids(scheme), "trie_dir": layout.trie(scheme),
              "features_cache": P.features_dir(ctx.run, encoder), "image_encoder": encoder, "model": training.model,
              "steps": training.steps, "lr": training.lr, "batch_size_i2id": training.batch_size_i2id,
              "batch_size_t2id": training.batch_size_t2id, "output_dir": layout.ckpt(name or scheme), "seed": seed}
    if training.i2id_views != 1:
        values["i2id_views"] = training.i2id_views
    if training.vision_space != "features":
        from grace.experiments.joint_space import joint_space_inputs

        joint = joint_space_inputs(ctx, scheme, encoder=encoder, model=training.model, name=name or scheme)
        values |= {"features_cache": joint.images, "t2id_media": joint.texts, "t2id_media_mix": training.query_mix,
                   "model": joint.model_config}
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    return values | training.overrides


def train_and_score(ctx: RunContext, scheme: str, dataset, artefacts: tuple, settings: AblationSettings, seed: int,
                    sets: list, stages: P.StageFunctions) -> dict[str, dict]:
    """``scheme`` trained under training ``seed`` (on its :func:`scheme_artefacts`) and scored on ``sets`` →
    ``{query set: eval metrics plus train seconds}``."""
    idmap, tokenizer, tries = artefacts
    name = rows.generative(scheme, None if seed == settings.seed else seed).name
    values = train_config(ctx, scheme, settings.training, encoder=settings.identifiers.encoder, seed=seed, name=name)
    export = P.stage_train(ctx, scheme, values, nproc=settings.training.nproc, name=name, stages=stages)
    by_set = P.stage_eval(ctx, scheme, export, dataset, idmap, tokenizer, sets=sets, tries=tries,
                          num_beams=settings.evaluation.num_beams, name=name, stages=stages)
    for res in by_set.values():
        res["train_s"] = ctx.timer.build_seconds.get(f"train/{name}", 0.0)
    return by_set


def run_training_seeds(ctx: RunContext, scheme: str, dataset, artefacts: tuple, settings: AblationSettings,
                       test_set, first: dict, stages: P.StageFunctions) -> dict:
    """``scheme`` retrained under each of the training seeds (the same ids, shards, data and queries; only the
    training seed differs: initialisation and data order) and scored on the test queries; ``first`` is its
    result under the run's seed. Returns the spread (:func:`~grace.experiments.ablation_report.seed_spread`)."""
    per_seed = {settings.seed: first}
    for seed in settings.training.seeds:
        if seed != settings.seed:
            per_seed[seed] = train_and_score(ctx, scheme, dataset, artefacts, settings, seed, [test_set],
                                             stages)[test_set.name]
    return seed_spread(per_seed)


def run_hybrid_seeds(ctx: RunContext, scheme: str, kind: str, dataset, settings: AblationSettings, sets: list,
                     first: dict) -> dict:
    """The hybrid ``scheme+kind`` over each checkpoint :func:`run_training_seeds` trained: each seed's pool and
    weight chosen on its own val scores, then scored on test; ``first`` is the hybrid under the run's seed."""
    per_seed = {settings.seed: first}
    for seed in settings.training.seeds:
        if seed != settings.seed:
            per_seed[seed] = score_hybrid(ctx, rows.hybrid(scheme, kind, seed), dataset, settings,
                                          [s for s in sets if s.name in ("test", "val")])["test"]
    return seed_spread(per_seed)


def score_hybrid(ctx: RunContext, row: rows.Row, dataset, settings: AblationSettings, sets: list) -> dict[str, dict]:
    """:func:`~grace.experiments.hybrid.stage_hybrid` of ``row`` under the ablation's hybrid settings (depth,
    fusion, pools) and beams."""
    hybrid = settings.hybrid
    return stage_hybrid(ctx, row, dataset, sets=sets, depth=hybrid.depth, fusion=hybrid.fusion, pools=hybrid.pools,
                        num_beams=settings.evaluation.num_beams)


def run_ablation(config: AblateConfig, stages: P.StageFunctions | None = None) -> dict[str, dict]:
    """Every scheme, the baselines and the controls on every query set; returns the test results. ``stages``:
    the lower stages' entry points (default :data:`~grace.experiments.pipeline.REAL_STAGES`)."""
    from grace.experiments.query_sets import query_sets

    settings = ablation_settings(config)  # every flag checked before anything is built
    data, ids, training, evaluation = settings.data, settings.identifiers, settings.training, settings.evaluation
    seed_everything(settings.seed)
    stages = stages or P.REAL_STAGES
    ctx = RunContext(settings.run, seed=settings.seed, force=settings.force)
    started = time.perf_counter()
    dataset = P.stage_dataset(ctx, dataset=data.dataset, limit=data.limit, split_seed=data.split_seed,
                              benchmark=data.benchmark, image_root=data.image_root, group_by=data.group_by)
    sets = query_sets(dataset, max_queries=evaluation.max_queries, select_on=evaluation.select_on,
                      natural_queries=evaluation.natural_queries)
    features = P.stage_features(ctx, dataset, ids.encoder,
                                tokens=bool(ids.schemes) and training.vision_space == "features"
                                and P.model_visual_tokens(training.model) > 1,
                                views=training.i2id_views if ids.schemes else 1, stages=stages)
    pseudo_queries, pq_provenance = P.stage_pseudo_queries(
        ctx, dataset, features, encoder=ids.encoder, protocol=evaluation.protocol,
        generator=evaluation.pseudo_query_generator, options=evaluation.pseudo_query_options)
    by_set: dict[str, dict[str, dict]] = {query_set.name: {} for query_set in sets}
    table: dict[str, rows.Row] = {}  # the rows scored, by name

    def add(row: rows.Row, results: dict[str, dict]) -> None:
        table[row.name] = row
        for set_name, result in results.items():
            by_set[set_name][row.name] = result

    artefacts = {}
    for scheme in ids.schemes:
        artefacts[scheme] = scheme_artefacts(ctx, scheme, dataset, features, pseudo_queries, ids,
                                             [query_set.split for query_set in sets], stages)
        add(rows.generative(scheme),
            train_and_score(ctx, scheme, dataset, artefacts[scheme], settings, settings.seed, sets, stages))
    for kind in [*evaluation.baselines, *CONTROLS]:
        scored = stage_baseline(ctx, kind, ctx.layout.dataset, dataset, encoder=ids.encoder, sets=sets,
                                features=features)
        scored["test"]["train_s"] = ctx.timer.build_seconds.get(f"build/{kind}", 0.0)  # training + indexing
        add(rows.baseline(kind), scored)
    for kind in settings.hybrid.kinds:
        for scheme in ids.schemes:
            add(rows.hybrid(scheme, kind), score_hybrid(ctx, rows.hybrid(scheme, kind), dataset, settings, sets))
    add(rows.Row("random", "random"),
        {query_set.name: random_baseline(dataset, query_set, seed=settings.seed) for query_set in sets})
    if training.seeds:
        from grace.experiments.selection import select_on

        schemes = rows.names(table.values(), "generative")
        non_generative = rows.names(table.values(), "baseline", "control")
        chosen = select_on(by_set["val"], schemes, non_generative)["generative"] if "val" in by_set else None
        for scheme in [chosen] if chosen else schemes:
            by_set["test"][scheme]["training_seeds"] = run_training_seeds(
                ctx, scheme, dataset, artefacts[scheme], settings, sets[0], by_set["test"][scheme], stages)
            for kind in settings.hybrid.kinds:  # the hybrid over every seed's checkpoint
                name = rows.hybrid(scheme, kind).name
                by_set["test"][name]["training_seeds"] = run_hybrid_seeds(
                    ctx, scheme, kind, dataset, settings, sets, by_set["test"][name])
    provenance = run_provenance(config, pq_provenance, sets)
    tables = write_ablation(ctx.run, by_set, sets, config, list(table.values()), provenance)
    print(tables, end="")
    print(f"stage seconds: { {k: round(v, 1) for k, v in ctx.timer.seconds.items()} }")
    if settings.publish.folder is not None:
        from grace.experiments.publish import publish

        paths = publish(ctx.run, config, tables, time.perf_counter() - started, ctx.timer)
        print(f"published {', '.join(map(str, paths))}")
    return by_set["test"]
