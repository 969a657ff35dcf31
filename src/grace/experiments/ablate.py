"""``grace ablate``: every identifier scheme through ids → shards → trie → train → eval, one table.

The table (scheme × R@1/5/10 × train time × query latency, the baselines and the controls, the random baseline
as the last row) is printed and written to RUN/results/ablation.{json,md,png}
(:mod:`grace.experiments.ablation_report`). Every stage is reused while its record matches
(:mod:`grace.experiments.stage`); ``--force STAGE`` rebuilds one and everything downstream of it.
"""

from __future__ import annotations

import time
from pathlib import Path

from grace.config import key_values
from grace.errors import GraceError
from grace.experiments import pipeline as P
from grace.experiments.ablation_report import row_kinds, run_provenance, seed_spread, write_ablation
from grace.experiments.baseline_stages import dense_image_embedding, heads_stage, stage_baseline
from grace.experiments.configs import BASELINES, CONTROLS, HYBRID_KINDS, SCHEMES, AblateConfig, split_seed
from grace.experiments.hybrid import hybrid_name, stage_hybrid
from grace.experiments.joint_space import check_vision_space
from grace.experiments.stage import RunContext
from grace.identifiers.schemes import SchemeConfig
from grace.infer.evaluate import DEFAULT_KS as KS
from grace.io_utils import read_json, seed_everything
from grace.train import TrainConfig

#: scheme settings only ``rq`` reads (other schemes in the same ablation ignore them)
RQ_SETTINGS = ("levels", "codebook", "reserve_first", "embedding")


def scheme_artefacts(ctx: RunContext, scheme: str, dataset, features, pseudo_queries, config: AblateConfig,
                     splits, stages: P.StageFunctions) -> tuple:
    """ids → shards → tries (one per split in ``splits``) of one scheme; returns ``(idmap, tokenizer, tries)``."""
    scheme_settings = key_values(config.scheme_overrides, "--scheme-overrides", SchemeConfig)
    features_stage = P.features_dir(ctx.run, config.encoder)
    if scheme == "rq":
        features, features_stage = rq_embedding(ctx, dataset, features, config,
                                                scheme_settings.get("embedding", "features"))
    else:
        scheme_settings = {k: v for k, v in scheme_settings.items() if k not in RQ_SETTINGS}
    idmap = P.stage_ids(ctx, scheme, dataset, features, features_stage=features_stage, pseudo_queries=pseudo_queries,
                        stages=stages, **({"seed": config.seed, "tokenizer": config.tokenizer} | scheme_settings))
    tokenizer = stages.load_tokenizer(ctx.layout.ids(scheme) / "tokenizer")
    P.stage_shards(ctx, scheme, dataset, idmap, pseudo_queries, stages=stages)
    tries = {split: P.stage_trie(ctx, scheme, dataset, idmap, tokenizer, split=split, stages=stages)
             for split in dict.fromkeys(splits)}
    return idmap, tokenizer, tries


def rq_embedding(ctx: RunContext, dataset, features, config: AblateConfig, embedding: str) -> tuple:
    """What the ``rq`` scheme quantises, and the stage folder it comes from: the run's image features, or the
    dense retriever's image embedding (LiT's image head: RUN/baselines/clip_faiss/heads)."""
    if embedding == "features":
        return features, P.features_dir(ctx.run, config.encoder)
    if embedding == "clip_faiss":
        heads = heads_stage(ctx.run, ctx.layout.dataset, encoder=config.encoder, seed=ctx.seed,
                            progress=ctx.progress).folder
        return dense_image_embedding(ctx, ctx.layout.dataset, dataset, features, encoder=config.encoder), heads
    raise GraceError(f"--scheme-overrides embedding {embedding!r}: use 'features' or 'clip_faiss'")


def train_values(ctx: RunContext, scheme: str, config: AblateConfig, seed: int, name: str | None = None) -> dict:
    """The scheme's ``grace train`` config under training ``seed``, into RUN/ckpt/<name or scheme>."""
    overrides = key_values(config.train_overrides, "--train-overrides", TrainConfig)
    if config.i2id_views != 1:
        overrides = {"i2id_views": config.i2id_views, **overrides}
    if config.vision_space != "features":
        from grace.experiments.joint_space import joint_space_values

        overrides = {**joint_space_values(ctx, scheme, encoder=config.encoder, model=config.model,
                                          query_mix=config.query_mix, name=name or scheme), **overrides}
    return P.train_config_values(ctx.run, scheme, model=config.model, steps=config.steps, lr=config.lr,
                                 batch_size_i2id=config.batch_size_i2id, batch_size_t2id=config.batch_size_t2id,
                                 encoder=config.encoder, seed=seed, overrides=overrides, name=name)


def seed_name(scheme: str, seed: int) -> str:
    """The checkpoint and result name of ``scheme`` retrained under another training seed."""
    return f"{scheme}@seed{seed}"


