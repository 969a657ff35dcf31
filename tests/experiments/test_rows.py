"""Table rows are typed: a row's kind, scheme, seed and rescorer are fields, and its name is made from them."""

from __future__ import annotations

import pytest

from grace.experiments import rows


def test_a_rows_name_is_made_from_its_fields_and_its_kind_is_never_parsed_back():
    retrained = rows.hybrid("rq", "clip_faiss", seed=1)
    assert retrained.name == "rq@seed1+clip_faiss" and retrained.generator.name == "rq@seed1"
    assert rows.generative("rq").name == "rq" and rows.hybrid("rq", "clip_faiss").generator == rows.generative("rq")
    assert rows.baseline("bm25").kind == "control" and rows.baseline("clip_faiss").kind == "baseline"
    table = [rows.generative("structured"), retrained, rows.baseline("sibling"), rows.baseline("clip_faiss"),
             rows.Row("random", "random")]
    assert rows.names(table, "generative") == ["structured"]
    assert rows.names(table, "baseline", "control") == ["sibling", "clip_faiss"]
    assert rows.names(table, "hybrid") == ["rq@seed1+clip_faiss"]
    with pytest.raises(ValueError, match="needs rescorer"):
        rows.Row("hybrid", "rq")
    with pytest.raises(ValueError, match="row kind"):
        rows.Row("lexical", "bm25")
