"""Compare generative retrievers trained in separate ``grace ablate --publish`` runs on the SAME queries.

Each input is a published ``<benchmark>-<model>.json``; every scheme row becomes ``<model>/<scheme>``. The
table gives Recall@K with its 95% bootstrap interval, the training time, R@1 per training hour on this
machine, and a paired bootstrap (same queries, resampled by gold image) of every row against the best one
(or against ``--reference``, e.g. an ablation's control).

    python benchmarks/compare_runs.py runs/lmtrain/results/emoji-*.json --dataset runs/lm-full/data/dataset.json \
        --title "lm_training on the first 600 emoji" --out docs/results/lm-training-emoji600
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KS = (1, 5, 10)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="published ablation JSONs (same dataset and queries), each optionally "
                   "LABEL=PATH to name its rows LABEL/<scheme> (default: its model)")
    p.add_argument("--dataset", type=Path, required=True, help="their dataset.json (gold images for the bootstrap)")
    p.add_argument("--baseline", default="clip_faiss", help="baseline row to carry over (from the first input)")
    p.add_argument("--title", default="Generative retrievers compared on the same queries")
    p.add_argument("--out", type=Path, required=True, help="write OUT.md and OUT.json")
    p.add_argument("--note", action="append", default=[], help="a line for the notes under the table (repeatable)")
    p.add_argument("--reference", default=None, help="pair every row against this row (LABEL/scheme, e.g. the "
                   "control of an ablation) instead of the best generative row by R@1")
    p.add_argument("--query-set", default="test", help="the query set whose rows are compared: test, or another "
                   "set every input scored (val, val-natural: its `query_sets`)")
    p.add_argument("--rows", nargs="*", default=[], help="rows taken from every input besides the schemes, each "
                   "labelled LABEL/<row> (e.g. bm25 over each run's own pseudo-queries, or a hybrid)")
    return p.parse_args(argv)


def _labelled(arg: str) -> tuple[str | None, Path]:
    label, sep, path = arg.partition("=")
    return (label, Path(path)) if sep and not Path(arg).is_file() else (None, Path(arg))


def _on(data: dict, query_set: str, path: Path) -> tuple[dict, dict]:
    """(rows, query provenance) of one published ablation on ``query_set``."""
    if query_set == "test":
        return data, data["provenance"]
    if query_set not in data.get("query_sets", {}) or query_set not in data["provenance"].get("query_sets", {}):
        raise SystemExit(f"{path}: no query set {query_set!r} (it has: {', '.join(data.get('query_sets', {})) or 'none'})")
    return data["query_sets"][query_set], {"queries": data["provenance"]["query_sets"][query_set]}


def collect(inputs: list[str], baseline: str, query_set: str = "test",
            extra: tuple[str, ...] = ()) -> tuple[dict[str, dict], dict[str, dict]]:
    """``(rows, provenance)``: ``label/scheme`` (and ``label/<row>`` for each of ``extra``) → result on
    ``query_set`` (plus the baseline once), and each input's provenance. Every input must have been scored on
    the same query ids and gold images as the first (checked by id)."""
    from grace.experiments.configs import SCHEMES
    from grace.provenance import same_queries

    rows, provenance, first = {}, {}, None
    for arg in inputs:
        label, path = _labelled(arg)
        data = json.loads(path.read_text())
        model = label or data["provenance"]["config"].get("model", path.stem)
        model = Path(model).stem if model.endswith(".json") else model
        if model in provenance:
            raise SystemExit(f"{path}: a second input named {model!r}; name inputs LABEL=PATH")
        provenance[model] = data["provenance"]
        results, queries = _on(data, query_set, path)
        first = first or (path, queries)
        mismatch = same_queries(first[1], queries)
        if mismatch:
            raise SystemExit(f"{path} vs {first[0]}: {mismatch}: not the same query set")
        for name, res in results.items():
            if name in extra and name != baseline:
                rows[f"{model}/{name}"] = res
            elif name in SCHEMES or (name == baseline and baseline not in rows):
                rows[name if name == baseline else f"{model}/{name}"] = res
    return rows, provenance


def main(argv: list[str] | None = None) -> dict:
    from grace.data_process.dataset import load_karpathy
    from grace.experiments.query_sets import split_queries
    from grace.experiments.report import markdown_table, paired_markdown, recall_rows
    from grace.io_utils import atomic_write_text, write_json
    from grace.provenance import provenance_lines, script_provenance
    from grace.stats import summarise

    args = _args(argv)
    rows, provenance = collect(args.results, args.baseline, args.query_set, tuple(args.rows))
    dataset = load_karpathy(args.dataset)
    recorded = _on(json.loads(_labelled(args.results[0])[1].read_text()), args.query_set, args.results[0])[1]
    gold = recorded["queries"]["gold"]
    if args.query_set == "test" and gold != split_queries(dataset).gold:
        raise SystemExit(f"{args.dataset}: its test queries' gold images are not the results' (another dataset?)")
    if not set(gold) <= set(dataset.image_ids()):
        raise SystemExit(f"{args.dataset}: the {args.query_set} queries' gold images are not all in it (another dataset?)")
    generative = [name for name in rows if name != args.baseline]
    if args.reference is not None and args.reference not in rows:
        raise SystemExit(f"--reference {args.reference!r} is not a row; rows: {', '.join(rows)}")
    references = [args.reference] if args.reference else generative
    comparisons = summarise(rows, KS, candidates=generative, references=references, clusters=gold)
    table = recall_rows(rows, KS)
    for row in table:
        train_h = row.get("train_s", 0.0) / 3600
        row["R@1 per train hour"] = 100 * rows[row["retriever"]]["recall@1"] / train_h if train_h else ""
    columns = ["retriever", *[f"R@{k}" for k in KS], "train_s", "R@1 per train hour", "latency_ms", "num_queries"]
    made = script_provenance(__file__, argv)
    lines = [f"# {args.title}\n", f"Query set: `{args.query_set}` ({len(gold)} queries, paired by id).\n",
             markdown_table(table, columns),
             paired_markdown(comparisons, KS, "generative row", chosen=args.reference is not None), "",
             *provenance_lines(made),
             "- each row's training command is in the provenance of its input JSON: "
             + ", ".join(f"`{_labelled(p)[1]}`" for p in args.results),
             "- R@1 per train hour: R@1 points / hours of training on this machine (all its cores).",
             *[f"- {note}" for note in args.note]]
    report = {"query_set": args.query_set, "rows": rows, "comparisons": comparisons, "provenance": provenance, **made}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    write_json(args.out.with_suffix(".json"), report)
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
