"""Results tables (Markdown) and PNG plots shared by ``grace eval``, ``grace ablate`` and ``grace bench``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grace.io_utils import atomic_path, atomic_write_text


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


def recall_rows(results: dict[str, dict], ks: Sequence[int]) -> list[dict]:
    """One row per retriever: recall in percent, latency in ms."""
    rows = []
    for name, res in results.items():
        row = {"retriever": name}
        row.update({f"R@{k}": 100.0 * res[f"recall@{k}"] for k in ks})
        row["latency_ms"] = res.get("latency_ms", 0.0)
        row.update({key: res[key] for key in ("num_queries", "corpus_size", "train_s") if key in res})
        rows.append(row)
    return rows


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
        vals = [100.0 * res[f"recall@{k}"] for k in ks]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
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


def write_table(path: Path, title: str, rows: Sequence[dict], columns: Sequence[str], notes: str = "") -> Path:
    text = f"# {title}\n\n" + markdown_table(rows, columns) + (f"\n{notes}\n" if notes else "")
    return atomic_write_text(path, text)
