"""The BM25 lexical control: it ranks by shared (stemmed) words, breaks ties by a seeded order rather than
file order, round-trips through its index folder, and refuses tampered documents and image queries."""

from __future__ import annotations

import json

import pytest

from grace.errors import InputError
from grace.experiments.retrievers import load_retriever
from grace.retrieval_baselines.lexical.bm25 import BM25Retriever
from grace.retriever import Query

DOCS = {"cat": ["tired cat", "cat face"], "car": ["red sports car"], "tree": ["palm tree ; coconut"]}


def test_ranks_by_shared_stemmed_words():
    bm25 = BM25Retriever.from_pseudo_queries(DOCS, ["cat", "car", "tree", "empty"])
    hits = bm25.search([Query("Cats"), Query("a fast red car"), Query("coconut palms")], 2)
    assert [row[0].image_id for row in hits] == ["cat", "car", "tree"]
    assert hits[0][0].score > hits[0][1].score == 0.0
    assert bm25.config["empty_documents"] == 1


def test_ties_follow_a_seeded_order_not_the_file_order():
    corpus = [f"img{i}" for i in range(50)]
    firsts = {BM25Retriever.from_pseudo_queries({}, corpus, seed=s).search([Query("nothing matches")], 1)[0][0].image_id
              for s in range(8)}
    assert len(firsts) > 1  # file order would always put img0 first
    again = BM25Retriever.from_pseudo_queries({}, corpus, seed=3).search([Query("nothing")], 5)
    assert again == BM25Retriever.from_pseudo_queries({}, corpus, seed=3).search([Query("nothing")], 5)


def test_index_folder_round_trip_and_errors(tmp_path):
    bm25 = BM25Retriever.from_pseudo_queries(DOCS, ["cat", "car", "tree"], source={"digest": "abc"})
    bm25.save(tmp_path / "index")
    loaded = load_retriever(f"bm25:{tmp_path / 'index'}")
    assert loaded.search([Query("red car")], 3) == bm25.search([Query("red car")], 3)
    assert loaded.config == bm25.config and loaded.config["source"] == {"digest": "abc"}
    docs = json.loads((tmp_path / "index" / "documents.json").read_text())
    docs["texts"][0] = "edited"
    (tmp_path / "index" / "documents.json").write_text(json.dumps(docs))
    with pytest.raises(InputError, match="digest mismatch"):
        BM25Retriever.load(tmp_path / "index")
    with pytest.raises(InputError, match="text queries only"):
        bm25.search([Query(image=tmp_path / "x.png")], 1)
    with pytest.raises(InputError, match="at least one document"):
        BM25Retriever([], [])
