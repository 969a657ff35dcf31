"""The README's results table, read from the published best-recipe files (docs/results/<benchmark>-best.json).

    python benchmarks/results_table.py                 # print the table and the verdict lines
    python benchmarks/results_table.py --check README.md   # exit 1 when the README's block differs

The block sits between ``<!-- results-table:start -->`` and ``<!-- results-table:end -->`` in the README; a test
runs ``--check`` so the README never quotes numbers the result files do not hold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = (("emoji", "emoji"), ("openclipart", "Openclipart"))
START, END = "<!-- results-table:start -->", "<!-- results-table:end -->"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _signed(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "−")


def test_cell(row: dict) -> str:
    """Test R@1: mean ± sd over the training seeds when the row has them, else the value [95% interval]."""
    seeds = row.get("training_seeds")
    if seeds and len(seeds.get("seeds", [])) > 1:
        spread = seeds["recall@1"]
        return f"{_pct(spread['mean'])} ± {_pct(spread['sd'])}"
    low, high = row["recall@1_ci"]
    return f"{_pct(row['recall@1'])} [{_pct(low)}, {_pct(high)}]"


LABELS = {"clip_faiss": "CLIP-FAISS", "clip_faiss_expanded": "CLIP-FAISS + pseudo-query expansion",
          "late_interaction": "late interaction", "late_interaction_expanded": "late interaction + expansion"}


def rows_of(result: dict) -> list[tuple[str, str]]:
    """(label, row name) of the table's rows, named from the file's own selection."""
    selection = result["selection"]
    generative, dense, hybrid = selection["generative"], selection["non_generative"], selection.get("hybrid")
    late = selection.get("families", {}).get("late_interaction", "late_interaction")
    rows = [(f"generative ({generative})", generative)]
    if hybrid:
        joined = "∪" if result[hybrid].get("pool") == "union" else "re-scored by"
        rows.append((f"hybrid: {generative} beam {joined} {LABELS.get(hybrid.partition('+')[2], '?')}", hybrid))
    rows += [(LABELS.get(dense, dense), dense), ("CLIP-FAISS", "clip_faiss"), (LABELS.get(late, late), late),
             ("sibling: no training (control)", "sibling"), ("BM25 over the same pseudo-queries (control)", "bm25"),
             ("random", "random")]
    labels: dict[str, str] = {}
    for label, name in rows:
        if name in result:
            labels.setdefault(name, label)  # a row named twice (the chosen dense row is also itself) once
    return [(label, name) for name, label in labels.items()]


def verdict_line(result: dict, key: str, against: str) -> str:
    """``Δ mean ± sd [interval], significant|not significant`` of a verdict over seeds."""
    over = result[key]["over_seeds"][against]["R@1"]
    word = "significant" if over["significant"] else "not significant"
    return f"{_signed(over['diff'])} ± {_pct(over['sd'])} [{_signed(over['low'])}, {_signed(over['high'])}], {word}"


def render(results: dict[str, dict]) -> str:
    """The markdown block (table, then the verdict lines over seeds) for ``{benchmark: best.json}``."""
    present = [(results[key], title) for key, title in BENCHMARKS if key in results]
    header = "| row | " + " | ".join(f"{title} test R@1 | natural val R@1" for _, title in present) + " |"
    lines = [header, "|---|" + "---|---|" * len(present)]
    for label, name in rows_of(present[0][0]):
        cells = []
        for result, _ in present:
            natural = result.get("query_sets", {}).get("val-natural", {}).get(name)
            cells += [test_cell(result[name]) if name in result else "", _pct(natural["recall@1"]) if natural else ""]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    note = ("Test R@1 in %: mean ± sd over the training seeds for the generative and hybrid rows, else [95% "
            "bootstrap interval]; natural val: the hand-written val queries (seed 0).")
    lines += ["", note, ""]
    for result, title in present:
        dense = result["selection"]["non_generative"]
        parts = [f"generative − dense {verdict_line(result, 'verdict', dense)}"]
        if "verdict_hybrid" in result:
            parts.append(f"hybrid − dense {verdict_line(result, 'verdict_hybrid', dense)}")
        parts += [f"generative − {c} {verdict_line(result, 'verdict', c)}" for c in ("sibling", "bm25")
                  if c in result["verdict"]["over_seeds"]]
        lines.append(f"- {title} (ΔR@1 in points over {len(result['verdict']['seeds'])} seeds, [95% paired interval]; "
                     f"dense = {LABELS.get(dense, dense)}, chosen on val): " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def load(folder: Path) -> dict[str, dict]:
    return {key: json.loads((folder / f"{key}-best.json").read_text()) for key, _ in BENCHMARKS
            if (folder / f"{key}-best.json").is_file()}


def readme_block(text: str) -> str:
    """The README's block between the markers (an error when they are missing)."""
    if START not in text or END not in text:
        raise SystemExit(f"no {START} … {END} block")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--check", type=Path, help="a README whose block must equal the table")
    args = parser.parse_args(argv)
    table = render(load(args.results))
    if args.check is None:
        print(table, end="")
        return 0
    if readme_block(args.check.read_text(encoding="utf-8")) != table:
        print(f"{args.check}: its results block differs from {args.results}; paste:\n{table}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
