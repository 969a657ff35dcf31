"""The sibling control: the training image whose texts match the query, then the held-out images that look
like it; saved and loaded like every retriever."""

from __future__ import annotations

import numpy as np
import pytest

from grace.data_process.dataset import Dataset, ImageRecord
from grace.data_process.features import FeatureSet
from grace.errors import InputError
from grace.retrieval_baselines.sibling import SiblingRetriever
from grace.retriever import Query


def _family_dataset(tmp_path):
    """Train: "man pilot", "man cook", "red apple"; test: "woman pilot", "woman cook", "green apple", "tree":
    each test image looks like its train sibling (features), so the lookup finds it without any model."""
    rows = [("t-pilot", "train", ["man pilot", "aeroplane captain"], [1, 0, 0, 0]),
            ("t-cook", "train", ["man cook", "chef"], [0, 1, 0, 0]),
            ("t-apple", "train", ["red apple", "fruit"], [0, 0, 1, 0]),
            ("x-pilot", "test", ["woman pilot"], [0.9, 0.1, 0, 0]),
            ("x-cook", "test", ["woman cook"], [0.1, 0.9, 0, 0.1]),
            ("x-apple", "test", ["green apple"], [0, 0.1, 0.9, 0]),
            ("x-tree", "test", ["tree"], [0, 0, 0.2, 1])]
    records = [ImageRecord(i, tmp_path / f"{i}.png", split, texts) for i, split, texts, _ in rows]
    features = FeatureSet([r[0] for r in rows], np.array([r[3] for r in rows], dtype=np.float32), "fake")
    return Dataset(records), features


def test_sibling_finds_the_look_alike_of_the_matching_training_image(tmp_path):
    dataset, features = _family_dataset(tmp_path)
    sibling = SiblingRetriever.from_dataset(dataset, features)
    assert sibling.siblings(["woman pilot", "a chef", "apple"]) == ["t-pilot", "t-cook", "t-apple"]
    hits = sibling.search([Query(text="woman pilot"), Query(text="chef at work"), Query(text="apple")], k=2)
    assert [h[0].image_id for h in hits] == ["x-pilot", "x-cook", "x-apple"]
    assert all(len(h) == 2 and h[0].score >= h[1].score for h in hits)
    assert {h.image_id for hs in hits for h in hs} <= {"x-pilot", "x-cook", "x-apple", "x-tree"}  # never a train image


def test_sibling_saves_loads_and_refuses_image_queries(tmp_path):
    from grace.experiments.retrievers import load_retriever

    dataset, features = _family_dataset(tmp_path)
    index = SiblingRetriever.from_dataset(dataset, features, seed=3).save(tmp_path / "index")
    loaded = load_retriever(f"sibling:{index}")
    assert loaded.name == "sibling" and loaded.config["corpus_size"] == 4 and loaded.config["seed"] == 3
    assert [h.image_id for h in loaded.search([Query(text="man cook")], 1)[0]] == ["x-cook"]
    with pytest.raises(InputError, match="text queries only"):
        loaded.search([Query(image=tmp_path / "x.png")], 1)
    with pytest.raises(InputError, match="no val images"):
        SiblingRetriever.from_dataset(dataset, features, corpus_split="val")
