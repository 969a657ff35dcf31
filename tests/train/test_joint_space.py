"""The generator in a joint image-text space (GENIUS): t2id rows and queries read their text's embedding.

Units: ``TextMedia`` (lookup, query augmentation), ``vision_batch`` filling t2id rows, ``FeatureSet.save``; and a
learning test: a tiny model trained on image embeddings and on text embeddings near them retrieves an image from
a query whose words it never saw, through the query's embedding alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import build_tiny_run, subprocess_env

from grace.data_process.features import FeatureSet
from grace.errors import InputError
from grace.train.data import Sample, TextMedia, VisionSource

DIM = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _joint_inputs(root: Path, values: dict, *, noise: float = 0.05) -> dict[str, np.ndarray]:
    """Replace the run's features by unit ``DIM``-d image embeddings, and write the text media cache: each t2id
    text's embedding is its image's plus noise. Returns image id -> embedding."""
    from grace.train.data import load_samples

    ids = json.loads((Path(values["features_cache"]) / "meta.json").read_text())["ids"]
    rng = np.random.default_rng(0)
    images = _unit(rng.standard_normal((len(ids), DIM)))
    FeatureSet(ids, images, "joint-test").save(root / "joint")
    owner = {}
    for sample in load_samples(Path(values["shards_dir"]), "t2id", keep_images=False):
        owner.setdefault(sample.text, sample.image_id)
    texts = sorted(owner)
    by_id = dict(zip(ids, images))
    rows = _unit(np.stack([by_id[owner[t]] for t in texts]) + noise * rng.standard_normal((len(texts), DIM)))
    (root / "tower").mkdir()
    (root / "tower" / "config.json").write_text("{}")
    FeatureSet(texts, rows, f"lit:{root / 'tower'}").save(root / "texts")
    return by_id


def test_feature_set_save_round_trips_any_string_ids(tmp_path):
    rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    FeatureSet(["a cat", "b", "ü, 'x'"], rows, "lit:/x").save(tmp_path / "c")
    loaded = FeatureSet.load(tmp_path / "c")
    assert loaded.ids == ["a cat", "b", "ü, 'x'"] and loaded.encoder == "lit:/x"
    np.testing.assert_array_equal(loaded.array, rows)
    with pytest.raises(InputError, match="pooled"):
        FeatureSet(["a"], np.zeros((1, 2, 2)), "x").save(tmp_path / "d")


def test_text_media_rows_and_query_augmentation(tmp_path):
    images = _unit(np.random.default_rng(1).standard_normal((3, DIM)))
    FeatureSet(["i0", "i1", "i2"], images, "joint").save(tmp_path / "images")
    texts = _unit(np.random.default_rng(2).standard_normal((2, DIM)))
    FeatureSet(["red", "blue"], 3 * texts, "lit:/tower").save(tmp_path / "texts")
    vision = VisionSource(features_cache=tmp_path / "images", n_visual_tokens=1)
    samples = [Sample("k0", "i2", "2", "blue", "t2id"), Sample("k1", "i0", "0", "red", "t2id")]

    plain = TextMedia(tmp_path / "texts").features(samples, draw=0)
    assert plain.shape == (2, 1, DIM)
    np.testing.assert_allclose(plain[:, 0].numpy(), 3 * texts[[1, 0]], rtol=1e-6)

    mixed = TextMedia(tmp_path / "texts", mix=1.0, seed=0)
    first = mixed.features(samples, draw=5, images=vision)[:, 0].numpy()
    np.testing.assert_array_equal(first, mixed.features(samples, draw=5, images=vision)[:, 0].numpy())  # resume
    assert not np.allclose(first, mixed.features(samples, draw=6, images=vision)[:, 0].numpy())
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 3.0, rtol=1e-5)  # the text's norm is kept
    gold = images[[2, 0]]
    cos_gold = (first * gold).sum(1) / 3
    cos_text_gold = (texts[[1, 0]] * gold).sum(1)
    assert (cos_gold > cos_text_gold).all()  # mixed towards each row's own image

    with pytest.raises(InputError, match="no embedding"):
        TextMedia(tmp_path / "texts").features([Sample("k", "i0", "0", "green", "t2id")])
    with pytest.raises(InputError, match="same space"):
        mixed.features(samples, draw=0, images=None)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        TextMedia(tmp_path / "texts", mix=1.5)
    FeatureSet(["red"], texts[:1], "no-tower").save(tmp_path / "bare")
    with pytest.raises(InputError, match="KIND:PATH"):
        TextMedia(tmp_path / "bare")


def test_vision_batch_fills_t2id_rows_with_text_media(tmp_path):
    from grace.train.trainer import vision_batch

    images = _unit(np.random.default_rng(1).standard_normal((2, DIM)))
    FeatureSet(["i0", "i1"], images, "joint").save(tmp_path / "images")
    FeatureSet(["red"], images[:1] * 2, "lit:/tower").save(tmp_path / "texts")
    vision = VisionSource(features_cache=tmp_path / "images", n_visual_tokens=1)

    class Module:
        @staticmethod
        def null_vision_features(batch_size: int) -> torch.Tensor:
            return torch.zeros(batch_size, 1, 1, DIM)

    rows = [Sample("a", "i1", "1", "", "i2id"), Sample("b", "i0", "0", "red", "t2id")]
    without = vision_batch(Module, vision, rows, 3, "cpu", torch.float32)
    assert torch.equal(without[1:], torch.zeros(2, 1, 1, DIM))  # the null image
    with_media = vision_batch(Module, vision, rows, 3, "cpu", torch.float32, text_media=TextMedia(tmp_path / "texts"))
    np.testing.assert_allclose(with_media[0, 0, 0].numpy(), images[1])
    np.testing.assert_allclose(with_media[1, 0, 0].numpy(), 2 * images[0])
    assert torch.equal(with_media[2], torch.zeros(1, 1, DIM))  # a padding row stays null


def _train(tmp_path: Path, values: dict) -> Path:
    (tmp_path / "cfg.json").write_text(json.dumps(values))
    proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--config", str(tmp_path / "cfg.json")],
                          env=subprocess_env(), capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(values["output_dir"]) / "export"


def _rq_ids(root: Path, dataset, by_id: dict[str, np.ndarray]) -> None:
    """Replace the run's numeric ids (and its trie and shards) by rq ids over the joint image embeddings, as
    ``grace ablate --vision-space clip_faiss --schemes rq`` builds them: 2 levels of 4 codes, then a position."""
    import shutil

    from grace.data_process.shards import write_shards
    from grace.identifiers import build_trie, create_scheme

    ids = [r.image_id for r in dataset.images]
    idmap = create_scheme("rq", levels=2, codebook=4, seed=0, tokenizer="byte").build(
        dataset, FeatureSet(ids, np.stack([by_id[i] for i in ids]), "joint-test"))
    assert len(set(idmap.identifiers())) == len(ids) and all(i.startswith("<Q0_") for i in idmap.identifiers())
    for folder in ("ids", "trie", "shards"):
        shutil.rmtree(root / folder)
    idmap.save(root / "ids")
    build_trie(idmap, idmap.tokenizer()).save(root / "trie")
    queries = {r.image_id: r.meta["keywords"][:2] for r in dataset.images if r.split == "test"}
    write_shards(dataset, idmap, root / "shards", pseudo_queries=queries, progress=False)


@pytest.mark.parametrize("scheme", ["numeric", "rq"])
def test_generator_in_the_joint_space_retrieves_through_the_query_embedding(tmp_path, shared_tiny_dataset, scheme):
    """Trained on image embeddings (i2id) and text embeddings near them (t2id), the model retrieves each of the 24
    images from a query whose words it never saw, given the query's embedding (near its image's): far above
    chance (1/24), and it follows the embedding: a query given another image's embedding finds that image. With
    ``rq`` ids (the residual codes of those embeddings) this is the rq learning test."""
    from grace.identifiers import IdentifierMap, Trie
    from grace.infer.retriever import GenerativeRetriever, query_media_spec
    from grace.model.config import CONFIG_DIR
    from grace.retriever import Query

    values = build_tiny_run(tmp_path, shared_tiny_dataset)
    by_id = _joint_inputs(tmp_path, values)
    if scheme == "rq":
        _rq_ids(tmp_path, shared_tiny_dataset, by_id)
    tiny = json.loads((CONFIG_DIR / "tiny.json").read_text())
    model_json = tmp_path / "tiny-joint.json"
    model_json.write_text(json.dumps(dict(tiny, name="tiny-joint", vis_dim=DIM, n_visual_tokens=1,
                                          perceiver_latents_in_keys=False)))
    values.update(model=str(model_json), features_cache=str(tmp_path / "joint"), t2id_media=str(tmp_path / "texts"),
                  t2id_media_mix=0.5, steps=300, lr=1e-2, warmup_steps=5, batch_size_i2id=8, batch_size_t2id=8,
                  output_head="ids", zero_stage=0)
    export = _train(tmp_path, values)

    spec = query_media_spec(export)
    assert spec == {"encoder": "lit", "dir": "query_encoder", "dim": DIM, "mix": 0.5}
    assert (export / "query_encoder" / "config.json").is_file()  # the text tower travels with the model
    with pytest.raises(InputError, match="query's embedding"):
        GenerativeRetriever.load(export, device="cpu")

    ids = sorted(by_id)
    words = {image_id: f"zq{i}x vw{i}" for i, image_id in enumerate(ids)}  # never in training
    gold_of = {text: image_id for image_id, text in words.items()}
    shifted = dict(zip(ids, ids[1:] + ids[:1]))
    rng = np.random.default_rng(3)

    def media(target):
        return lambda texts: _unit(np.stack([by_id[target(gold_of[t])] for t in texts])
                                   + 0.05 * rng.standard_normal((len(texts), DIM)))

    def top1(query_media) -> list[str]:
        retriever = GenerativeRetriever.load(export, device="cpu", num_beams=4, query_media=query_media)
        assert isinstance(retriever.idmap, IdentifierMap) and isinstance(retriever.trie, Trie)
        assert retriever.idmap.scheme == scheme
        return [hits[0].image_id for hits in retriever.search([Query(text=words[i]) for i in ids], k=1)]

    own = top1(media(lambda gold: gold))
    assert np.mean([a == b for a, b in zip(own, ids)]) >= 0.5  # chance: 1/24
    moved = top1(media(lambda gold: shifted[gold]))
    assert np.mean([a == shifted[b] for a, b in zip(moved, ids)]) >= 0.5
    assert np.mean([a == b for a, b in zip(moved, ids)]) <= 0.1
