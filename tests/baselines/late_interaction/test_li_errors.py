"""Bad input: empty collection, over-long document, missing image, bad index/passage files → one-line errors."""

from __future__ import annotations

import pytest
import torch
from li_helpers import tiny_model

from grace.errors import GraceError, InputError


def test_empty_collection_is_an_input_error(tmp_path):
    from grace.retrieval_baselines.late_interaction.collection import TextDocs
    from grace.retrieval_baselines.late_interaction.index import Indexer
    from grace.retrieval_baselines.late_interaction.plaid import build_plaid

    with pytest.raises(InputError, match="empty"):
        Indexer(model=tiny_model(), backend="exact").index_custom_collection(tmp_path / "i", TextDocs([]), [])
    with pytest.raises(InputError, match="empty"):
        build_plaid(tmp_path / "p", torch.zeros(0, 32), [])


def test_document_longer_than_doc_maxlen(tmp_path):
    model = tiny_model(doc_maxlen=8)
    with pytest.raises(InputError, match="doc_maxlen 8"):
        model.encode_docs(["short", "this passage is certainly far longer than eight word pieces allow"])
    d, _ = tiny_model(doc_maxlen=8, truncate_docs=True).encode_docs(["this passage is far longer than eight tokens"])
    assert d.shape[1] == 8


def test_missing_query_image(tmp_path, visual_bank):
    from grace.retrieval_baselines.late_interaction.collection import ImageDocs
    from grace.retrieval_baselines.late_interaction.index import Indexer, Searcher
    from grace.retrieval_baselines.late_interaction.retriever import LateInteractionRetriever
    from grace.retriever import Query

    class FakeEncoder:  # the real encoder is exercised elsewhere; only file handling matters here
        dim = 64

        def encode_tokens(self, images):
            return torch.zeros(len(images), 9, 64)

    model = tiny_model("flmr")
    Indexer(model=model, backend="exact").index_custom_collection(tmp_path / "i", ImageDocs(visual_bank),
                                                                 [f"img{i}" for i in range(12)])
    retriever = LateInteractionRetriever(searcher=Searcher(tmp_path / "i"), model=model, image_encoder=FakeEncoder())
    with pytest.raises(InputError, match="not found"):
        retriever.search([Query(text="what is this?", image=tmp_path / "missing.png")], 3)
    assert len(retriever.search([Query(text="what is this?")], 3)[0]) == 3


def test_bad_index_folder_and_plaid_too_small(tmp_path):
    from grace.retrieval_baselines.late_interaction.index import Searcher
    from grace.retrieval_baselines.late_interaction.plaid import build_plaid

    with pytest.raises(InputError, match="config.json missing"):
        Searcher(tmp_path)
    with pytest.raises(InputError, match="at least"):
        build_plaid(tmp_path / "p", torch.randn(10, 32), [5, 5])
    with pytest.raises(GraceError, match="fusion"):
        tiny_model("colpali")


def test_cli_prints_one_line_errors(tmp_path, capsys):
    from grace.cli import main
    from grace.retrieval_baselines.late_interaction.cli import _passages

    for args in (["search", "--index", str(tmp_path / "nope"), "--texts", "a cat"],
                 ["index", "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "o")],
                 ["search", "--index", str(tmp_path)]):
        assert main(["baselines", "late-interaction", *args]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("grace: error:")]
        assert len(errors) == 1, errors
    bad = tmp_path / "p.tsv"
    bad.write_text("no tab here\n")
    with pytest.raises(InputError, match="entry 1"):
        _passages(bad)
