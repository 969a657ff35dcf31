"""grace.faiss_device: where faiss runs is asked once, recorded in the ids' and the dense index's configs, and a
missing faiss is a one-line error naming both extras (this machine has faiss-cpu: everything runs on the CPU)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from grace.errors import GraceError
from grace.faiss_device import faiss_device, faiss_gpus, import_faiss


def test_faiss_cpu_build_runs_on_the_cpu_and_says_so(shared_tiny_dataset, tmp_path, caplog):
    from grace.identifiers import create_scheme
    from grace.retrieval_baselines.clip_faiss.index import DenseIndex, train_index

    assert faiss_gpus() == 0 and faiss_device("k-means") == "cpu"
    features = np.random.default_rng(0).normal(size=(len(shared_tiny_dataset), 16)).astype(np.float32)
    ids = create_scheme("structured", k=3, c=4, tokenizer="byte").build(shared_tiny_dataset, features)
    assert ids.config["kmeans_device"] == "cpu"
    assert create_scheme("structured", k=3, c=4, kmeans="sklearn", tokenizer="byte").build(
        shared_tiny_dataset, features).config["kmeans_device"] == "cpu"
    index = train_index(features, "Flat")
    dense = DenseIndex(index, {"row_image": shared_tiny_dataset.image_ids()}, {"nprobe": 1})
    assert dense.on_gpu is False


def test_missing_faiss_is_a_one_line_error_naming_both_extras(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss → ImportError, as without either wheel
    with pytest.raises(GraceError, match=r"grace\[cpu\].*grace\[gpu\]") as err:
        import_faiss()
    assert "\n" not in str(err.value)
    with pytest.raises(GraceError, match="faiss is not installed"):
        faiss_device("k-means")
