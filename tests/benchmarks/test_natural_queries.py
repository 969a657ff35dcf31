"""The hand-written val queries shipped in benchmarks/natural_queries/: well formed, unique, enough of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FOLDER = Path(__file__).parents[2] / "benchmarks" / "natural_queries"


@pytest.mark.parametrize(("benchmark", "minimum"), [("emoji", 150), ("openclipart", 100)])
def test_natural_val_queries_are_well_formed(benchmark, minimum):
    data = json.loads((FOLDER / f"{benchmark}-val.json").read_text(encoding="utf-8"))
    assert data["benchmark"] == benchmark and data["split"] == "val" and data["how"]
    rows = data["queries"]
    assert len(rows) >= minimum
    for field in ("query_id", "image_id"):
        values = [r[field] for r in rows]
        assert len(set(values)) == len(values), field  # one query per image, ids unique
    texts = [r["text"].strip().lower() for r in rows]
    assert all(2 <= len(t.split()) <= 10 for t in texts) and len(set(texts)) == len(texts)
    assert all(r["image_id"].startswith("emoji-" if benchmark == "emoji" else "clip-") for r in rows)
