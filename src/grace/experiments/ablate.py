"""``grace ablate``: every identifier scheme through ids → shards → trie → train → eval, one table.

The table (scheme × R@1/5/10 × train time × query latency, the random baseline as the last row) is
printed and written to RUN/results/ablation.{json,md,png}. Stages reuse what RUN/ already holds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from grace.config import key_values
from grace.errors import GraceError
from grace.experiments import pipeline as P
from grace.experiments.baseline_stages import stage_baseline
from grace.experiments.configs import BASELINES, CONTROLS, HYBRID_KINDS, SCHEMES, AblateConfig
from grace.experiments.hybrid import hybrid_name, stage_hybrid
from grace.experiments.joint_space import check_vision_space
from grace.identifiers.schemes import SchemeConfig
from grace.infer.evaluate import DEFAULT_KS as KS
from grace.io_utils import read_json, save_config, seed_everything, write_json
from grace.run_layout import RunLayout
from grace.train import TrainConfig

#: how the table names a hybrid's candidate pool (``grace.fusion.POOLS``)
POOL_WORDS = {"first": "the beam's", "union": "the beam's and the baseline's"}


def scheme_artefacts(run: Path, scheme: str, dataset, features, pseudo_queries, config: AblateConfig,
                     timer: P.StageTimer, splits, stages: P.StageFunctions) -> tuple:
    """ids → shards → tries (one per split in ``splits``) of one scheme, reused when built;
    returns ``(idmap, tokenizer, tries, force)``: ``force`` when the ids are new (nothing built on old ones is kept)."""
    scheme_settings = key_values(config.scheme_overrides, "--scheme-overrides", SchemeConfig)
    if scheme == "rq":
        features = rq_embedding(run, dataset, features, config, scheme_settings.get("embedding", "features"))
    else:
        scheme_settings = {k: v for k, v in scheme_settings.items() if k not in RQ_SETTINGS}
    idmap = P.stage_ids(run, scheme, dataset, features, timer, force=config.force, pseudo_queries=pseudo_queries,
                        stages=stages, **({"seed": config.seed, "tokenizer": config.tokenizer} | scheme_settings))
    tokenizer = stages.load_tokenizer(RunLayout(run).ids(scheme) / "tokenizer")
    force = config.force or f"ids/{scheme}" not in timer.skipped
    P.stage_shards(run, scheme, dataset, idmap, pseudo_queries, timer, force=force, stages=stages)
    tries = {split: P.stage_trie(run, scheme, dataset, idmap, tokenizer, timer, split=split, force=force,
                                 stages=stages)
             for split in dict.fromkeys(splits)}
    return idmap, tokenizer, tries, force


#: scheme settings only ``rq`` reads (other schemes in the same ablation ignore them)
RQ_SETTINGS = ("levels", "codebook", "reserve_first", "embedding")


def rq_embedding(run: Path, dataset, features, config: AblateConfig, embedding: str):
    """What the ``rq`` scheme quantises: the run's image features, or the dense retriever's image embedding."""
    from grace.experiments.baseline_stages import dense_image_embedding

    if embedding == "features":
        return features
    if embedding == "clip_faiss":
        return dense_image_embedding(run, RunLayout(run).dataset, dataset, features, encoder=config.encoder,
                                     seed=config.seed)
    raise GraceError(f"--scheme-overrides embedding {embedding!r}: use 'features' or 'clip_faiss'")


def train_values(run: Path, scheme: str, config: AblateConfig, seed: int, name: str | None = None) -> dict:
    """The scheme's ``grace train`` config under training ``seed``, into RUN/ckpt/<name or scheme>."""
    overrides = key_values(config.train_overrides, "--train-overrides", TrainConfig)
    if config.i2id_views != 1:
        overrides = {"i2id_views": config.i2id_views, **overrides}
    if config.vision_space != "features":
        from grace.experiments.joint_space import joint_space_values

        overrides = {**joint_space_values(run, scheme, encoder=config.encoder, seed=config.seed, model=config.model,
                                          query_mix=config.query_mix, name=name or scheme), **overrides}
    return P.train_config_values(run, scheme, model=config.model, steps=config.steps, lr=config.lr,
                                 batch_size_i2id=config.batch_size_i2id, batch_size_t2id=config.batch_size_t2id,
                                 encoder=config.encoder, seed=seed, overrides=overrides, name=name)


