"""``--kmeans sklearn`` (scikit-learn, the alternative to faiss): structured ids that keep the features' clusters."""

from __future__ import annotations

import numpy as np

from grace.identifiers.kmeans import hierarchical_kmeans


def _blobs(n_per: int = 20, centres: int = 4, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 10, (centres, dim))
    labels = np.repeat(np.arange(centres), n_per)
    return (means[labels] + rng.normal(0, 0.1, (len(labels), dim))).astype(np.float32), labels


def test_kmeans_sklearn_paths_follow_the_clusters_and_respect_k_and_c():
    backend = "sklearn"  # k-means++ seeding: well-separated blobs are found (faiss's random seeding may merge two)
    x, labels = _blobs()
    paths = hierarchical_kmeans(x, k=4, c=30, seed=0, backend=backend, progress=False)
    assert len(set(paths)) == len(paths)  # unique
    first = np.array([p[0] for p in paths])
    # the first level recovers the four blobs: each blob inside one cluster, four clusters
    assert all(len(set(first[labels == b])) == 1 for b in range(4)) and len(set(first)) == 4
    assert max(p[-1] for p in paths) < 30 and max(p[0] for p in paths) < 4
    assert hierarchical_kmeans(x, k=4, c=30, seed=0, backend=backend, progress=False) == paths  # deterministic


def test_kmeans_sklearn_through_the_structured_scheme(shared_tiny_dataset):
    from grace.identifiers import create_scheme

    features = np.random.default_rng(0).normal(size=(len(shared_tiny_dataset), 16)).astype(np.float32)
    ids = create_scheme("structured", k=3, c=4, kmeans="sklearn", tokenizer="byte").build(shared_tiny_dataset, features)
    again = create_scheme("structured", k=3, c=4, kmeans="sklearn", tokenizer="byte").build(shared_tiny_dataset, features)
    assert len(ids) == len(shared_tiny_dataset) and ids.image_to_id == again.image_to_id
    assert ids.config["kmeans"] == "sklearn"
