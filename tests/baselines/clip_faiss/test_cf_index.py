"""Flat and IVF-PQ recall on planted clustered vectors; index folder round trip; latency rows."""

from __future__ import annotations

import numpy as np

from grace.retrieval_baselines.clip_faiss.index import DenseIndex, train_index
from grace.retrieval_baselines.clip_faiss.latency import latency_rows, recall_vs_exact, synthetic_vectors


def _planted(n=4000, dim=64, n_queries=100, seed=0):
    corpus = synthetic_vectors(n, dim, n_clusters=40, noise=0.6, seed=seed)
    rng = np.random.default_rng(seed + 1)
    gold = rng.choice(n, size=n_queries, replace=False)
    queries = corpus[gold] + 0.02 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    return corpus, queries / np.linalg.norm(queries, axis=1, keepdims=True), gold


def _recall_at(rows, gold, k):
    return float(np.mean([g in r[:k] for r, g in zip(rows, gold)]))


def test_flat_is_exact_and_ivfpq_keeps_recall():
    corpus, queries, gold = _planted()
    flat = train_index(corpus, "Flat", use_gpu=False)
    _, flat_rows = flat.search(queries, 10)
    assert _recall_at(flat_rows, gold, 1) == 1.0  # the planted point is the nearest neighbour
    exact = np.argsort(-(queries @ corpus.T), axis=1)[:, :10]
    assert recall_vs_exact(flat_rows, exact) > 0.99
    ivfpq = train_index(corpus, "IVF64_PQ16", nprobe=8, use_gpu=False, train_size=3000)
    _, ivf_rows = ivfpq.search(queries, 10)
    assert _recall_at(ivf_rows, gold, 10) >= 0.9 * _recall_at(flat_rows, gold, 10)
    random_recall = 10 / len(corpus)
    assert _recall_at(ivf_rows, gold, 10) > 50 * random_recall


def test_index_folder_round_trip(tmp_path):
    corpus, queries, gold = _planted(n=500, dim=32, n_queries=20)
    keys = {"mode": "image", "row_image": [f"img{i}" for i in range(500)], "row_text": [None] * 500,
            "row_source": [""] * 500, "captions": {}}
    DenseIndex(train_index(corpus, "Flat", use_gpu=False), keys, {"index": "Flat", "nprobe": 4}, use_gpu=False).save(tmp_path)
    loaded = DenseIndex.load(tmp_path, use_gpu=False)
    _, rows = loaded.search(queries, 3)
    assert [loaded.row_images[r[0]] for r in rows] == [f"img{g}" for g in gold]


def test_latency_rows_small():
    rows = latency_rows(sizes=(500, 2000), indexes=("Flat", "IVF1024_PQ8"), dim=32, num_queries=16, progress=False,
                        use_gpu=False)
    assert [(r["index"], r["corpus_size"]) for r in rows] == [("Flat", 500), ("IVF1024_PQ8", 500),
                                                               ("Flat", 2000), ("IVF1024_PQ8", 2000)]
    assert rows[1]["faiss"] == "IVF12_PQ8"  # list count scaled down to the corpus
    assert all(r["latency_ms"] > 0 for r in rows) and rows[0]["recall_vs_flat"] == 1.0


def test_stored_vectors_give_the_search_scores_flat_and_ivfpq():
    """DenseIndex.vectors (what a hybrid re-scores candidates with): q · vector is the score search returns,
    also for IVF-PQ, whose codes are decoded through its direct map."""
    corpus, queries, _ = _planted(n=2000, dim=32, n_queries=5)
    keys = {"row_image": [f"img{i}" for i in range(2000)]}
    for name in ("Flat", "IVF16_PQ8"):
        index = DenseIndex(train_index(corpus, name, nprobe=16, use_gpu=False), keys, {"index": name}, use_gpu=False)
        scores, rows = index.search(queries, 5)
        for q, srow, rrow in zip(queries, scores, rows):
            assert np.allclose(index.vectors(rrow.tolist()) @ q, srow, atol=1e-4), name
    assert index.vectors([]).shape == (0, 32)
