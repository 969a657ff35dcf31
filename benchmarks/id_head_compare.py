"""The identifier head against the full head, on the same queries: two runs of one scheme that differ only in
``output_head`` (``full``: log-softmax over the whole vocabulary; ``ids``: over the identifier tokens, in
training and decoding), each model scored on val, the natural val queries and test.

Reports per query set: Recall@K with 95% intervals (bootstrap over gold images), the paired difference
ids − full with its interval and McNemar p, how often the two top-1 answers agree, and queries/s of both
models timed in this run (interleaved batches, after a warm-up), with their ratio. Training seconds come from
each run's table (``train_s``). With ``--seeds``, both runs' retrainings under those training seeds
(``grace ablate --training-seeds``: RUN/ckpt/<scheme>@seed<s>) are scored too: each head's recall per seed with
mean and sd, the paired difference per seed, and top-1 agreement between heads next to the agreement between two
seeds of the same head (the reference for "the same answers": two trainings of one head are separate models).
The runs' protocol, query selection and seeds are copied from their provenance into the report.

    python benchmarks/id_head_compare.py --full runs/idhead-full --ids runs/idhead-ids --scheme structured \\
        --natural-queries benchmarks/natural_queries/emoji-val.json --seeds 1 2 --out docs/results/id-head-emoji
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

KS = (1, 5, 10)
HEADS = ("full", "ids")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", type=Path, required=True, help="grace ablate run folder trained with output_head full")
    p.add_argument("--ids", type=Path, required=True, help="the same run trained with output_head ids")
    p.add_argument("--scheme", default="structured")
    p.add_argument("--dataset", type=Path, default=None, help="dataset.json (default FULL/data/dataset.json)")
    p.add_argument("--natural-queries", type=Path, default=None, help="hand-written val queries (JSON)")
    p.add_argument("--num-beams", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="*", default=[],
                   help="training seeds retrained in both runs (RUN/ckpt/<scheme>@seed<s>), scored beside seed 0")
    p.add_argument("--out", type=Path, required=True, help="write OUT.md and OUT.json")
    return p.parse_args(argv)


def _model_names(args: argparse.Namespace) -> dict[int, str]:
    """Checkpoint folder per training seed: the run's own (``args.base_seed``) and ``grace ablate``'s retrainings."""
    from grace.experiments.rows import generative

    return {args.base_seed: args.scheme, **{s: generative(args.scheme, s).name for s in args.seeds if s != args.base_seed}}


def _retrievers(args: argparse.Namespace, split: str) -> dict[tuple[str, int], object]:
    """A generative retriever per (head, training seed), each checked to hold the head it is filed under."""
    from grace.identifiers import IdentifierMap, Trie
    from grace.infer.retriever import GenerativeRetriever
    from grace.model import load_pretrained
    from grace.run_layout import RunLayout

    out = {}
    for head, (seed, name) in itertools.product(HEADS, _model_names(args).items()):
        run = getattr(args, head)
        model, tokenizer = load_pretrained(RunLayout(run).export(name))
        if model.config.output_head != head:
            raise SystemExit(f"{run}/ckpt/{name}: its model's output_head is {model.config.output_head}, not {head}")
        out[head, seed] = GenerativeRetriever(model, tokenizer, IdentifierMap.load(RunLayout(run).ids(args.scheme)),
                                              Trie.load(RunLayout(run).trie(args.scheme, split)),
                                              num_beams=args.num_beams, batch_size=args.batch_size)
    return out


def _top1_agreement(a: list[list[str]], b: list[list[str]]) -> float:
    same = [x[0] == y[0] for x, y in zip(a, b) if x and y]
    return sum(same) / len(same)


def score_set(args: argparse.Namespace, query_set) -> dict:
    """Both heads on one query set: rankings, interleaved timing, recall with intervals, paired test, top-1;
    then every training seed of both heads."""
    from grace.infer.evaluate import metrics
    from grace.retriever import Query
    from grace.stats import add_intervals, paired_comparison

    retrievers = _retrievers(args, query_set.split)
    queries = [Query(text=t) for t in query_set.texts]
    batches = [queries[i:i + args.batch_size] for i in range(0, len(queries), args.batch_size)]
    for head in HEADS:  # warm-up
        retrievers[head, args.base_seed].search(batches[0], max(KS))
    rankings = {key: [] for key in retrievers}
    seconds = {h: 0.0 for h in HEADS}
    base = args.base_seed
    for batch in batches:  # the base seed of both heads timed batch by batch, interleaved: drift hits both alike
        for head in HEADS:
            start = time.perf_counter()
            hits = retrievers[head, base].search(batch, max(KS))
            seconds[head] += time.perf_counter() - start
            rankings[head, base].extend([h.image_id for h in row] for row in hits)
    for key, retriever in retrievers.items():  # the other seeds, untimed
        if key[1] != base:
            rankings[key] = [[h.image_id for h in row] for row in retriever.search(queries, max(KS))]
    scored = {}
    for key, ranked in rankings.items():
        res = metrics(ranked, query_set.gold, [0.0] * len(queries), KS)
        scored[key] = add_intervals(res, KS, clusters=query_set.gold)
    rows = {h: dict(scored[h, base], queries_per_s=len(queries) / seconds[h]) for h in HEADS}

    def paired(seed: int) -> dict:
        return {f"R@{k}": paired_comparison(scored["ids", seed]["gold_ranks"], scored["full", seed]["gold_ranks"],
                                            k, clusters=query_set.gold).as_dict() for k in KS}

    seeds = sorted({seed for _, seed in rankings})
    out = {"rows": rows, "ids_vs_full": paired(base),
           "top1_agreement": _top1_agreement(rankings["ids", base], rankings["full", base]),
           "qps_ratio": rows["ids"]["queries_per_s"] / rows["full"]["queries_per_s"],
           "queries": query_set.provenance()}
    if len(seeds) > 1:
        out["seeds"] = {
            "seeds": seeds,
            "recall": {h: {f"recall@{k}": {str(s): float(scored[h, s][f"recall@{k}"]) for s in seeds} for k in KS}
                       for h in HEADS},
            "ids_vs_full": {str(s): paired(s)["R@1"] for s in seeds},
            "top1_agreement": {
                "ids_vs_full": {str(s): _top1_agreement(rankings["ids", s], rankings["full", s]) for s in seeds},
                **{f"{h}_vs_{h}": {f"{a}-{b}": _top1_agreement(rankings[h, a], rankings[h, b])
                                   for a, b in itertools.combinations(seeds, 2)} for h in HEADS}}}
    return out


def _base_seed(provenance: dict) -> int:
    """The training seed of the runs' own checkpoints (``grace ablate --seed``); both runs must share it."""
    seeds = {h: (p.get("seeds", {}).get("training") or [0])[0] for h, p in provenance.items()}
    if len(set(seeds.values())) != 1:
        raise SystemExit(f"the two runs were trained under different --seed: {seeds}")
    return next(iter(seeds.values()))


