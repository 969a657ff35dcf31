"""Identifiers for corpora whose features do not fit in memory (10M × 512-d is 20 GB in float32).

The features live in one ``.npy`` file (float16 halves it), read through a file handle in chunks, never mapped:
pages of a mapped file count as the process's resident memory, reads through the page cache do not.

- :func:`residual_kmeans` (``rq`` ids): each level's codebook trains on a sample of rows, whose residual is
  recomputed from the codebooks before it; then one pass over the file assigns every row, chunk by chunk. Given
  the same rows, the codes equal those of :func:`grace.identifiers.kmeans.residual_kmeans` in memory.
- :func:`hierarchical_kmeans` (``structured`` ids): a node too large for memory trains its ``k`` centroids on a
  sample of its rows, and one pass over its rows writes each row (and its corpus index) to its child's bucket
  file; a node small enough is read whole and split in memory by
  :func:`grace.identifiers.kmeans.hierarchical_kmeans`, so a corpus that fits gets exactly the in-memory paths.
  Paths come back as an ``(n, depth)`` int32 array padded with -1.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import grace.identifiers.kmeans as in_memory
from grace.errors import GraceError, InputError


class VectorFile:
    """A 2-D ``.npy`` file (float16 or float32) read by rows through a file handle; rows come back as float32."""

    def __init__(self, path: str | Path, *, raw: tuple[int, int, str] | None = None):
        """``path``: an ``.npy`` file; or, with ``raw=(n, d, dtype)``, headerless rows (the bucket files)."""
        self.path = Path(path)
        if raw is not None:
            shape, dtype, self.offset = raw[:2], np.dtype(raw[2]), 0
        else:
            try:
                with self.path.open("rb") as f:
                    version = np.lib.format.read_magic(f)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:
                        raise ValueError(f".npy format {version}")
                    shape, fortran, dtype = read(f)
                    self.offset = f.tell()
            except (OSError, ValueError) as exc:
                raise InputError(f"not a readable .npy matrix ({exc})", path=path) from exc
            if fortran:
                raise InputError("expected a C-order matrix", path=path)
        if len(shape) != 2 or dtype not in (np.float16, np.float32):
            raise InputError(f"expected an (n, d) float16/float32 matrix, got {shape} {dtype}", path=path)
        self.shape, self.dtype = (int(shape[0]), int(shape[1])), np.dtype(dtype)
        self.row_bytes = self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, start: int, stop: int, *, stored: bool = False) -> np.ndarray:
        """Rows ``start:stop`` as float32 (``stored``: in the file's own dtype, not converted)."""
        with self.path.open("rb") as f:
            f.seek(self.offset + start * self.row_bytes)
            block = np.fromfile(f, dtype=self.dtype, count=(stop - start) * self.shape[1])
        block = block.reshape(-1, self.shape[1])
        return block if stored else block.astype(np.float32)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """The rows at sorted ``indices`` (runs of consecutive rows read at once) as float32."""
        out = np.empty((len(indices), self.shape[1]), np.float32)
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        with self.path.open("rb") as f:
            pos = 0
            for run in np.split(indices, breaks):
                if not len(run):
                    continue
                f.seek(self.offset + int(run[0]) * self.row_bytes)
                block = np.fromfile(f, dtype=self.dtype, count=len(run) * self.shape[1])
                out[pos:pos + len(run)] = block.reshape(len(run), -1)
                pos += len(run)
        return out

    def chunks(self, size: int, *, stored: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` over the whole file, ``size`` rows at a time (``stored``: see :meth:`rows`)."""
        for start in range(0, len(self), size):
            yield start, self.rows(start, min(len(self), start + size), stored=stored)


def write_vectors(path: str | Path, blocks: Iterator[np.ndarray], n: int, dim: int,
                  dtype: str = "float16") -> VectorFile:
    """Write ``n`` rows arriving in ``blocks`` as one ``.npy`` matrix, without holding it in memory."""
    path = Path(path)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n, dim)}
    written = 0
    with path.open("wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=dtype)
            if block.ndim != 2 or block.shape[1] != dim:
                raise GraceError(f"a block of shape {block.shape} in a ({n}, {dim}) file")
            block.tofile(f)
            written += len(block)
    if written != n:
        raise GraceError(f"{path}: {written} rows written, {n} declared")
    return VectorFile(path)


def residual_kmeans(features: VectorFile, *, levels: int = 3, codebook: int = 64, seed: int = 0, niter: int = 20,
                    backend: str = "faiss", sample: int = 200_000, chunk: int = 262_144) -> np.ndarray:
    """Residual quantisation codes ``(n, levels)`` of the rows of ``features``, unit-normalised as the ``rq``
    scheme does, with codebooks trained on samples (the same draws as the in-memory version)."""
    if levels < 1 or codebook < 2:
        raise GraceError(f"rq ids need levels >= 1 and codebook >= 2 (got levels={levels}, codebook={codebook})")
    n = len(features)
    rng = np.random.default_rng(seed)
    books: list[np.ndarray] = []
    for level in range(levels):
        rows = np.sort(rng.choice(n, size=min(n, sample), replace=False))
        residual = _unit(features.take(rows))
        for centroids in books:
            residual -= centroids[in_memory.nearest_centroid(residual, centroids)]
        books.append(in_memory.fit_kmeans(residual, min(codebook, n), seed=seed + level, niter=niter,
                                    backend=backend)[0])
    codes = np.empty((n, levels), dtype=np.int32)
    for start, block in features.chunks(chunk):
        residual = _unit(block)
        for level, centroids in enumerate(books):
            codes[start:start + len(block), level] = in_memory.nearest_centroid(residual, centroids)
            residual -= centroids[codes[start:start + len(block), level]]
    return codes


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _Paths:
    """An ``(n, depth)`` int32 path array, -1 padded, that widens as deeper paths arrive."""

    def __init__(self, n: int):
        self.array = np.full((n, 8), -1, dtype=np.int32)

    def put(self, rows: np.ndarray, prefix: tuple[int, ...], tails: list[tuple[int, ...]]) -> None:
        depth = len(prefix) + max(len(t) for t in tails)
        if depth > self.array.shape[1]:
            self.array = np.pad(self.array, ((0, 0), (0, depth - self.array.shape[1])), constant_values=-1)
        width = max(len(t) for t in tails)
        tail = np.full((len(tails), width), -1, dtype=np.int32)
        for i, t in enumerate(tails):
            tail[i, :len(t)] = t
        self.array[rows, :len(prefix)] = prefix
        self.array[rows, len(prefix):len(prefix) + width] = tail


def hierarchical_kmeans(features: VectorFile, *, k: int = 30, c: int = 30, seed: int = 0, niter: int = 20,
                        backend: str = "faiss", in_memory_rows: int = 1_000_000, sample: int = 100_000,
                        chunk: int = 262_144, workdir: str | Path | None = None) -> np.ndarray:
    """Structured-id paths ``(n, depth)`` (-1 padded) of the rows of ``features``: every node at most ``k``
    children, every leaf at most ``c`` rows, all paths unique. Nodes above ``in_memory_rows`` rows are split
    out of core (bucket files under ``workdir``, removed at the end); the rest in memory."""
    if k < 2 or c < 1:
        raise GraceError(f"structured ids need k >= 2 and c >= 1 (got k={k}, c={c})")
    paths = _Paths(len(features))
    work = Path(tempfile.mkdtemp(prefix="grace-kmeans-", dir=workdir))
    try:
        _split_node(features, np.arange(len(features), dtype=np.int64), (), paths, work,
                    {"k": k, "c": c, "seed": seed, "niter": niter, "backend": backend,
                     "in_memory_rows": in_memory_rows, "sample": sample, "chunk": chunk})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return paths.array[:, :int((paths.array >= 0).sum(axis=1).max())]


def _split_node(features: VectorFile, rows: np.ndarray, prefix: tuple[int, ...], paths: _Paths, work: Path,
                cfg: dict) -> None:
    """Paths of one node's rows (``features`` holds exactly them; ``rows`` are their corpus indices)."""
    if len(features) <= cfg["in_memory_rows"]:
        tails = in_memory.hierarchical_kmeans(features.rows(0, len(features)), k=cfg["k"], c=cfg["c"],
                                              seed=cfg["seed"] + len(prefix), niter=cfg["niter"],
                                              backend=cfg["backend"], progress=False)
        paths.put(rows, prefix, tails)
        return
    seed = cfg["seed"] + len(prefix) + 31 * (prefix[-1] if prefix else 0)
    picked = np.sort(np.random.default_rng(seed).choice(len(features), min(len(features), cfg["sample"]),
                                                        replace=False))
    centroids = in_memory.fit_kmeans(features.take(picked), cfg["k"], seed=seed, niter=cfg["niter"],
                               backend=cfg["backend"])[0]
    node = work / ("n" + "_".join(map(str, prefix)))
    node.mkdir()
    sizes = _write_buckets(features, rows, node, len(centroids),
                           lambda start, block: in_memory.nearest_centroid(block, centroids), cfg["chunk"])
    if (sizes > 0).sum() <= 1:  # the centroids cannot tell these rows apart (e.g. identical): split in order
        sizes = _write_buckets(features, rows, node, cfg["k"],
                               lambda start, block: (start + np.arange(len(block))) % cfg["k"], cfg["chunk"])
    for j in np.flatnonzero(sizes):
        child = VectorFile(node / f"{j}.f", raw=(int(sizes[j]), features.shape[1], features.dtype.name))
        _split_node(child, np.fromfile(node / f"{j}.i", dtype=np.int64), prefix + (int(j),), paths, work, cfg)
        (node / f"{j}.f").unlink()
        (node / f"{j}.i").unlink()
    shutil.rmtree(node, ignore_errors=True)


def _write_buckets(features: VectorFile, rows: np.ndarray, node: Path, k: int, assign, chunk: int) -> np.ndarray:
    """One pass over ``features``: each row (and its corpus index) appended to its bucket ``node/<j>.{f,i}``;
    ``assign(start, block)`` gives the bucket of every row of a float32 chunk; the rows are written as read (the
    file's dtype, never converted back). Returns the bucket sizes."""
    files = [(open(node / f"{j}.f", "wb"), open(node / f"{j}.i", "wb")) for j in range(k)]  # noqa: SIM115
    sizes = np.zeros(k, dtype=np.int64)
    try:
        for start, block in features.chunks(chunk, stored=True):
            labels = assign(start, block.astype(np.float32, copy=False))
            ids = rows[start:start + len(block)]
            for j in np.unique(labels):
                mine = labels == j
                block[mine].tofile(files[j][0])
                ids[mine].tofile(files[j][1])
                sizes[j] += int(mine.sum())
    finally:
        for f, i in files:
            f.close()
            i.close()
    return sizes
