"""The identifier head against the full head, on the same queries: two runs of one scheme that differ only in
``output_head`` (``full``: log-softmax over the whole vocabulary; ``ids``: over the identifier tokens, in
training and decoding), each model scored on val, the natural val queries and test.

Reports per query set: Recall@K with 95% intervals (bootstrap over gold images), the paired difference
ids − full with its interval and McNemar p, how often the two top-1 answers agree, and queries/s of both
models timed in this run (interleaved batches, after a warm-up), with their ratio. Training seconds come from
each run's table (``train_s``).

    python benchmarks/id_head_compare.py --full runs/idhead-full --ids runs/idhead-ids --scheme structured \\
        --natural-queries benchmarks/natural_queries/emoji-val.json --out docs/results/id-head-emoji
"""

from __future__ import annotations

import argparse
import shlex
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
    p.add_argument("--out", type=Path, required=True, help="write OUT.md and OUT.json")
    return p.parse_args(argv)


def _retrievers(args: argparse.Namespace, split: str) -> dict:
    from grace.identifiers import IdentifierMap, Trie
    from grace.infer.pipeline import trie_dir
    from grace.infer.retriever import GenerativeRetriever
    from grace.model import load_pretrained

    out = {}
    for head in HEADS:
        run = getattr(args, head)
        model, tokenizer = load_pretrained(run / "ckpt" / args.scheme / "export")
        if model.config.output_head != head:
            raise SystemExit(f"{run}: its model's output_head is {model.config.output_head}, not {head}")
        out[head] = GenerativeRetriever(model, tokenizer, IdentifierMap.load(run / "ids" / args.scheme),
                                        Trie.load(trie_dir(run, args.scheme, split)), num_beams=args.num_beams,
                                        batch_size=args.batch_size)
    return out


def score_set(args: argparse.Namespace, query_set) -> dict:
    """Both heads on one query set: rankings, interleaved timing, recall with intervals, paired test, top-1."""
    from grace.infer.evaluate import metrics
    from grace.retriever import Query
    from grace.stats import add_intervals, paired_comparison

    retrievers = _retrievers(args, query_set.split)
    queries = [Query(text=t) for t in query_set.texts]
    batches = [queries[i:i + args.batch_size] for i in range(0, len(queries), args.batch_size)]
    for retriever in retrievers.values():  # warm-up
        retriever.search(batches[0], max(KS))
    rankings = {h: [] for h in HEADS}
    seconds = {h: 0.0 for h in HEADS}
    for batch in batches:  # interleaved, so drift hits both heads alike
        for head, retriever in retrievers.items():
            start = time.perf_counter()
            hits = retriever.search(batch, max(KS))
            seconds[head] += time.perf_counter() - start
            rankings[head].extend([h.image_id for h in row] for row in hits)
    rows = {}
    for head in HEADS:
        res = metrics(rankings[head], query_set.gold, [seconds[head] * 1000 / len(queries)] * len(queries), KS)
        res["queries_per_s"] = len(queries) / seconds[head]
        rows[head] = add_intervals(res, KS, clusters=query_set.gold)
    paired = {f"R@{k}": paired_comparison(rows["ids"]["gold_ranks"], rows["full"]["gold_ranks"], k,
                                          clusters=query_set.gold).as_dict() for k in KS}
    top1 = [a[0] == b[0] for a, b in zip(rankings["ids"], rankings["full"]) if a and b]
    return {"rows": rows, "ids_vs_full": paired, "top1_agreement": sum(top1) / len(top1),
            "qps_ratio": rows["ids"]["queries_per_s"] / rows["full"]["queries_per_s"],
            "queries": query_set.provenance()}


def _train_seconds(run: Path, scheme: str) -> float | None:
    """The scheme's training time as its run's table records it (``train_s``), or None."""
    from grace.io_utils import read_json

    path = run / "results" / "ablation.json"
    return read_json(path).get(scheme, {}).get("train_s") if path.is_file() else None


def main(argv: list[str] | None = None) -> dict:
    from grace.data_process.dataset import load_karpathy
    from grace.infer.ablate import machine_description
    from grace.infer.query_sets import load_natural_queries, split_queries
    from grace.io_utils import atomic_write_text, write_json
    from grace.provenance import git_state

    args = _args(argv)
    dataset = load_karpathy(args.dataset or args.full / "data" / "dataset.json")
    sets = [split_queries(dataset, "val"), split_queries(dataset, "test")]
    if args.natural_queries:
        sets.insert(1, load_natural_queries(args.natural_queries, dataset))
    started = time.perf_counter()
    report = {"scheme": args.scheme, "num_beams": args.num_beams, "sets": {s.name: score_set(args, s) for s in sets},
              "train_s": {h: _train_seconds(getattr(args, h), args.scheme) for h in HEADS},
              "git": git_state(), "machine": machine_description(),
              "command": "python " + " ".join(shlex.quote(a) for a in ["benchmarks/id_head_compare.py",
                                                                       *(sys.argv[1:] if argv is None else argv)]),
              "runs": {h: str(getattr(args, h)) for h in HEADS}}
    report["wall_s"] = time.perf_counter() - started
    write_json(args.out.with_suffix(".json"), report)
    atomic_write_text(args.out.with_suffix(".md"), render(report))
    print(render(report))
    return report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render(report: dict) -> str:
    lines = [f"# Identifier head (output_head ids) vs full head: {report['scheme']} ids, {report['num_beams']} beams\n",
             "| query set | head | R@1 [95% CI] | R@5 | R@10 | q/s | ids − full R@1 [95% CI] | p (McNemar) "
             "| top-1 agreement | q/s ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
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
    train = {h: (f"{s:.0f} s" if s else "not recorded") for h, s in report["train_s"].items()}
    ratio = report["train_s"]["full"] / report["train_s"]["ids"] if all(report["train_s"].values()) else None
    lines += ["", f"- training seconds (train/{report['scheme']} stage, each run alone): full {train['full']}, "
              f"ids {train['ids']}" + (f" (ratio full/ids {ratio:.2f})" if ratio else ""),
              f"- command: `{report['command']}`",
              "- runs: " + ", ".join(f"{h} `{run}`" for h, run in report["runs"].items()),
              f"- commit: {report['git'].get('commit')} (dirty: {report['git'].get('dirty')})",
              f"- machine: {report['machine']}; wall {report['wall_s']:.0f} s",
              "- q/s: both models on the same batches, interleaved batch by batch after a warm-up batch each; "
              "recall intervals: percentile bootstrap over gold images; paired test: same resamples for both heads."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
