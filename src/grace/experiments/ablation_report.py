"""The ablation's report: the table, the paired comparisons and verdicts, the seed spreads, the hybrid rows and the
provenance of ``grace ablate`` (RUN/results/ablation.{json,md,png}), from the rows the run scored."""

from __future__ import annotations

from pathlib import Path

from grace.experiments.configs import AblateConfig, split_seed
from grace.experiments.rows import Row, names
from grace.infer.evaluate import DEFAULT_KS as KS
from grace.io_utils import read_json, save_config, write_json
from grace.run_layout import RunLayout

#: how the table names a hybrid's candidate pool (``grace.fusion.POOLS``)
POOL_WORDS = {"first": "the beam's", "union": "the beam's and the baseline's"}


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


def run_fallbacks(config: AblateConfig) -> list[dict]:
    """What ran other than asked, in this process and in each scheme's training (its metrics.json), labelled."""
    from grace.fallbacks import recorded_fallbacks

    found = [{**f, "where": "evaluation"} for f in recorded_fallbacks()]
    for metrics in sorted((RunLayout(config.run).root / "ckpt").glob("*/metrics.json")):
        for fallback in read_json(metrics).get("fallbacks", []):
            found.append({**fallback, "where": f"train/{metrics.parent.name}"})
    return found


def write_ablation(run: Path, by_set: dict[str, dict[str, dict]], sets: list, config, table: list[Row],
                   provenance: dict | None = None) -> str:
    """ablation.json / ablation.md / ablation.png of the ``table``'s rows (scored in ``by_set``: query set → row
    name → result); returns the Markdown tables.

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
    schemes, hybrids = names(table, "generative"), names(table, "hybrid")
    non_generative = names(table, "baseline", "control")
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
    paired = paired_markdown(comparisons, KS, "non-generative row", selected_on="val" if selection else "")
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
