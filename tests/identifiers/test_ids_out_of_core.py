"""Identifiers from a features file read in chunks (grace.identifiers.out_of_core): the same rq codes as in memory,
structured paths that keep every bound when nodes are split out of core, and exactly the in-memory paths when
the corpus fits."""

from __future__ import annotations

import numpy as np
import pytest

from grace.errors import InputError
from grace.identifiers import kmeans
from grace.identifiers.out_of_core import VectorFile, hierarchical_kmeans, residual_kmeans, write_vectors


def _blobs(n: int, dim: int = 16, centres: int = 6, seed: int = 0, labels: bool = False):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 5, (centres, dim))
    which = rng.integers(0, centres, n)
    x = (means[which] + rng.normal(0, 0.5, (n, dim))).astype(np.float32)
    return (x, which) if labels else x


def _file(tmp_path, x: np.ndarray, dtype: str = "float32") -> VectorFile:
    return write_vectors(tmp_path / "x.npy", (x[i:i + 100] for i in range(0, len(x), 100)), len(x), x.shape[1], dtype)


def test_vector_file_reads_rows_runs_and_chunks_as_numpy_does(tmp_path):
    x = _blobs(1000)
    vf = _file(tmp_path, x, "float16")
    assert vf.shape == (1000, 16) and np.array_equal(np.load(tmp_path / "x.npy"), x.astype(np.float16))
    half = x.astype(np.float16).astype(np.float32)
    picked = np.array([0, 1, 2, 7, 500, 501, 999])
    assert np.array_equal(vf.take(picked), half[picked]) and np.array_equal(vf.rows(10, 20), half[10:20])
    assert np.array_equal(np.concatenate([b for _, b in vf.chunks(333)]), half)
    assert vf.rows(10, 20, stored=True).dtype == np.float16  # as stored: what the bucket pass copies
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="not a readable .npy"):
        VectorFile(tmp_path / "bad.npy")


def test_the_bucket_pass_copies_each_row_as_stored_and_its_index_beside_it(tmp_path):
    from grace.identifiers.out_of_core import _write_buckets

    x = _blobs(250)
    vf = _file(tmp_path, x, "float16")
    node = tmp_path / "node"
    node.mkdir()
    rows = np.arange(1000, 1250)
    sizes = _write_buckets(vf, rows, node, 3, lambda start, block: (block[:, 0] > 0).astype(int) * 2, chunk=64)
    stored = np.load(tmp_path / "x.npy")
    for j, mine in ((0, stored[:, 0] <= 0), (2, stored[:, 0] > 0)):
        assert sizes[j] == mine.sum()
        bucket = VectorFile(node / f"{j}.f", raw=(int(sizes[j]), 16, "float16"))
        assert np.array_equal(bucket.rows(0, len(bucket), stored=True), stored[mine])  # same bytes, same order
        assert np.array_equal(np.fromfile(node / f"{j}.i", dtype=np.int64), rows[mine])
    assert sizes[1] == 0


def test_rq_from_a_file_equals_rq_in_memory(tmp_path):
    x = _blobs(3000)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    want = kmeans.residual_kmeans(unit, levels=3, codebook=8, seed=0, sample=1000)
    got = residual_kmeans(_file(tmp_path, x), levels=3, codebook=8, seed=0, sample=1000, chunk=700)
    assert np.array_equal(got, want)


def test_structured_from_a_file_equals_in_memory_when_it_fits(tmp_path):
    x = _blobs(900)
    want = kmeans.hierarchical_kmeans(x, k=4, c=10, seed=0, progress=False)
    got = hierarchical_kmeans(_file(tmp_path, x), k=4, c=10, seed=0, in_memory_rows=10_000, workdir=tmp_path)
    assert [tuple(int(v) for v in row if v >= 0) for row in got] == want


def test_structured_out_of_core_paths_are_unique_and_bounded_and_follow_the_clusters(tmp_path):
    x, blob = _blobs(3000, centres=4, labels=True)
    got = hierarchical_kmeans(_file(tmp_path, x), k=4, c=10, seed=0, in_memory_rows=200, sample=500, chunk=256,
                              workdir=tmp_path, backend="sklearn")  # k-means++ finds the blobs (faiss may merge two)
    paths = [tuple(int(v) for v in row if v >= 0) for row in got]
    assert len(set(paths)) == len(paths) == 3000
    assert all(p[-1] < 10 for p in paths) and all(v < 4 for p in paths for v in p[:-1])
    leaves: dict = {}
    for p in paths:
        leaves.setdefault(p[:-1], []).append(p)
    assert max(len(v) for v in leaves.values()) <= 10
    assert len(list(tmp_path.glob("grace-kmeans-*"))) == 0  # bucket files removed
    first = np.array([p[0] for p in paths])  # the out-of-core split: centroids from a 500-row sample
    for b in range(4):  # each blob lies (almost) wholly in one top-level cluster
        assert np.bincount(first[blob == b]).max() >= 0.9 * (blob == b).sum()


def test_structured_out_of_core_splits_identical_rows_evenly(tmp_path):
    x = np.ones((500, 8), np.float32)
    got = hierarchical_kmeans(_file(tmp_path, x), k=3, c=20, seed=0, in_memory_rows=100, sample=50,
                              workdir=tmp_path)
    paths = {tuple(int(v) for v in row if v >= 0) for row in got}
    assert len(paths) == 500


@pytest.mark.parametrize("scheme,settings", [("rq", {"levels": 2, "codebook": 8}), ("structured", {"k": 3, "c": 4})])
def test_ids_from_a_features_file_equal_ids_from_the_array(shared_tiny_dataset, tmp_path, scheme, settings):
    from grace.identifiers import create_scheme

    x = _blobs(len(shared_tiny_dataset))
    in_memory_ids = create_scheme(scheme, tokenizer="byte", **settings).build(shared_tiny_dataset, x)
    from_file = create_scheme(scheme, tokenizer="byte", **settings).build(shared_tiny_dataset, _file(tmp_path, x))
    assert from_file.image_to_id == in_memory_ids.image_to_id
    with pytest.raises(InputError, match="feature rows for"):
        create_scheme(scheme, tokenizer="byte", **settings).build(shared_tiny_dataset, _file(tmp_path, x[:-1]))


def test_ids_build_cli_reads_a_features_file(shared_tiny_dataset, tmp_path):
    import json

    from grace.cli import main

    _file(tmp_path, _blobs(len(shared_tiny_dataset)))
    args = ["ids", "build", "--dataset", str(shared_tiny_dataset.root.parent / "dataset.json"), "--scheme", "rq",
            "--levels", "2", "--codebook", "8", "--tokenizer", "byte", "--features-file", str(tmp_path / "x.npy"),
            "--out", str(tmp_path / "ids")]
    assert main(args) == 0
    ids = json.loads((tmp_path / "ids" / "ids.json").read_text())
    assert len(set(ids["image_to_id"].values())) == len(shared_tiny_dataset)
    assert main([*args[:4], "--scheme", "numeric", *args[10:]]) == 2  # a scheme that reads no features: an error
