"""Results tables (Markdown), PNG plots and result folders shared by ``grace eval``, ``grace ablate`` and the
benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grace.io_utils import atomic_path, atomic_write_text, read_json, save_config, write_json


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A GitHub Markdown table of ``rows`` (missing cells blank)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def recall_cell(res: dict, k: int, metric: str = "recall") -> str:
    """``35.6 [29.3, 42.0]``: Recall@K (or ``pseudo_recall``) in percent with its 95% interval when the
    result has one."""
    ci = res.get(f"{metric}@{k}_ci")
    value = f"{100.0 * res[f'{metric}@{k}']:.1f}"
    return f"{value} [{100.0 * ci[0]:.1f}, {100.0 * ci[1]:.1f}]" if ci else value


def recall_rows(results: dict[str, dict], ks: Sequence[int]) -> list[dict]:
    """One row per retriever: recall in percent (with its interval), latency in ms."""
    rows = []
    for name, res in results.items():
        row = {"retriever": name}
        row.update({f"R@{k}": recall_cell(res, k) for k in ks})
        row.update({f"PR@{k}": recall_cell(res, k, "pseudo_recall") for k in ks if f"pseudo_recall@{k}" in res})
        row["latency_ms"] = res.get("latency_ms", 0.0)
        row.update({key: res[key] for key in ("num_queries", "corpus_size", "train_s") if key in res})
        if "index_bytes" in res:
            row["index_kB"] = res["index_bytes"] / 1024
        rows.append(row)
    return rows


def comparison_rows(comparisons: dict, ks: Sequence[int]) -> list[dict]:
    """One row per compared retriever: ΔR@K (points, with the paired 95% interval) and its p-values."""
    rows = []
    for name, comp in comparisons.get("by_retriever", {}).items():
        row = {"retriever": name, "vs": comp["vs"]}
        for k in ks:
            c = comp[f"R@{k}"]
            row[f"ΔR@{k}"] = f"{100 * c['diff']:+.1f} [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]"
            floor = 1.0 / c.get("n_boot", 10_000)  # no resample crossed 0: p is below the bootstrap's resolution
            p_boot = f"<{floor:.0e}" if c["p_bootstrap"] < floor else f"{c['p_bootstrap']:.3g}"
            row[f"p R@{k} (bootstrap / McNemar)"] = f"{p_boot} / {c['p_mcnemar']:.3g}"
        rows.append(row)
    return rows


def comparison_columns(ks: Sequence[int]) -> list[str]:
    return ["retriever", "vs"] + [c for k in ks for c in (f"ΔR@{k}", f"p R@{k} (bootstrap / McNemar)")]


def paired_markdown(comparisons: dict | None, ks: Sequence[int], reference_kind: str, *,
                    chosen: bool = False, selected_on: str = "") -> str:
    """The paired-comparison table under its one-line heading, or "" when nothing was compared; ``chosen``:
    the reference was named by the user, ``selected_on``: it was the ``reference_kind`` chosen on that split,
    else it is the best ``reference_kind`` by R@1."""
    if not comparisons or not comparisons.get("by_retriever"):
        return ""
    if chosen:
        against = f"{comparisons['reference']}, the chosen reference"
    elif selected_on:
        against = f"the {reference_kind} selected on {selected_on} ({comparisons['reference']})"
    else:
        against = f"the best {reference_kind} by R@{min(ks)} ({comparisons['reference']})"
    return (f"\nPaired vs {against}, same queries "
            f"(ΔR@K in points [95% paired bootstrap interval]):\n\n"
            + markdown_table(comparison_rows(comparisons, ks), comparison_columns(ks)))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    return path


def plot_recall_bars(results: dict[str, dict], ks: Sequence[int], path: Path, title: str = "Recall@K") -> Path:
    """Grouped bars: one group per K, one bar per retriever (percent)."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(ks) * max(1, len(results)) / 2, 3.6))
    width = 0.8 / max(1, len(results))
    x = np.arange(len(ks))
    for i, (name, res) in enumerate(results.items()):
        vals = np.array([100.0 * res[f"recall@{k}"] for k in ks])
        err = None
        if all(f"recall@{k}_ci" in res for k in ks):
            cis = np.array([[100.0 * v for v in res[f"recall@{k}_ci"]] for k in ks])
            err = np.clip(np.stack([vals - cis[:, 0], cis[:, 1] - vals]), 0, None)
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name, yerr=err, capsize=2)
    ax.set_xticks(x, [f"R@{k}" for k in ks])
    ax.set_ylabel("recall (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_latency_vs_size(points: dict[str, list[tuple[float, float]]], path: Path,
                         title: str = "query latency vs corpus size") -> Path:
    """Lines of (corpus size, ms/query) per retriever, log-x."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, pts in points.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("corpus size (images / identifiers)")
    ax.set_ylabel("latency (ms / query)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_table(path: Path, title: str, rows: Sequence[dict], columns: Sequence[str], notes: str = "",
                extra: str = "") -> Path:
    """``# title``, the table, the notes, then ``extra`` Markdown (e.g. a second table)."""
    text = f"# {title}\n\n" + markdown_table(rows, columns) + (f"\n{notes}\n" if notes else "") + extra
    return atomic_write_text(path, text)


def write_results(out: Path, results: dict[str, dict], config: Any, ks: list[int], title: str = "Retrieval results",
                  comparisons: dict | None = None,
                  notes: str = "Recall in % [95% bootstrap interval over gold images], latency in ms/query.",
                  provenance: dict | None = None) -> None:
    """results.json, table.md, recall.png, latency.png (+ history.json of latency vs corpus size); recalls
    with their intervals when the results carry them, and the paired comparisons when given; ``provenance``
    (protocol, query ids, commit) goes into results.json."""
    out.mkdir(parents=True, exist_ok=True)
    paired = paired_markdown(comparisons, ks, "other retriever")
    write_json(out / "results.json", {**results, **({"comparisons": comparisons} if paired else {}),
                                      **({"provenance": provenance} if provenance else {})})
    save_config(out, config)
    pseudo = [f"PR@{k}" for k in ks if any(f"pseudo_recall@{k}" in r for r in results.values())]
    columns = ["retriever"] + [f"R@{k}" for k in ks] + pseudo + ["latency_ms", "num_queries", "corpus_size"]
    if any("train_s" in r for r in results.values()):
        columns.append("train_s")
    write_table(out / "table.md", title, recall_rows(results, ks), columns,
                notes=notes, extra=paired)
    plot_recall_bars(results, ks, out / "recall.png", title=title)
    history_path = out / "history.json"
    history = read_json(history_path) if history_path.is_file() else {}
    for name, res in results.items():
        pts = {tuple(p) for p in history.get(name, [])}
        pts.add((res["corpus_size"], res["latency_ms"]))
        history[name] = sorted(pts)
    write_json(history_path, history)
    plot_latency_vs_size({k: [tuple(p) for p in v] for k, v in history.items()}, out / "latency.png")
