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
    return fit_kmeans(x, k, seed=seed, niter=niter, backend=backend)[1]


def fit_kmeans(x: np.ndarray, k: int, *, seed: int, niter: int, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids (k, D), labels (n,))`` of k-means on ``x`` with ``backend``, seeded."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if backend == "faiss":
        from grace.faiss_device import faiss_device, import_faiss

        faiss = import_faiss()
        km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False, min_points_per_centroid=1,
                          gpu=faiss_device("k-means") == "gpu")
        km.train(x)
        return np.asarray(km.centroids, dtype=np.float32), km.index.search(x, 1)[1][:, 0].astype(np.int64)
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        km = KMeans(k, n_init=1, max_iter=niter, random_state=seed).fit(x)
        return km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int64)
    raise GraceError(f"unknown k-means backend {backend!r}; expected one of {BACKENDS}")


def kmeans_device(backend: str) -> str:
    """Where ``backend``'s k-means runs (``"gpu"`` or ``"cpu"``), for the identifiers' config."""
    if backend != "faiss":
        return "cpu"
    from grace.faiss_device import faiss_device

    return faiss_device("k-means")


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


def residual_kmeans(features: np.ndarray, *, levels: int = 3, codebook: int = 64, seed: int = 0, niter: int = 20,
                    backend: str = "faiss", sample: int = 200_000) -> np.ndarray:
    """Residual quantisation codes (n, levels): level l clusters what levels < l left unexplained (the residual
    after subtracting each row's centroids), so a code prefix is a coarse-to-fine cell of the embedding space
    (IRGen, GENIUS, TIGER's semantic ids). Codebooks train on at most ``sample`` rows; every row is assigned."""
    if levels < 1 or codebook < 2:
        raise GraceError(f"rq ids need levels >= 1 and codebook >= 2 (got levels={levels}, codebook={codebook})")
    residual = np.ascontiguousarray(features, dtype=np.float32).copy()
    n = len(residual)
    codes = np.zeros((n, levels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for level in range(levels):
        k = min(codebook, n)
        rows = np.sort(rng.choice(n, size=min(n, sample), replace=False))
        centroids = fit_kmeans(residual[rows], k, seed=seed + level, niter=niter, backend=backend)[0]
        codes[:, level] = nearest_centroid(residual, centroids)
        residual -= centroids[codes[:, level]]
    return codes


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Index of each row's nearest centroid (L2), in chunks."""
    out = np.empty(len(x), dtype=np.int64)
    norms = (centroids ** 2).sum(axis=1)
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk]
        out[start:start + chunk] = np.argmin(norms[None, :] - 2.0 * block @ centroids.T, axis=1)
    return out
