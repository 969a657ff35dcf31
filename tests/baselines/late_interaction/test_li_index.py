"""Text → image through the common Retriever interface: exact and PLAID (colbert-ai) indexes agree."""

from __future__ import annotations

import itertools

import pytest

from grace.data_process.dataset import test_queries
from grace.experiments.retrievers import load_retriever
from grace.retrieval_baselines.random import RandomRetriever
from grace.retriever import Query


@pytest.fixture(scope="module")
def trained(shared_tiny_dataset, tmp_path_factory):
    """A text-only model (random backbone) trained on the tiny dataset's captions → image documents."""
    from grace.retrieval_baselines.late_interaction.configs import TrainConfig
    from grace.retrieval_baselines.late_interaction.train import train_t2i

    out = tmp_path_factory.mktemp("li") / "model"
    config = TrainConfig(dataset=shared_tiny_dataset.root.parent / "dataset.json", out=out, text_encoder="random:32",
                         train_backbone=True, dim=64, steps=80, batch_size=16, lr=5e-3, hard_negatives=1)
    return out, train_t2i(config, progress=False)


def _index(trained, dataset, out, backend, nbits=2):
    import argparse

    from grace.retrieval_baselines.late_interaction.cli import COMMANDS
    from grace.retrieval_baselines.late_interaction.configs import IndexConfig

    config = IndexConfig(model=trained[0], out=out, dataset=dataset.root.parent / "dataset.json", split="",
                         backend=backend, nbits=nbits, cache_dir=trained[0] / "cache")
    COMMANDS["index"][1](argparse.Namespace(config=None, **vars(config)))
    return out


def _recall(retriever, texts, gold, k):
    hits = retriever.search([Query(text=t) for t in texts], k)
    return sum(g in [h.image_id for h in hs] for hs, g in zip(hits, gold)) / len(gold)


def test_train_t2i_loss_falls_and_saves(trained):
    stats = trained[1]
    assert stats["loss_last"] < 0.6 * stats["loss_first"]
    assert (trained[0] / "model.safetensors").is_file() and (trained[0] / "train_config.json").is_file()


def test_exact_retriever_beats_random(trained, shared_tiny_dataset, tmp_path):
    index = _index(trained, shared_tiny_dataset, tmp_path / "exact", "exact")
    retriever = load_retriever(f"late_interaction:{index}")
    assert retriever.searcher.backend == "exact"
    texts, gold = test_queries(shared_tiny_dataset, "train")
    rand = RandomRetriever(shared_tiny_dataset.image_ids(), seed=0)
    assert _recall(retriever, texts, gold, 5) >= 0.5 > _recall(rand, texts, gold, 1) + 0.2
    hits = retriever.search([Query(text=texts[0])], 30)[0]
    assert len(hits) == 24 and len({h.image_id for h in hits}) == 24  # k capped at the collection size
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_fallback_plaid_asked_of_an_exact_index_searches_exactly_and_records_it(trained, shared_tiny_dataset,
                                                                                  tmp_path):
    from grace.fallbacks import clear_fallbacks, recorded_fallbacks
    from grace.retrieval_baselines.late_interaction.index import Searcher

    index = _index(trained, shared_tiny_dataset, tmp_path / "exact", "exact")
    clear_fallbacks()
    assert Searcher(index, backend="plaid").backend == "exact"
    assert [(f["what"], f["wanted"], f["used"]) for f in recorded_fallbacks()] == [
        ("late-interaction search", "plaid", "exact")]
    clear_fallbacks()


def test_plaid_matches_exact_top10(trained, shared_tiny_dataset, tmp_path):
    from grace.retrieval_baselines.late_interaction.index import Searcher, topk_overlap
    from grace.retrieval_baselines.late_interaction.plaid import plaid_available, unavailable_reason

    assert plaid_available(), unavailable_reason()
    index = _index(trained, shared_tiny_dataset, tmp_path / "plaid", "plaid", nbits=4)
    assert (index / "plaid" / "ivf.pid.pt").is_file() and (index / "config.json").is_file()
    from grace.retrieval_baselines.late_interaction.retriever import LateInteractionRetriever

    plaid = LateInteractionRetriever.load(index, ncells=16, centroid_score_threshold=0.0, ndocs=256)
    assert plaid.searcher.backend == "plaid"
    texts, _ = test_queries(shared_tiny_dataset, "train")
    queries = plaid.embed([Query(text=t) for t in texts])
    exact = Searcher(index, backend="exact").search_custom_collection(queries, 10)
    approx = plaid.searcher.search_custom_collection(queries, 10)
    assert topk_overlap(approx, exact) >= 0.9
