"""Hierarchical k-means (GRACE / DSI structured identifiers): at most ``k`` clusters per node, leaves of at
most ``c`` items; an item's path is its cluster index per level, then its position in the leaf."""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from grace.errors import GraceError

log = logging.getLogger(__name__)
BACKENDS = ("faiss", "sklearn")


def kmeans_assign(x: np.ndarray, k: int, *, seed: int, niter: int = 20, backend: str = "faiss") -> np.ndarray:
    """Cluster labels (n,) of ``x`` into at most ``k`` clusters, seeded and deterministic."""
    k = min(k, len(x))
    if k <= 1:
        return np.zeros(len(x), dtype=np.int64)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False, min_points_per_centroid=1)
        km.train(x)
        return km.index.search(x, 1)[1][:, 0].astype(np.int64)
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        return KMeans(k, n_init=1, max_iter=niter, random_state=seed).fit_predict(x).astype(np.int64)
    raise GraceError(f"unknown k-means backend {backend!r}; expected one of {BACKENDS}")


def _split(x: np.ndarray, k: int, *, seed: int, niter: int, backend: str) -> list[np.ndarray]:
    """Local index groups of one node: k-means, falling back to even chunks if it cannot split
    (e.g. identical features), so the recursion always terminates."""
    labels = kmeans_assign(x, k, seed=seed, niter=niter, backend=backend)
    groups = [np.flatnonzero(labels == j) for j in np.unique(labels)]
    if len(groups) <= 1:
        groups = [g for g in np.array_split(np.arange(len(x)), min(k, len(x))) if len(g)]
    return groups


def hierarchical_kmeans(features: np.ndarray, *, k: int = 30, c: int = 30, seed: int = 0, niter: int = 20,
                        backend: str = "faiss", progress: bool = True) -> list[tuple[int, ...]]:
    """Path of every row of ``features``: cluster index per level, last element = position in its leaf.

    Every node has at most ``k`` children and every leaf at most ``c`` items; paths are unique.
    """
    if k < 2 or c < 1:
        raise GraceError(f"structured ids need k >= 2 and c >= 1 (got k={k}, c={c})")
    features = np.asarray(features, dtype=np.float32)
    paths: list[tuple[int, ...] | None] = [None] * len(features)
    stack: list[tuple[np.ndarray, tuple[int, ...]]] = [(np.arange(len(features)), ())]
    bar = tqdm(total=len(features), desc="hierarchical k-means", unit="img", disable=not progress, leave=False)
    node = 0
    while stack:
        rows, prefix = stack.pop()
        if len(rows) <= c:
            for pos, row in enumerate(rows):
                paths[row] = prefix + (pos,)
            bar.update(len(rows))
            continue
        groups = _split(features[rows], k, seed=seed + node, niter=niter, backend=backend)
        node += 1
        for j in reversed(range(len(groups))):
            stack.append((rows[groups[j]], prefix + (j,)))
    bar.close()
    return paths  # type: ignore[return-value]
