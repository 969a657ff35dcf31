"""Which pseudo-query generator describes the held-out images best, measured on val only.

Each generator's pseudo-queries (files of ``grace data pseudo-queries``, checked against the dataset's
digest) are scored by the lexical control: BM25 over each val image's pseudo-queries, one document per val
image, queried with the val images' own texts and with the hand-written natural val queries. A generative
model can only learn to retrieve a held-out image through those texts, so the generator whose texts find the
right image most often is the protocol's default candidate. Rows are ranked by (R@1, R@5, R@10) on the val
name queries; every row has its 95% bootstrap interval and a paired test against the first file.

    python benchmarks/pseudo_query_choice.py --dataset /tmp/nq/emoji/dataset.json \
        knn-captions=/tmp/pq/emoji-knn.json self-caption=/tmp/pq/emoji-self-caption.json \
        --natural benchmarks/natural_queries/emoji-val.json --out docs/results/pseudo-query-choice-emoji
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KS = (1, 5, 10)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="LABEL=PSEUDO_QUERIES.json (the first is the reference)")
    p.add_argument("--dataset", type=Path, required=True, help="the dataset.json they were made for")
    p.add_argument("--natural", type=Path, default=None, help="hand-written val queries (benchmarks/natural_queries)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="write OUT.json and OUT.md")
    return p.parse_args(argv)


def score(files: dict[str, Path], dataset, query_sets: list, seed: int) -> dict:
    """``{set name: {label: result}}``: BM25 over each file's val pseudo-queries, on every query set."""
    from grace.data_process.pseudo_queries import load_pseudo_queries
    from grace.infer.evaluate import evaluate
    from grace.retrieval_baselines.lexical.bm25 import BM25Retriever
    from grace.stats import add_intervals, compare_to

    corpus = [r.image_id for r in dataset.split("val")]
    out: dict[str, dict] = {qs.name: {} for qs in query_sets}
    provenance = {}
    for label, path in files.items():
        queries, provenance[label] = load_pseudo_queries(path, dataset)
        retriever = BM25Retriever.from_pseudo_queries(queries, corpus, seed=seed)
        for qs in query_sets:
            result = evaluate(retriever, qs.texts, qs.gold, KS, progress=False)
            out[qs.name][label] = add_intervals(result, KS, seed=seed)
    reference = next(iter(files))
    for qs in query_sets:
        compared = compare_to(out[qs.name], list(files)[1:], reference, KS, seed=seed)
        for label, comparison in compared.items():
            out[qs.name][label]["vs_reference"] = comparison
    keep = ("protocol", "generator", "options", "digest", "leak_filter")
    return {"results": out, "pseudo_queries": {label: {k: p.get(k) for k in keep} for label, p in provenance.items()},
            "seeds": {"bm25_tie_order": seed, "bootstrap": seed}}


def markdown(report: dict) -> str:
    from grace.provenance import provenance_lines

    sources = "; ".join(f"{label}: protocol `{p['protocol']}`, digest {p['digest']}"
                        for label, p in report["pseudo_queries"].items())
    provenance = f"Pseudo-queries: {sources}. Seed {report['seeds']['bootstrap']}; query ids in the JSON."
    lines = [f"# {report['title']}", "", report["note"], "", provenance, ""]
    for set_name, rows in report["results"].items():
        lines += [f"## {set_name} ({next(iter(rows.values()))['num_queries']} queries)", "",
                  "| pseudo-queries | " + " | ".join(f"R@{k} [95% CI]" for k in KS) + " | Δ R@1 vs first (p) |",
                  "|---|" + "---|" * (len(KS) + 1)]
        for label, r in rows.items():
            cells = [f"{100 * r[f'recall@{k}']:.1f} [{100 * r[f'recall@{k}_ci'][0]:.1f}, "
                     f"{100 * r[f'recall@{k}_ci'][1]:.1f}]" for k in KS]
            vs = r.get("vs_reference", {}).get("R@1")
            cells.append(f"{100 * vs['diff']:+.1f} [{100 * vs['low']:+.1f}, {100 * vs['high']:+.1f}] "
                         f"(p={vs['p_mcnemar']:.3f})" if vs else "—")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"Chosen on val (by R@1, R@5, R@10 on the name queries): **{report['chosen']}**.", "",
              *provenance_lines(report)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from grace.data_process.dataset import load_karpathy
    from grace.experiments.query_sets import load_natural_queries, split_queries
    from grace.experiments.selection import best_on
    from grace.provenance import query_provenance, script_provenance

    args = _args(argv)
    files = dict(item.split("=", 1) if "=" in item else (Path(item).stem, item) for item in args.files)
    files = {label: Path(path) for label, path in files.items()}
    dataset = load_karpathy(args.dataset, check_files=False)
    sets = [split_queries(dataset, "val", name="val")]
    if args.natural:
        sets.append(load_natural_queries(args.natural, dataset))
    report = score(files, dataset, sets, args.seed)
    report.update({
        "title": f"Pseudo-query generators on {dataset.name} val (BM25 over each val image's pseudo-queries)",
        "note": "Val only: the test split is not read. Corpus: the val images. Intervals: percentile bootstrap "
                "over queries; p: exact McNemar against the first row.",
        "chosen": best_on(report["results"]["val"], list(files)),
        "queries": {qs.name: query_provenance(qs.ids, qs.gold, qs.split, qs.source) for qs in sets},
        **script_provenance(__file__, argv),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