def train_and_score(ctx: RunContext, scheme: str, dataset, artefacts: tuple, config: AblateConfig, seed: int,
                    sets: list, stages: P.StageFunctions) -> dict[str, dict]:
    """``scheme`` trained under training ``seed`` (on its :func:`scheme_artefacts`) and scored on ``sets`` →
    ``{query set: eval metrics plus train seconds}``."""
    idmap, tokenizer, tries = artefacts
    name = scheme if seed == config.seed else seed_name(scheme, seed)
    export = P.stage_train(ctx, scheme, train_values(ctx, scheme, config, seed, name=name), nproc=config.nproc,
                           name=name, stages=stages)
    by_set = P.stage_eval(ctx, scheme, export, dataset, idmap, tokenizer, sets=sets, tries=tries,
                          num_beams=config.num_beams, name=name, stages=stages)
    for res in by_set.values():
        res["train_s"] = stage_seconds(ctx, f"train/{name}", name)
    return by_set


def run_training_seeds(ctx: RunContext, scheme: str, dataset, artefacts: tuple, config: AblateConfig, test_set,
                       first: dict, stages: P.StageFunctions) -> dict:
    """``scheme`` retrained under each of ``config.training_seeds`` (the same ids, shards, data and queries; only
    the training seed differs: initialisation and data order) and scored on the test queries; ``first`` is its
    result under ``config.seed``. Returns the spread (:func:`~grace.experiments.ablation_report.seed_spread`)."""
    per_seed = {config.seed: first}
    for seed in dict.fromkeys(config.training_seeds):
        if seed != config.seed:
            per_seed[seed] = train_and_score(ctx, scheme, dataset, artefacts, config, seed, [test_set],
                                             stages)[test_set.name]
    return seed_spread(per_seed)


def run_hybrid_seeds(ctx: RunContext, scheme: str, kind: str, dataset, config: AblateConfig, sets: list,
                     first: dict) -> dict:
    """The hybrid ``scheme+kind`` over each checkpoint :func:`run_training_seeds` trained: each seed's pool and
    weight chosen on its own val scores, then scored on test; ``first`` is the hybrid under ``config.seed``."""
    per_seed = {config.seed: first}
    for seed in dict.fromkeys(config.training_seeds):
        if seed != config.seed:
            per_seed[seed] = score_hybrid(ctx, scheme, kind, dataset, config,
                                          [s for s in sets if s.name in ("test", "val")],
                                          export_name=seed_name(scheme, seed))["test"]
    return seed_spread(per_seed)


def score_hybrid(ctx: RunContext, scheme: str, kind: str, dataset, config: AblateConfig, sets: list,
                 export_name: str | None = None) -> dict[str, dict]:
    """:func:`~grace.experiments.hybrid.stage_hybrid` under the ablation's hybrid settings (depth, fusion, pools,
    beams)."""
    return stage_hybrid(ctx.run, scheme, kind, dataset, ctx.timer, sets=sets, depth=config.hybrid_depth,
                        fusion=config.hybrid_fusion, pools=config.hybrid_pools, num_beams=config.num_beams,
                        export_name=export_name)


def stage_seconds(ctx: RunContext, stage: str, name: str) -> float:
    """Seconds a stage took: now, or (reused) as recorded in the previous ablation of this run."""
    if stage not in ctx.timer.skipped:
        return ctx.timer.seconds[stage]
    path = ctx.layout.ablation
    return float(read_json(path).get(name, {}).get("train_s", 0.0)) if path.is_file() else 0.0


def force_patterns(force) -> tuple[str, ...]:
    """``--force`` as stage names: ``True`` (or the flag alone) = every stage, ``False`` = none."""
    if isinstance(force, bool):
        return ("all",) if force else ()
    return tuple(force)


def baselines_to_score(names: list[str], protocol) -> list[str]:
    """The baselines asked for (the controls, bm25 and sibling, are always scored apart; 'none' = none) plus,
    under a protocol that ``expand_documents``, each one's ``_expanded`` twin: the same information for every
    retriever."""
    baselines = [b for b in names if b not in ("none", *CONTROLS)]
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise GraceError(f"unknown baselines {unknown}; known: {list(BASELINES)}")
    if protocol.expand_documents:
        baselines += [f"{b}_expanded" for b in baselines if f"{b}_expanded" in BASELINES
                      and f"{b}_expanded" not in baselines]
    return baselines


def check_hybrid(config: AblateConfig, baselines: list[str]) -> None:
    """One-line errors for ``--hybrid`` kinds that cannot re-score candidates or are not built in this run."""
    from grace.fusion import FUSIONS, POOLS

    for kind in config.hybrid:
        if kind not in HYBRID_KINDS:
            raise GraceError(f"--hybrid {kind}: only {', '.join(HYBRID_KINDS)} can re-score the generative "
                             "candidates")
        if kind not in baselines:
            raise GraceError(f"--hybrid {kind} re-scores with the {kind} baseline: add it to --baselines")
    if config.hybrid and config.select_on != "val":
        raise GraceError("--hybrid chooses its fusion weight on val: it needs --select-on val")
    if config.hybrid_fusion not in FUSIONS:
        raise GraceError(f"--hybrid-fusion {config.hybrid_fusion!r}: known {', '.join(FUSIONS)}")
    unknown = sorted(set(config.hybrid_pools) - set(POOLS))
    if unknown or not config.hybrid_pools:
        raise GraceError(f"--hybrid-pools {' '.join(unknown) or '(none)'}: choose among {', '.join(POOLS)}")
    if config.hybrid and config.hybrid_depth < max(KS):
        raise GraceError(f"--hybrid-depth {config.hybrid_depth} is below the largest K ({max(KS)}) it is scored at")