def run_scheme(run: Path, scheme: str, dataset, artefacts: tuple, config: AblateConfig, timer: P.StageTimer,
               sets: list, stages: P.StageFunctions) -> dict[str, dict]:
    """One scheme end to end on its :func:`scheme_artefacts`; returns ``{query set: eval metrics plus train
    seconds}``."""
    idmap, tokenizer, tries, force = artefacts
    export = P.stage_train(run, scheme, train_values(run, scheme, config, config.seed), timer, nproc=config.nproc,
                           force=force, stages=stages)
    by_set = P.stage_eval(run, scheme, export, dataset, idmap, tokenizer, timer, sets=sets, tries=tries,
                          num_beams=config.num_beams, stages=stages)
    for res in by_set.values():
        res["train_s"] = stage_seconds(run, timer, f"train/{scheme}", scheme)
    return by_set


def seed_name(scheme: str, seed: int) -> str:
    """The checkpoint and result name of ``scheme`` retrained under another training seed."""
    return f"{scheme}@seed{seed}"


def run_training_seeds(run: Path, scheme: str, dataset, artefacts: tuple, config: AblateConfig,
                       timer: P.StageTimer, test_set, first: dict, stages: P.StageFunctions) -> dict:
    """``scheme`` retrained under each of ``config.training_seeds`` (on its :func:`scheme_artefacts`: the same
    ids, shards, data and queries; only the training seed differs: initialisation and data order) and scored on
    the test queries; ``first`` is its result under ``config.seed``. Returns the spread: per seed and mean /
    sample sd / min / max of each R@K."""
    idmap, tokenizer, tries, _ = artefacts
    per_seed = {config.seed: first}
    for seed in dict.fromkeys(config.training_seeds):
        if seed == config.seed:
            continue
        name = seed_name(scheme, seed)
        export = P.stage_train(run, scheme, train_values(run, scheme, config, seed, name=name), timer,
                               nproc=config.nproc, name=name, stages=stages)
        per_seed[seed] = P.stage_eval(run, scheme, export, dataset, idmap, tokenizer, timer, sets=[test_set],
                                      tries=tries, num_beams=config.num_beams, name=name,
                                      stages=stages)[test_set.name]
    return seed_spread(per_seed)


def run_hybrid_seeds(run: Path, scheme: str, kind: str, dataset, config: AblateConfig, timer: P.StageTimer,
                     sets: list, first: dict) -> dict:
    """The hybrid ``scheme+kind`` over each checkpoint :func:`run_training_seeds` trained: each seed's pool and
    weight chosen on its own val scores, then scored on test; ``first`` is the hybrid under ``config.seed``.
    Returns the spread, as :func:`run_training_seeds` does."""
    per_seed = {config.seed: first}
    for seed in dict.fromkeys(config.training_seeds):
        if seed != config.seed:
            per_seed[seed] = score_hybrid(run, scheme, kind, dataset, config, timer,
                                          [s for s in sets if s.name in ("test", "val")],
                                          export_name=seed_name(scheme, seed))["test"]
    return seed_spread(per_seed)


def score_hybrid(run: Path, scheme: str, kind: str, dataset, config: AblateConfig, timer: P.StageTimer,
                 sets: list, export_name: str | None = None) -> dict[str, dict]:
    """:func:`~grace.experiments.hybrid.stage_hybrid` under the ablation's hybrid settings (depth, fusion, pools,
    beams)."""
    return stage_hybrid(run, scheme, kind, dataset, timer, sets=sets, depth=config.hybrid_depth,
                        fusion=config.hybrid_fusion, pools=config.hybrid_pools, num_beams=config.num_beams,
                        export_name=export_name)


