"""``lit-captions`` pseudo-queries: the training captions a held-out image's LiT embedding is nearest to (the dense
retriever's view), from its features alone; heads trained once and reused, or given; one caption per training
image when asked; reachable by name through the generators' entry points."""

from __future__ import annotations

import numpy as np
import pytest

from grace.data_process.features import FeatureSet
from grace.data_process.pseudo_queries import build_pseudo_queries
from grace.data_process.synthetic import COLOURS, SHAPES, build_synthetic
from grace.errors import GraceError
from grace.retrieval_baselines.clip_faiss import pseudo_queries as lit_pq
from grace.retrieval_baselines.clip_faiss.pseudo_queries import LitCaptionPseudoQueries

FIT = {"epochs": 150, "batch_size": 32}


def _features(dataset) -> FeatureSet:
    """1280-d features that say an image's colour and shape (a block of 16 dimensions each, over noise)."""
    rows = np.random.default_rng(0).uniform(0, 0.5, (len(dataset), 1280)).astype(np.float32)
    for i, record in enumerate(dataset.images):
        _, colour, shape = record.image_id.split("-")
        rows[i, 16 * list(COLOURS).index(colour):][:16] += 3.0
        rows[i, 640 + 16 * SHAPES.index(shape):][:16] += 3.0
    return FeatureSet(ids=dataset.image_ids(), array=rows, encoder="test")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    dataset = build_synthetic(tmp_path_factory.mktemp("lit") / "data", n_images=64)
    for record in dataset.split("test"):  # the held-out texts must never matter
        record.texts = ["secret words"]
    return dataset


def test_lit_captions_are_the_training_captions_the_joint_space_puts_beside_the_image(shapes, tmp_path, monkeypatch):
    features = _features(shapes)
    generator = LitCaptionPseudoQueries(shapes, features, workdir=tmp_path, max_queries=4, **FIT)
    made = build_pseudo_queries(shapes, generator)
    test = shapes.split("test")
    assert set(made.queries) == {r.image_id for r in test}
    train_texts = {t for r in shapes.split("train") for t in r.texts}
    right = 0
    for record in test:
        texts = made.queries[record.image_id]
        assert texts and set(texts) <= train_texts  # only training captions, never the held-out text
        _, colour, shape = record.image_id.split("-")
        right += colour in texts[0] and shape in texts[0]
    assert right >= len(test) // 2, made.queries  # the best caption names what the features show
    shuffled = FeatureSet(features.ids, features.array[np.random.default_rng(1).permutation(len(features))], "test")
    control = build_pseudo_queries(shapes, LitCaptionPseudoQueries(shapes, shuffled, workdir=tmp_path / "control",
                                                                   max_queries=4, **FIT))
    wrong = sum(r.image_id.split("-")[1] in control.queries[r.image_id][0]
                and r.image_id.split("-")[2] in control.queries[r.image_id][0] for r in test)
    assert wrong < right  # with features that say nothing about the image, it does not know

    # the same settings: the heads trained above are reused; a heads folder given is used as it is
    monkeypatch.setattr(lit_pq, "fit_heads", lambda *a, **kw: pytest.fail("trained again"))
    again = LitCaptionPseudoQueries(shapes, features, workdir=tmp_path, max_queries=4, **FIT)
    assert build_pseudo_queries(shapes, again).queries == made.queries
    given = LitCaptionPseudoQueries(shapes, features, heads=str(tmp_path / "heads"), max_queries=4)
    assert build_pseudo_queries(shapes, given).queries == made.queries

    # at most one caption of each training image: every image's two captions cannot both be kept
    owner = {t: r.image_id for r in shapes.split("train") for t in r.texts}
    capped = LitCaptionPseudoQueries(shapes, features, workdir=tmp_path, max_queries=4, per_image=1, **FIT)
    for texts in build_pseudo_queries(shapes, capped).queries.values():
        assert len({owner[t] for t in texts}) == len(texts)


def test_lit_captions_refuse_what_they_cannot_use(shapes, tmp_path):
    from grace.data_process.pseudo_queries import create_pseudo_query_generator, plugin_generators

    features = _features(shapes)
    with pytest.raises(GraceError, match="max_queries >= 1"):
        LitCaptionPseudoQueries(shapes, features, workdir=tmp_path, max_queries=0)
    with pytest.raises(GraceError, match="heads=DIR or a working folder"):
        LitCaptionPseudoQueries(shapes, features)
    with pytest.raises(GraceError, match="needs the dataset and its features"):
        LitCaptionPseudoQueries(shapes, None, workdir=tmp_path)
    assert "lit-captions" in plugin_generators()  # installed as an entry point, so `--generator lit-captions` finds it
    with pytest.raises(GraceError, match="needs the dataset and its features"):
        create_pseudo_query_generator("lit-captions", dataset=shapes, features=None, workdir=tmp_path)
