"""rq ids: residual quantisation of an embedding; each level codes what the levels before it left over."""

from __future__ import annotations

import re

import numpy as np
import pytest

from grace.data_process.dataset import Dataset, ImageRecord
from grace.errors import GraceError
from grace.identifiers import create_scheme
from grace.identifiers.kmeans import residual_kmeans


def _two_scale_points(seed=0):
    """4 far-apart coarse centres x 4 small offsets (the same 4 around every centre) x 8 noisy copies."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(4, 8)) * 100.0
    fine = rng.normal(size=(4, 8)) * 5.0
    points, coarse_label, fine_label = [], [], []
    for i in range(4):
        for j in range(4):
            for _ in range(8):
                points.append(coarse[i] + fine[j] + rng.normal(size=8) * 0.1)
                coarse_label.append(i)
                fine_label.append(j)
    return np.asarray(points, np.float32), np.asarray(coarse_label), np.asarray(fine_label)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings group the points identically (up to renaming the labels)."""
    return len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


def test_level_two_codes_the_residual_not_the_coarse_clusters_again():
    x, coarse, fine = _two_scale_points()
    codes = residual_kmeans(x, levels=2, codebook=4, seed=0, backend="sklearn")  # k-means++: no local optimum
    assert _same_partition(codes[:, 0], coarse)  # level 0: the coarse centres
    # level 1 clusters x minus its level-0 centroid: the offsets, shared across centres. Clustering x itself
    # again (no residual) would find the coarse centres a second time.
    assert _same_partition(codes[:, 1], fine)
    assert codes.shape == (128, 2) and codes.dtype == np.int64


def _dataset(n):
    return Dataset([ImageRecord(f"img{i}", None, "train", [f"caption {i}"]) for i in range(n)], name="rq-test")


def test_rq_ids_are_unique_one_token_per_level_and_the_reserved_first_code():
    x = np.random.default_rng(0).normal(size=(128, 16)).astype(np.float32)
    idmap = create_scheme("rq", levels=2, codebook=8, seed=0, tokenizer="byte").build(_dataset(len(x)), x)
    ids = idmap.identifiers()
    assert len(set(ids)) == len(ids) == 128
    assert all(re.fullmatch(r"<Q0_\d+><Q1_\d+><Q2_\d+>", i) for i in ids)
    positions = [int(re.search(r"<Q2_(\d+)>", i).group(1)) for i in ids]
    assert 0 < max(positions) < 8 and positions.count(0) == len({i.rsplit("<Q2_", 1)[0] for i in ids})
    first = create_scheme("rq", levels=2, codebook=8, reserve_first="image", tokenizer="byte").build(
        _dataset(len(x)), x)
    assert all(i.startswith("<M_image><Q0_") for i in first.identifiers())
    tokens = first.tokenizer()
    assert len(tokens.encode_identifier(first.identifiers()[0])) == 4  # <M_image>, two codes, the position


def test_rq_too_small_to_make_ids_unique_is_a_one_line_error():
    same = np.ones((10, 4), np.float32)
    with pytest.raises(GraceError, match=r"levels x codebook \(1 x 4\) is too small"):
        create_scheme("rq", levels=1, codebook=4, tokenizer="byte").build(_dataset(10), same)
    with pytest.raises(GraceError, match="levels >= 1 and codebook >= 2"):
        residual_kmeans(same, levels=0, codebook=4)
