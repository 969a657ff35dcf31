"""Bad inputs give one-line GraceErrors naming the file or entry."""

from __future__ import annotations

import numpy as np
import pytest

from grace.cli import main
from grace.errors import GraceError, InputError
from grace.retrieval_baselines.clip_faiss.extract import FeatureSet, load_features, save_features
from grace.retrieval_baselines.clip_faiss.index import DenseIndex, train_index


def _features(tmp_path, image_dim=8, text_dim=8):
    fs = FeatureSet(np.ones((2, image_dim)), np.ones((1, text_dim)),
                    {"ids": ["a", "b"], "sources": ["", ""], "texts": ["x"], "text_owner": [0], "model": "m", "dim": 8})
    save_features(tmp_path, fs)
    return tmp_path


def test_missing_feature_file(tmp_path):
    (_features(tmp_path) / "text.npy").unlink()
    with pytest.raises(InputError, match="text.npy: feature file missing"):
        load_features(tmp_path)


def test_dimension_mismatch(tmp_path):
    with pytest.raises(InputError, match=r"text.npy has shape \(1, 5\), expected \(N, 8\)"):
        load_features(_features(tmp_path, text_dim=5))
    index = DenseIndex(train_index(np.eye(8, dtype=np.float32), "Flat", use_gpu=False), {"row_image": list("abcdefgh")},
                       {}, use_gpu=False)
    with pytest.raises(InputError, match=r"shape \(1, 4\), the index expects \(Q, 8\)"):
        index.search(np.ones((1, 4)), 3)


def test_empty_query_and_bad_specs(tmp_path, capsys):
    from grace.retriever import Query

    with pytest.raises(InputError, match="empty query"):
        Query(text="   ")
    with pytest.raises(GraceError, match="unknown index type 'HNSW'"):
        train_index(np.eye(8, dtype=np.float32), "HNSW", use_gpu=False)
    with pytest.raises(GraceError, match="PQ3 needs m to divide"):
        train_index(np.eye(8, dtype=np.float32), "IVF2_PQ3", use_gpu=False)
    assert main(["baselines", "clip-faiss", "search", "--index", str(tmp_path)]) == 2
    assert "empty query" in capsys.readouterr().err
    assert main(["baselines", "clip-faiss", "search", "--index", str(tmp_path), "--texts", "a cat"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no index.faiss" in err
    assert main(["baselines", "clip-faiss", "merge", "--features", str(tmp_path)]) == 2
    assert "no finished chunks" in capsys.readouterr().err
    assert main(["baselines", "clip-faiss", "extract", "--source", str(tmp_path / "nope.json"), "--out",
                 str(tmp_path / "f"), "--model", "lit:x"]) == 2
    assert "nope.json: file not found" in capsys.readouterr().err


def test_unknown_or_unavailable_dual_encoder():
    import importlib.util

    from grace.retrieval_baselines.clip_faiss.dual_encoder import load_dual_encoder

    with pytest.raises(GraceError, match="unknown dual encoder 'clip'"):
        load_dual_encoder("clip")
    with pytest.raises(InputError, match="no heads.safetensors"):
        load_dual_encoder("lit:/nonexistent/heads")
    if importlib.util.find_spec("open_clip") is None:
        with pytest.raises(GraceError, match="pip install open_clip_torch torchvision"):
            load_dual_encoder("open_clip:ViT-B-32/openai")
