"""``grace baselines clip-faiss …`` and ``grace baselines late-interaction …``."""

from __future__ import annotations

import importlib

BASELINE_CLIS = (
    "grace.retrieval_baselines.clip_faiss.cli",
    "grace.retrieval_baselines.late_interaction.cli",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("baselines", help="dense (CLIP+FAISS) and late-interaction baselines")
    sub = parser.add_subparsers(dest="baseline", required=True, metavar="BASELINE")
    for module_name in BASELINE_CLIS:
        importlib.import_module(module_name).register(sub)
