"""``self-caption`` pseudo-queries: the project's Flamingo learns to caption the training images from their
features, captions held-out images from their features alone (never their texts), and a second run reuses
the trained model and the cached captions instead of training or decoding again."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grace.data_process.features import FeatureSet
from grace.data_process.pseudo_queries import build_pseudo_queries, create_pseudo_query_generator
from grace.data_process.synthetic import COLOURS, SHAPES
from grace.errors import GraceError

SETTINGS = {"steps": 200, "batch_size": 16, "num_captions": 2, "max_new_tokens": 6, "warmup_steps": 10}


def _features(dataset) -> FeatureSet:
    """1280-d features that say an image's colour and shape (a block of 16 dimensions each, over noise), as a
    real encoder's would."""
    rows = np.random.default_rng(0).uniform(0, 0.5, (len(dataset), 1280)).astype(np.float32)
    for i, record in enumerate(dataset.images):
        _, colour, shape = record.image_id.split("-")
        rows[i, 16 * list(COLOURS).index(colour):][:16] += 3.0
        rows[i, 640 + 16 * SHAPES.index(shape):][:16] += 3.0
    return FeatureSet(ids=dataset.image_ids(), array=rows, encoder="test")


def test_self_captions_learn_from_the_image_and_resume(tiny_dataset, tmp_path, monkeypatch):
    for record in tiny_dataset.split("test"):  # the held-out texts must never matter
        record.texts = ["secret words"]
    features = _features(tiny_dataset)
    generator = create_pseudo_query_generator("self-caption", dataset=tiny_dataset, features=features,
                                              workdir=tmp_path / "sc", **SETTINGS)
    losses = json.loads((tmp_path / "sc" / "model" / "losses.json").read_text())
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10])  # it learns to caption
    made = build_pseudo_queries(tiny_dataset, generator)
    test = tiny_dataset.split("test")
    assert set(made.queries) == {r.image_id for r in test} and made.generator == "self-caption"
    right = 0
    for record in test:
        texts = " ".join(made.queries[record.image_id])
        assert "secret" not in texts
        _, colour, shape = record.image_id.split("-")
        right += colour in texts or shape in texts
    assert right >= 3, made.queries  # the captions describe what the features show
    assert len({tuple(made.queries[r.image_id]) for r in test}) > 1  # not one caption for every image

    # a run killed while captioning left one finished line and half a line: only the rest is decoded
    from grace.train import self_caption

    cache = tmp_path / "sc" / "captions.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text(lines[0] + "\n" + lines[1][:len(lines[1]) // 2])
    decoded, caption = [], self_caption.SelfCaptionPseudoQueries._caption
    monkeypatch.setattr(self_caption.SelfCaptionPseudoQueries, "_caption",
                        lambda self, ids: decoded.extend(ids) or caption(self, ids))
    resumed = create_pseudo_query_generator("self-caption", dataset=tiny_dataset, features=features,
                                            workdir=tmp_path / "sc", **SETTINGS)
    assert build_pseudo_queries(tiny_dataset, resumed).queries == made.queries
    assert sorted(decoded) == sorted(r.image_id for r in test if r.image_id != json.loads(lines[0])["image_id"])
    assert len([json.loads(line) for line in cache.read_text().splitlines()]) == len(test)  # the cut line is gone

    # a second run with the same settings: the model is reloaded and the cached captions are reused

    monkeypatch.setattr(self_caption.SelfCaptionPseudoQueries, "_train", lambda *a: pytest.fail("trained again"))
    monkeypatch.setattr(self_caption.SelfCaptionPseudoQueries, "_caption", lambda *a: pytest.fail("decoded again"))
    again = create_pseudo_query_generator("self-caption", dataset=tiny_dataset, features=features,
                                          workdir=tmp_path / "sc", **SETTINGS)
    assert build_pseudo_queries(tiny_dataset, again).queries == made.queries
    with pytest.raises(GraceError, match="unknown self-caption settings"):
        create_pseudo_query_generator("self-caption", dataset=tiny_dataset, features=features, workdir=tmp_path,
                                      beams=3)
