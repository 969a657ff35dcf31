"""Beam sweep: Recall@1/5/10 and latency of a run's generative row and of its hybrid (the generated candidates
re-scored by the dense retriever and fused with the weight the run chose on val), at each number of beams.

At ``b`` beams the generative retriever returns its ``b`` beams (R@K for K > b counts only those, so R@10 at one
beam is R@1), and the hybrid re-ranks exactly those ``b`` candidates (with a ``union`` pool, together with the dense
retriever's top ``depth``): a ``first``-pool hybrid's recall is bounded by the beam's.
Both are scored on val and test from the same generated candidates; latency is per query over the whole set
(the generation, and the generation plus the dense re-scoring). Nothing is chosen on test: the table marks the
beam count with the best val R@1 of each row, and the plot shows both sets.

    python benchmarks/beam_sweep.py --run runs/emoji --scheme structured --hybrid structured+clip_faiss \\
        --beams 1 5 10 20 50 --out docs/results/beam-sweep-emoji
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

KS = (1, 5, 10)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a grace ablate run folder")
    p.add_argument("--scheme", default="structured", help="the generative row (RUN/ckpt/<scheme>/export)")
    p.add_argument("--hybrid", default=None, help="the hybrid row: RUN/hybrid/<name> (e.g. structured+clip_faiss)")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 5, 10, 20, 50])
    p.add_argument("--sets", nargs="+", default=["val", "test"], help="query sets: the splits' own texts")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, required=True, help="write OUT.md, OUT.json and OUT.png")
    args = p.parse_args(argv)
    if min(args.beams) < 1:
        raise SystemExit("--beams must be at least 1")
    return args


class SweptRun:
    """The run's generative model, loaded once, and for each query set its retrievers over that set's corpus."""

    def __init__(self, args: argparse.Namespace):
        from grace.identifiers.idmap import IdentifierMap
        from grace.model.factory import load_pretrained
        from grace.run_layout import RunLayout

        self.args, self.layout = args, RunLayout(args.run)
        from grace.experiments.retrievers import query_encoder

        self.model, self.tokenizer = load_pretrained(self.layout.export(args.scheme))
        self.query_media = query_encoder(self.layout.export(args.scheme))
        self.idmap = IdentifierMap.load(self.layout.ids(args.scheme))

    def for_split(self, split: str):
        """The generative retriever over ``split``'s trie, and the hybrid's config and second retriever (or None)."""
        from grace.config import dataclass_from_dict
        from grace.experiments.retrievers import load_retriever
        from grace.fusion import HybridConfig
        from grace.identifiers.trie import Trie
        from grace.infer.retriever import GenerativeRetriever
        from grace.io_utils import read_json

        args, layout = self.args, self.layout
        trie = Trie.load(layout.trie(args.scheme, split))
        generative = GenerativeRetriever(self.model, self.tokenizer, self.idmap, trie, batch_size=args.batch_size,
                                         query_media=self.query_media)
        if not args.hybrid:
            return generative, None, None
        path = layout.hybrid(args.hybrid) / ("hybrid.json" if split == "test" else f"hybrid-{split}.json")
        config = dataclass_from_dict(HybridConfig, read_json(path), source=str(path))
        first_export = config.first.partition(":")[2]
        if Path(first_export).resolve() != layout.export(args.scheme).resolve():
            raise SystemExit(f"{path}: its first retriever is {config.first}, not the {args.scheme} row")
        return generative, config, load_retriever(config.second)


def sweep_set(args: argparse.Namespace, swept: SweptRun, query_set) -> dict:
    """Every beam count on one query set: both rows' recall (with intervals) and per-query latency."""
    from grace.fusion import fuse, pool_candidates
    from grace.infer.evaluate import metrics
    from grace.retriever import Query
    from grace.stats import add_intervals

    generative, config, second = swept.for_split(query_set.split)
    queries = [Query(text=t) for t in query_set.texts]
    generative.num_beams = min(args.beams)
    generative.search(queries[:args.batch_size], min(args.beams))  # warm-up
    rows = {}
    for beams in args.beams:
        generative.num_beams = beams
        start = time.perf_counter()
        hits = generative.search(queries, beams)
        generated_s = time.perf_counter() - start
        ranked = [[h.image_id for h in row] for row in hits]
        row = {"generative": metrics(ranked, query_set.gold, [1000 * generated_s / len(queries)], KS)}
        if config is not None:
            start = time.perf_counter()
            candidates = pool_candidates(queries, hits, second, pool=config.pool, depth=config.depth)
            rescore_s = time.perf_counter() - start
            fused = fuse(candidates, config.weight, config.fusion)
            row["hybrid"] = metrics([[h.image_id for h in r] for r in fused], query_set.gold,
                                    [1000 * (generated_s + rescore_s) / len(queries)], KS)
        for result in row.values():
            add_intervals(result, KS, clusters=query_set.gold)
        rows[str(beams)] = row
        print(f"{query_set.name} beams {beams}: " + ", ".join(
            f"{name} R@1 {100 * r['recall@1']:.1f} R@10 {100 * r['recall@10']:.1f} {r['latency_ms']:.1f} ms/q"
            for name, r in row.items()), flush=True)
    return {"beams": rows, "queries": query_set.provenance(),
            "hybrid": None if config is None else {"name": args.hybrid, "weight": config.weight, "pool": config.pool,
                                                   "depth": config.depth,
                                                   "fusion": config.fusion, "second": config.second}}