def seed_spread(per_seed: dict[int, dict]) -> dict:
    """Per seed and mean / sample sd / min / max of each R@K of ``{seed: test result}``, and each seed's
    ``gold_ranks`` (the verdict's paired tests over seeds read them)."""
    import statistics

    spread = {"seeds": list(per_seed),
              "gold_ranks": {str(seed): list(result["gold_ranks"]) for seed, result in per_seed.items()
                             if result.get("gold_ranks") is not None}}
    for k in KS:
        values = [float(result[f"recall@{k}"]) for result in per_seed.values()]
        spread[f"recall@{k}"] = {"values": values, "mean": statistics.fmean(values),
                                 "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                                 "min": min(values), "max": max(values)}
    return spread


def seeds_markdown(name: str, spread: dict, selected_on: str | None) -> str:
    """One line per R@K: mean ± sd over the training seeds, and each seed's value."""
    how = f"selected on {selected_on}" if selected_on else "every scheme (no selection on val)"
    seeds = ", ".join(map(str, spread["seeds"]))
    lines = [f"\nTraining seeds of `{name}` ({how}; the same ids, data and queries, seeds {seeds}):\n"]
    for k in KS:
        s = spread[f"recall@{k}"]
        each = " / ".join(f"{100 * v:.1f}" for v in s["values"])
        lines.append(f"- R@{k}: mean {100 * s['mean']:.1f} ± {100 * s['sd']:.1f} (sd), min {100 * s['min']:.1f}, "
                     f"max {100 * s['max']:.1f} (per seed: {each})")
    return "\n".join(lines) + "\n"


def stage_seconds(run: Path, timer: P.StageTimer, stage: str, name: str) -> float:
    """Seconds a stage took: now, or (reused) as recorded in the previous ablation of this run."""
    if stage not in timer.skipped:
        return timer.seconds[stage]
    path = RunLayout(run).ablation
    if path.is_file():
        return float(json.loads(path.read_text()).get(name, {}).get("train_s", 0.0))
    return 0.0


def row_kinds(results: dict[str, dict]) -> tuple[list[str], list[str]]:
    """``(generative rows, non-generative rows)`` among ``results``: the schemes; the baselines and the controls."""
    return ([name for name in results if name in SCHEMES],
            [name for name in results if name in BASELINES or name in CONTROLS])


def hybrid_rows(results: dict[str, dict]) -> list[str]:
    """The hybrid rows (``<scheme>+<baseline>``) among ``results``."""
    return [name for name in results if name.partition("+")[0] in SCHEMES and "+" in name]


def run_provenance(config: AblateConfig, pseudo_queries: dict, sets: list) -> dict:
    """How a table was made: protocol, pseudo-query source and digest (with the leak filter's counts), the
    query ids and gold images of every query set, the seeds, and the code's commit."""
    from grace.provenance import git_state

    leak = {k: v for k, v in pseudo_queries.get("leak_filter", {}).items() if k != "examples"}
    return {"protocol": config.protocol,
            "pseudo_queries": {key: pseudo_queries.get(key) for key in ("generator", "options", "digest", "splits")}
            | {"leak_filter": leak},
            "queries": sets[0].provenance(), "query_sets": {s.name: s.provenance() for s in sets[1:]},
            "selected_on": config.select_on,
            "seeds": {"training": list(dict.fromkeys([config.seed, *config.training_seeds])), "data_split": split_seed(config),
                      "bootstrap": config.seed},
            "git": git_state(), "fallbacks": run_fallbacks(config)}


def split_seed(config: AblateConfig) -> int:
    """The seed of the run's train / val / test split: ``--split-seed``, else ``--seed``."""
    return config.split_seed if config.split_seed >= 0 else config.seed


def run_fallbacks(config: AblateConfig) -> list[dict]:
    """What ran other than asked, in this process and in each scheme's training (its metrics.json), labelled."""
    from grace.fallbacks import recorded_fallbacks

    found = [{**f, "where": "evaluation"} for f in recorded_fallbacks()]
    for metrics in sorted((RunLayout(config.run).root / "ckpt").glob("*/metrics.json")):
        for fallback in read_json(metrics).get("fallbacks", []):
            found.append({**fallback, "where": f"train/{metrics.parent.name}"})
    return found


def write_ablation(run: Path, by_set: dict[str, dict[str, dict]], sets: list, config,
                   provenance: dict | None = None) -> str:
    """ablation.json / ablation.md / ablation.png; returns the Markdown tables.

    Every recall gets its 95% bootstrap interval (resampling gold images). With ``--select-on val`` the best
    generative and non-generative rows are chosen by their val recall (``selection`` in the JSON), every scheme
    is compared on test with that non-generative row, and the verdict states the chosen generative row against
    it and the BM25 control; without, the reference is the best non-generative row on test (and says so).
    """
    from grace.experiments.report import (
        markdown_table,
        paired_markdown,
        plot_recall_bars,
        recall_rows,
        write_table,
    )
    from grace.experiments.selection import best_on, select_on, verdict, verdict_markdown
    from grace.stats import summarise

    out = RunLayout(run).results
    gold = {query_set.name: query_set.gold for query_set in sets}
    results = by_set["test"]
    schemes, non_generative = row_kinds(results)
    hybrids = hybrid_rows(results)
    others = {}
    for query_set in sets[1:]:
        rows = by_set[query_set.name]
        others[query_set.name] = {**rows, "comparisons": summarise(rows, KS, candidates=schemes + hybrids,
                                                                   references=non_generative,
                                                                   clusters=gold[query_set.name], seed=config.seed)}
    selection = select_on(by_set["val"], schemes, non_generative) if "val" in by_set else None
    if selection and hybrids:
        selection["hybrid"] = best_on(by_set["val"], hybrids)
    references = [selection["non_generative"]] if selection and selection["non_generative"] else non_generative
    comparisons = summarise(results, KS, candidates=schemes + hybrids, references=references, clusters=gold["test"],
                            seed=config.seed)
    decision = verdict(results, selection, KS, clusters=gold["test"], seed=config.seed) if selection else None
    hybrid_decision = verdict(results, {**selection, "generative": selection["hybrid"]}, KS, clusters=gold["test"],
                              seed=config.seed) if selection and selection.get("hybrid") else None
    write_json(out / "ablation.json", {**results, "comparisons": comparisons, "query_sets": others,
                                       **({"selection": selection, "verdict": decision} if selection else {}),
                                       **({"verdict_hybrid": hybrid_decision} if hybrid_decision else {}),
                                       **({"provenance": provenance} if provenance else {})})
    save_config(out, config, name="ablation_config.json")
    columns = ["retriever"] + [f"R@{k}" for k in KS] + ["train_s", "latency_ms", "index_kB", "num_queries"]
    rows = recall_rows(results, KS)
    if selection:
        columns.insert(1, "val R@1")
        for row in rows:
            name = row["retriever"]
            if name in by_set["val"]:
                row["val R@1"] = f"{100 * by_set['val'][name]['recall@1']:.1f}" + \
                    (" (selected)" if name in (selection["generative"], selection["non_generative"],
                                               selection.get("hybrid")) else "")
    paired = paired_markdown(comparisons, KS, "non-generative row")
    if selection:
        paired = paired.replace("the best non-generative row by R@1", "the non-generative row selected on val")
    rest = paired + (verdict_markdown(decision, KS) if decision else "") + \
        (verdict_markdown(hybrid_decision, KS) if hybrid_decision else "")
    if hybrids:
        rest += "\nHybrids (the scheme's top generated candidates re-scored by the baseline; fusion weight chosen on " \
                "val, 0 = generative order, 1 = the baseline's order):\n\n" + "\n".join(
                    f"- {name}: weight {results[name]['weight']} ({results[name]['fusion']}, depth "
                    f"{results[name]['depth']}, candidates: {POOL_WORDS[results[name].get('pool', 'first')]})"
                    for name in hybrids) + "\n"
    for name in [*schemes, *hybrids]:
        if "training_seeds" in results[name]:
            rest += seeds_markdown(name, results[name]["training_seeds"], selection["split"] if selection else None)
    if provenance and provenance.get("fallbacks"):
        rest += "\nFallbacks (what ran other than asked):\n\n" + "\n".join(
            f"- {f['where']}: {f['what']} ran as {f['used']}, not {f['wanted']} ({f['reason']})"
            for f in provenance["fallbacks"]) + "\n"
    for query_set in sets[1:]:
        set_rows = recall_rows({k: v for k, v in others[query_set.name].items() if k != "comparisons"}, KS)
        rest += f"\nQuery set `{query_set.name}` ({query_set.source}):\n\n" + \
            markdown_table(set_rows, ["retriever"] + [f"R@{k}" for k in KS] + ["num_queries", "corpus_size"])
    protocol = f"Protocol `{provenance['protocol']}`, pseudo-queries from `{provenance['pseudo_queries']['generator']}`; " \
        if provenance else ""
    write_table(out / "ablation.md", "Identifier ablation", rows, columns,
                notes=f"{protocol}Recall in % on held-out test queries, [95% bootstrap interval over gold images]; "
                      "bm25 = the lexical control over the same pseudo-queries the generative rows memorise; "
                      "train_s = training wall time; latency in ms/query; index_kB = trie / index size.", extra=rest)
    plot_recall_bars(results, KS, out / "ablation.png", title="Identifier schemes: Recall@K (95% CI)")
    return markdown_table(rows, columns) + rest


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
    run = Path(config.run)
    timer = P.StageTimer()
    started = time.perf_counter()
    dataset = P.stage_dataset(run, timer, dataset=config.dataset, limit=config.limit, seed=split_seed(config),
                              benchmark=config.benchmark, image_root=config.image_root, force=config.force,
                              group_by=config.group_by)
    sets = query_sets(dataset, max_queries=config.max_queries, select_on=config.select_on,
                      natural_queries=config.natural_queries)
    features = P.stage_features(run, dataset, config.encoder, timer,
                                tokens=bool(config.schemes) and config.vision_space == "features"
                                and P.model_visual_tokens(config.model) > 1,
                                views=config.i2id_views if config.schemes else 1, seed=config.seed, stages=stages)
    pseudo_queries, pq_provenance = P.stage_pseudo_queries(
        run, dataset, features, timer, protocol=config.protocol, generator=config.pseudo_query_generator,
        options=key_values(config.pseudo_queries, "--pseudo-queries"))
    by_set: dict[str, dict[str, dict]] = {query_set.name: {} for query_set in sets}

    def add(name: str, results: dict[str, dict]) -> None:
        for set_name, result in results.items():
            by_set[set_name][name] = result

    artefacts = {}
    for scheme in config.schemes:
        artefacts[scheme] = scheme_artefacts(run, scheme, dataset, features, pseudo_queries, config, timer,
                                             [query_set.split for query_set in sets], stages)
        add(scheme, run_scheme(run, scheme, dataset, artefacts[scheme], config, timer, sets, stages))
    dataset_json = RunLayout(run).dataset
    for kind in [*baselines, *CONTROLS]:
        scored = stage_baseline(run, kind, dataset_json, dataset, timer, encoder=config.encoder, sets=sets,
                                seed=config.seed, features=features)
        scored["test"]["train_s"] = stage_seconds(run, timer, f"build/{kind}", kind)  # training + indexing
        add(kind, scored)
    for kind in config.hybrid:
        for scheme in config.schemes:
            add(hybrid_name(scheme, kind), score_hybrid(run, scheme, kind, dataset, config, timer, sets))
    add("random", {query_set.name: P.random_baseline(dataset, query_set, seed=config.seed) for query_set in sets})
    if config.training_seeds:
        from grace.experiments.selection import select_on

        schemes, non_generative = row_kinds(by_set["test"])
        chosen = select_on(by_set["val"], schemes, non_generative)["generative"] if "val" in by_set else None
        for scheme in [chosen] if chosen else schemes:
            by_set["test"][scheme]["training_seeds"] = run_training_seeds(
                run, scheme, dataset, artefacts[scheme], config, timer, sets[0], by_set["test"][scheme], stages)
            for kind in config.hybrid:  # the hybrid over every seed's checkpoint
                name = hybrid_name(scheme, kind)
                by_set["test"][name]["training_seeds"] = run_hybrid_seeds(
                    run, scheme, kind, dataset, config, timer, sets, by_set["test"][name])
    provenance = run_provenance(config, pq_provenance, sets)
    tables = write_ablation(run, by_set, sets, config, provenance)
    print(tables, end="")
    print(f"stage seconds: { {k: round(v, 1) for k, v in timer.seconds.items()} }")
    if config.publish is not None:
        from grace.experiments.publish import publish

        paths = publish(run, config, tables, time.perf_counter() - started, timer)
        print(f"published {', '.join(map(str, paths))}")
    return by_set["test"]