def run_ablation(config: AblateConfig, stages: P.StageFunctions | None = None) -> dict[str, dict]:
    """Every scheme, the baselines and the controls on every query set; returns the test results. ``stages``:
    the lower stages' entry points (default :data:`~grace.experiments.pipeline.REAL_STAGES`)."""
    from grace.data_process.protocol import get_protocol
    from grace.experiments.publish import check_publish_name
    from grace.experiments.query_sets import check_select_on, query_sets

    unknown = sorted(set(config.schemes) - set(SCHEMES))
    if unknown:
        raise GraceError(f"unknown identifier schemes {unknown}; known: {list(SCHEMES)}")
    protocol = get_protocol(config.protocol)  # an unknown protocol or a generator it refuses fails first
    protocol.check_generator(config.pseudo_query_generator or protocol.default_generator)
    baselines = baselines_to_score(config.baselines, protocol)
    check_hybrid(config, baselines)
    check_select_on(config.select_on)
    check_vision_space(config.vision_space, config.query_mix)
    check_publish_name(config.publish_name)
    if config.group_by and config.dataset is None:
        raise GraceError("--group-by re-splits your own --dataset; the built-in benchmarks are split by groups already")
    seed_everything(config.seed)
    stages = stages or P.REAL_STAGES
    ctx = RunContext(Path(config.run), seed=config.seed, force=force_patterns(config.force))
    started = time.perf_counter()
    dataset = P.stage_dataset(ctx, dataset=config.dataset, limit=config.limit, split_seed=split_seed(config),
                              benchmark=config.benchmark, image_root=config.image_root, group_by=config.group_by)
    sets = query_sets(dataset, max_queries=config.max_queries, select_on=config.select_on,
                      natural_queries=config.natural_queries)
    features = P.stage_features(ctx, dataset, config.encoder,
                                tokens=bool(config.schemes) and config.vision_space == "features"
                                and P.model_visual_tokens(config.model) > 1,
                                views=config.i2id_views if config.schemes else 1, stages=stages)
    pseudo_queries, pq_provenance = P.stage_pseudo_queries(
        ctx, dataset, features, encoder=config.encoder, protocol=config.protocol,
        generator=config.pseudo_query_generator, options=key_values(config.pseudo_queries, "--pseudo-queries"))
    by_set: dict[str, dict[str, dict]] = {query_set.name: {} for query_set in sets}

    def add(name: str, results: dict[str, dict]) -> None:
        for set_name, result in results.items():
            by_set[set_name][name] = result

    artefacts = {}
    for scheme in config.schemes:
        artefacts[scheme] = scheme_artefacts(ctx, scheme, dataset, features, pseudo_queries, config,
                                             [query_set.split for query_set in sets], stages)
        add(scheme, train_and_score(ctx, scheme, dataset, artefacts[scheme], config, config.seed, sets, stages))
    for kind in [*baselines, *CONTROLS]:
        scored = stage_baseline(ctx, kind, ctx.layout.dataset, dataset, encoder=config.encoder, sets=sets,
                                features=features)
        scored["test"]["train_s"] = stage_seconds(ctx, f"build/{kind}", kind)  # training + indexing
        add(kind, scored)
    for kind in config.hybrid:
        for scheme in config.schemes:
            add(hybrid_name(scheme, kind), score_hybrid(ctx, scheme, kind, dataset, config, sets))
    add("random", {query_set.name: P.random_baseline(dataset, query_set, seed=config.seed) for query_set in sets})
    if config.training_seeds:
        from grace.experiments.selection import select_on

        schemes, non_generative = row_kinds(by_set["test"])
        chosen = select_on(by_set["val"], schemes, non_generative)["generative"] if "val" in by_set else None
        for scheme in [chosen] if chosen else schemes:
            by_set["test"][scheme]["training_seeds"] = run_training_seeds(
                ctx, scheme, dataset, artefacts[scheme], config, sets[0], by_set["test"][scheme], stages)
            for kind in config.hybrid:  # the hybrid over every seed's checkpoint
                name = hybrid_name(scheme, kind)
                by_set["test"][name]["training_seeds"] = run_hybrid_seeds(
                    ctx, scheme, kind, dataset, config, sets, by_set["test"][name])
    provenance = run_provenance(config, pq_provenance, sets)
    tables = write_ablation(ctx.run, by_set, sets, config, provenance)
    print(tables, end="")
    print(f"stage seconds: { {k: round(v, 1) for k, v in ctx.timer.seconds.items()} }")
    if config.publish is not None:
        from grace.experiments.publish import publish

        paths = publish(ctx.run, config, tables, time.perf_counter() - started, ctx.timer)
        print(f"published {', '.join(map(str, paths))}")
    return by_set["test"]