def _train_seconds(run: Path, scheme: str) -> float | None:
    """The scheme's training time as its run's table records it (``train_s``), or None."""
    from grace.io_utils import read_json
    from grace.run_layout import RunLayout

    path = RunLayout(run).ablation
    return read_json(path).get(scheme, {}).get("train_s") if path.is_file() else None


def main(argv: list[str] | None = None) -> dict:
    from grace.data_process.dataset import load_karpathy
    from grace.experiments.query_sets import load_natural_queries, split_queries
    from grace.io_utils import atomic_write_text, write_json
    from grace.provenance import script_provenance, trained_run_provenance

    args = _args(argv)
    provenance = {h: trained_run_provenance(getattr(args, h)) for h in HEADS}
    args.base_seed = _base_seed(provenance)
    dataset = load_karpathy(args.dataset or args.full / "data" / "dataset.json")
    sets = [split_queries(dataset, "val"), split_queries(dataset, "test")]
    if args.natural_queries:
        sets.insert(1, load_natural_queries(args.natural_queries, dataset))
    started = time.perf_counter()
    report = {"scheme": args.scheme, "num_beams": args.num_beams, "sets": {s.name: score_set(args, s) for s in sets},
              "train_s": {h: _train_seconds(getattr(args, h), args.scheme) for h in HEADS},
              **script_provenance(__file__, argv),
              "runs": {h: str(getattr(args, h)) for h in HEADS},
              "run_provenance": provenance}
    report["wall_s"] = time.perf_counter() - started
    write_json(args.out.with_suffix(".json"), report)
    atomic_write_text(args.out.with_suffix(".md"), render(report))
    print(render(report))
    return report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render(report: dict) -> str:
    from grace.provenance import provenance_lines

    lines = [f"# Identifier head (output_head ids) vs full head: {report['scheme']} ids, {report['num_beams']} beams\n",
             ("| query set | head | R@1 [95% CI] | R@5 | R@10 | q/s | ids − full R@1 [95% CI] | p (McNemar) "
             "| top-1 agreement | q/s ratio |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in report["sets"].items():
        for head in HEADS:
            row = res["rows"][head]
            lo, hi = row["recall@1_ci"]
            cells = [name, head, f"{_pct(row['recall@1'])} [{_pct(lo)}, {_pct(hi)}]", _pct(row["recall@5"]),
                     _pct(row["recall@10"]), f"{row['queries_per_s']:.1f}"]
            if head == "ids":
                d = res["ids_vs_full"]["R@1"]
                cells += [f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]",
                          f"{d['p_mcnemar']:.3f}", f"{100 * res['top1_agreement']:.1f}%", f"{res['qps_ratio']:.2f}x"]
            else:
                cells += ["", "", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    lines += _seed_lines(report)
    train = {h: (f"{s:.0f} s" if s else "not recorded") for h, s in report["train_s"].items()}
    ratio = report["train_s"]["full"] / report["train_s"]["ids"] if all(report["train_s"].values()) else None
    lines += ["", f"- training seconds (train/{report['scheme']} stage, each run alone): full {train['full']}, "
              f"ids {train['ids']}" + (f" (ratio full/ids {ratio:.2f})" if ratio else ""),
              "- runs: " + ", ".join(f"{h} `{run}`" for h, run in report["runs"].items()),
              *[f"- {h} run: protocol `{p.get('protocol')}`, chosen on `{p.get('selected_on')}`, training seeds "
                f"{p.get('seeds', {}).get('training')}, trained at {p.get('git', {}).get('commit', '?')[:12]}"
                for h, p in report.get("run_provenance", {}).items() if p],
              *provenance_lines(report),
              ("- q/s: both models on the same batches, interleaved batch by batch after a warm-up batch each; "
              "recall intervals: percentile bootstrap over gold images; paired test: same resamples for both heads.")]
    return "\n".join(lines) + "\n"


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def _seed_lines(report: dict) -> list[str]:
    """Per query set: each head's R@1 per training seed, mean ± sd, the paired difference per seed, and top-1
    agreement between the heads beside the agreement between two seeds of one head."""
    sets = {name: res["seeds"] for name, res in report["sets"].items() if "seeds" in res}
    if not sets:
        return []
    seeds = next(iter(sets.values()))["seeds"]
    lines = ["", f"Training seeds {', '.join(map(str, seeds))} of both heads (same ids, data and queries):", "",
             ("| query set | head | R@1 per seed | R@1 mean ± sd | R@10 mean ± sd | ids − full R@1 per seed [95% CI] "
             "| top-1 agreement: ids vs full (same seed) | same head, two seeds |"), "|---|---|---|---|---|---|---|---|"]
    for name, res in sets.items():
        for head in HEADS:
            r1, r10 = res["recall"][head]["recall@1"], res["recall"][head]["recall@10"]
            cells = [name, head, " / ".join(_pct(r1[str(s)]) for s in seeds), _mean_sd(list(r1.values())),
                     _mean_sd(list(r10.values()))]
            if head == "ids":
                agree = res["top1_agreement"]
                cells += ["; ".join(f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
                                    for d in res["ids_vs_full"].values()),
                          " / ".join(f"{100 * a:.1f}%" for a in agree["ids_vs_full"].values())]
            else:
                cells += ["", ""]
            pairs = res["top1_agreement"][f"{head}_vs_{head}"]
            cells.append(" / ".join(f"{100 * a:.1f}%" for a in pairs.values()) + f" (seed pairs {', '.join(pairs)})")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