def main(argv: list[str] | None = None) -> dict:
    from grace.data_process.dataset import load_karpathy
    from grace.experiments.query_sets import split_queries
    from grace.io_utils import atomic_write_text, write_json
    from grace.provenance import script_provenance, trained_run_provenance
    from grace.run_layout import RunLayout

    args = _args(argv)
    dataset = load_karpathy(RunLayout(args.run).dataset)
    started = time.perf_counter()
    swept = SweptRun(args)
    report = {"run": str(args.run), "scheme": args.scheme, "hybrid": args.hybrid, "beams": args.beams,
              "sets": {s: sweep_set(args, swept, split_queries(dataset, s)) for s in args.sets},
              "run_provenance": trained_run_provenance(args.run), **script_provenance(__file__, argv)}
    report["wall_s"] = time.perf_counter() - started
    for res in report["sets"].values():  # per-query ranks are for the intervals above, not for the file
        for row in res["beams"].values():
            for result in row.values():
                result.pop("gold_ranks", None)
    write_json(args.out.with_suffix(".json"), report)
    atomic_write_text(args.out.with_suffix(".md"), render(report))
    plot(report, args.out.with_suffix(".png"))
    print(render(report))
    return report


def _best_on_val(report: dict, name: str) -> str | None:
    val = report["sets"].get("val")
    if not val:
        return None
    scored = [(row[name]["recall@1"], row[name]["recall@10"], -int(b)) for b, row in val["beams"].items() if name in row]
    return str(-max(scored)[2]) if scored else None


def run_line(p: dict) -> str:
    """How the swept run was made, from its own table (empty when it has none)."""
    if not p:
        return ""
    pq = p.get("pseudo_queries", {})
    return (f": protocol `{p.get('protocol')}`, chosen on `{p.get('selected_on')}`, training seeds "
            f"{p.get('seeds', {}).get('training')}, pseudo-queries {pq.get('generator')} (digest {pq.get('digest')}), "
            f"trained at {(p.get('git', {}).get('commit') or '?')[:12]}")


def render(report: dict) -> str:
    from grace.provenance import provenance_lines

    names = ["generative"] + (["hybrid"] if report["hybrid"] else [])
    label = {"generative": report["scheme"], "hybrid": report["hybrid"]}
    lines = [f"# Beam sweep: {report['scheme']}" + (f" and {report['hybrid']}" if report["hybrid"] else "") + "\n",
             "| set | row | beams | R@1 [95% CI] | R@5 | R@10 | ms/query |", "|---|---|---|---|---|---|---|"]
    best = {name: _best_on_val(report, name) for name in names}
    for set_name, res in report["sets"].items():
        for name in names:
            for beams, row in res["beams"].items():
                r = row[name]
                lo, hi = r["recall@1_ci"]
                mark = " (best on val)" if beams == best[name] else ""
                lines.append(f"| {set_name} | {label[name]} | {beams}{mark} | {100 * r['recall@1']:.1f} "
                             f"[{100 * lo:.1f}, {100 * hi:.1f}] | {100 * r['recall@5']:.1f} | "
                             f"{100 * r['recall@10']:.1f} | {r['latency_ms']:.1f} |")
    hybrid = next(iter(report["sets"].values()))["hybrid"]
    lines += [""]
    if hybrid:
        pool = f" joined with the re-scorer's own top {hybrid.get('depth')}" if hybrid.get("pool") == "union" else ""
        lines.append(f"- hybrid: the {report['scheme']} beam's candidates{pool} re-scored by `{hybrid['second']}`, "
                     f"{hybrid['fusion']} fusion with weight {hybrid['weight']} (chosen on val by the run)")
    lines += ["- at b beams a row returns b candidates: R@K for K > b counts only those", f"- run: `{report['run']}`"
              + run_line(report.get("run_provenance", {})), *provenance_lines(report)]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_t) = plt.subplots(1, 2, figsize=(10, 4))
    for set_name, res in report["sets"].items():
        beams = [int(b) for b in res["beams"]]
        for name, row_style in (("generative", "-"), ("hybrid", "--")):
            if name not in next(iter(res["beams"].values())):
                continue
            label = report["scheme"] if name == "generative" else report["hybrid"]
            for k, marker in ((1, "o"), (10, "s")):
                ax_r.plot(beams, [100 * r[name][f"recall@{k}"] for r in res["beams"].values()], row_style,
                          marker=marker, label=f"{set_name} {label} R@{k}")
            if set_name == "test":
                ax_t.plot(beams, [r[name]["latency_ms"] for r in res["beams"].values()], row_style, marker="o",
                          label=label)
    for ax, ylabel in ((ax_r, "recall (%)"), (ax_t, "ms / query (test)")):
        ax.set_xscale("log")
        ax.set_xticks(report["beams"], [str(b) for b in report["beams"]])
        ax.set_xlabel("beams")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
