"""Why generative retrieval trails dense retrieval: recall split by whether a test query shares a word with
the texts its gold image was trained on (its pseudo-queries).

A generative retriever knows a held-out image only through what it was trained on: the image itself (i2id)
and its pseudo-queries (t2id). A dense retriever embeds every image at query time. If the gap comes from
the text route, generative recall should collapse on queries that share no word with their gold image's
pseudo-queries, while dense recall holds. Words match after lower-casing, dropping stop words and cutting
to the first ``--stem`` characters ("winking" ~ "wink" at 4).

    python benchmarks/query_overlap.py docs/results/archive/emoji-smollm2-effnet.json \
        --dataset runs/p4-smollm2-text/data/dataset.json --pseudo-queries runs/p4-smollm2-text/data/pseudo_queries.json \
        --out docs/results/query-overlap-emoji
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

KS = (1, 10)
STOP_WORDS = frozenset(["a", "an", "and", "the", "of", "with", "in", "on", "for", "to", "at", "by", "from", "or",
                        "as", "is"])


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="published ablation JSONs on the same queries, each optionally "
                   "LABEL=PATH (rows: LABEL/<retriever>; default: its model)")
    p.add_argument("--dataset", type=Path, required=True, help="their dataset.json (test queries and gold images)")
    p.add_argument("--pseudo-queries", type=Path, required=True, help="the run's data/pseudo_queries.json")
    p.add_argument("--stem", type=int, default=4, help="characters of a word compared (0: whole words)")
    p.add_argument("--out", type=Path, required=True, help="write OUT.md and OUT.json")
    return p.parse_args(argv)


def content_words(text: str, stem: int) -> set[str]:
    """Lower-cased words without stop words, each cut to ``stem`` characters (0 = whole)."""
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP_WORDS]
    return {w[:stem] if stem else w for w in words}


def overlaps(queries: list[str], gold: list[str], pseudo: dict[str, list[str]], stem: int) -> list[bool]:
    """Per query: does it share a content word with one of its gold image's pseudo-queries?"""
    return [bool(content_words(q, stem) & set().union(*(content_words(t, stem) for t in pseudo.get(g, [""]))))
            for q, g in zip(queries, gold)]


def main(argv: list[str] | None = None) -> dict:
    from compare_runs import _labelled

    from grace.data_process.dataset import load_karpathy
    from grace.experiments.query_sets import split_queries
    from grace.experiments.report import markdown_table
    from grace.io_utils import atomic_write_text, read_json, write_json
    from grace.provenance import provenance_lines, script_provenance
    from grace.stats import recall_ci

    args = _args(argv)
    test = split_queries(load_karpathy(args.dataset, check_files=False))
    queries, gold = test.texts, test.gold
    shared = overlaps(queries, gold, read_json(args.pseudo_queries), args.stem)
    groups = {"shares a word": [i for i, s in enumerate(shared) if s],
              "shares no word": [i for i, s in enumerate(shared) if not s]}
    table, report = [], {}
    for arg in args.results:
        label, path = _labelled(arg)
        data = read_json(path)
        label = label or Path(data["provenance"]["config"]["model"]).stem
        for name, res in data.items():
            if not isinstance(res, dict) or "gold_ranks" not in res or name == "random":
                continue
            if len(res["gold_ranks"]) != len(queries):
                raise SystemExit(f"{path}: {name} has {len(res['gold_ranks'])} queries, the dataset {len(queries)}")
            row_name = name if name in ("clip_faiss", "late_interaction") else f"{label}/{name}"
            if row_name in report:
                continue
            row, report[row_name] = {"retriever": row_name}, {}
            for group, index in groups.items():
                for k in KS:
                    r, lo, hi = recall_ci([res["gold_ranks"][i] for i in index], k, clusters=[gold[i] for i in index])
                    row[f"R@{k} {group}"] = f"{100 * r:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
                    report[row_name][f"recall@{k} {group}"] = [r, lo, hi]
            table.append(row)
    columns = ["retriever"] + [f"R@{k} {group}" for group in groups for k in KS]
    made = script_provenance(__file__, argv)
    sizes = {group: len(index) for group, index in groups.items()}
    summary = (f"{sizes['shares a word']} of {len(queries)} test queries share a content word (first {args.stem} "
               f"characters; stop words dropped) with a pseudo-query of their gold image; "
               f"{sizes['shares no word']} share none. Recall in % [95% bootstrap interval over gold images].\n")
    lines = ["# Recall by whether the query shares a word with its gold image's pseudo-queries\n", summary,
             markdown_table(table, columns), *provenance_lines(made)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    write_json(args.out.with_suffix(".json"), {"groups": sizes, "rows": report, **made,
                                               "stem": args.stem, "shared": shared})
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
