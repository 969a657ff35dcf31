"""Identifier schemes: uniqueness, round trip, determinism, structured shape, semantic leakage, bad input."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from ids_helpers import random_features

from grace.data_process.dataset import Dataset, ImageRecord
from grace.errors import GraceError
from grace.identifiers import IdentifierMap, create_scheme
from grace.identifiers.kmeans import hierarchical_kmeans

SCHEMES = ("numeric", "string", "semantic", "structured", "atomic", "rq")


def _build(name, dataset, seed=0, **cfg):
    return create_scheme(name, seed=seed, tokenizer="byte", **cfg).build(
        dataset, random_features(len(dataset), seed=seed), pseudo_queries=tagged_pseudo_queries(dataset))


def tagged_pseudo_queries(dataset):
    """The held-out images' keyword pseudo-queries (the tagged protocol's), through the leak filter."""
    from grace.data_process.pseudo_queries import KeywordPseudoQueries, build_pseudo_queries

    return build_pseudo_queries(dataset, KeywordPseudoQueries()).queries


@pytest.mark.parametrize("name", SCHEMES)
def test_unique_round_trip_and_save_load(name, shared_tiny_dataset, tmp_path):
    idmap = _build(name, shared_tiny_dataset, k=3, c=4)
    ids = idmap.identifiers()
    assert len(ids) == len(shared_tiny_dataset) == len(set(ids))
    for record in shared_tiny_dataset.images:
        assert idmap.to_image(idmap.to_id(record.image_id)) == record.image_id
    idmap.save(tmp_path / name)
    assert {"ids.json", "config.json", "tokenizer"} <= {p.name for p in (tmp_path / name).iterdir()}
    again = IdentifierMap.load(tmp_path / name)
    assert again.image_to_id == idmap.image_to_id and again.scheme == name
    assert again.config["seed"] == 0 and again.config["scheme"] == name


@pytest.mark.parametrize("name", SCHEMES)
def test_deterministic_under_seed(name, shared_tiny_dataset):
    a = _build(name, shared_tiny_dataset, seed=1, k=3, c=4).image_to_id
    b = _build(name, shared_tiny_dataset, seed=1, k=3, c=4).image_to_id
    assert a == b
    if name in ("numeric", "string", "structured"):  # random schemes: another seed gives other ids
        assert a != _build(name, shared_tiny_dataset, seed=2, k=3, c=4).image_to_id


def test_formats(shared_tiny_dataset):
    numeric = _build("numeric", shared_tiny_dataset)
    string = _build("string", shared_tiny_dataset)
    for image_id in shared_tiny_dataset.image_ids():
        assert re.fullmatch(r"\d( \d)*", numeric.to_id(image_id))
        assert numeric.to_id(image_id).replace(" ", "") == string.to_id(image_id)  # same permuted index
    assert sorted(int(s) for s in string.identifiers()) == list(range(len(shared_tiny_dataset)))
    atomic = _build("atomic", shared_tiny_dataset)
    assert atomic.identifiers()[:2] == ["<img_0>", "<img_1>"]


def _paths(idmap):
    return [tuple(int(x) for x in re.findall(r"<L\d+_(\d+)>", i)) for i in idmap.identifiers()]


@pytest.mark.parametrize("k,c,n", [(3, 4, 24), (2, 1, 24), (30, 30, 10), (4, 5, 200)])
def test_structured_shape(k, c, n):
    paths = hierarchical_kmeans(random_features(n, seed=n), k=k, c=c, seed=0, progress=False)
    assert len(set(paths)) == n
    children: dict[tuple, set] = {}
    for path in paths:
        for depth in range(len(path) - 1):
            children.setdefault(path[:depth], set()).add(path[depth])
    assert all(len(v) <= k for v in children.values())  # no node has more than k clusters
    leaves = Counter(p[:-1] for p in paths)
    assert max(leaves.values()) <= c  # leaves hold at most c images
    assert all(p[-1] < c for p in paths)
    if n <= c:
        assert all(len(p) == 1 for p in paths)  # N < k (and <= c): one leaf, ids = positions


def test_structured_levels_and_identical_features(shared_tiny_dataset):
    idmap = _build("structured", shared_tiny_dataset, k=3, c=4)
    assert all(re.fullmatch(r"(<L\d+_\d+>)+", i) for i in idmap.identifiers())
    for identifier in idmap.identifiers():  # one token per level, levels 0, 1, 2, ... in order
        levels = [int(x) for x in re.findall(r"<L(\d+)_\d+>", identifier)]
        assert levels == list(range(len(levels)))
    assert max(len(p) for p in _paths(idmap)) >= 2  # 24 images, c=4: really hierarchical
    # identical features cannot be split by k-means: the fallback still terminates with unique ids
    same = np.ones((50, 4), dtype=np.float32)
    paths = hierarchical_kmeans(same, k=3, c=4, seed=0, progress=False)
    assert len(set(paths)) == 50 and max(Counter(p[:-1] for p in paths).values()) <= 4


def test_structured_featureset_reordered(shared_tiny_dataset):
    from types import SimpleNamespace

    feats = random_features(len(shared_tiny_dataset))
    ids = shared_tiny_dataset.image_ids()
    order = np.random.default_rng(0).permutation(len(ids))
    fs = SimpleNamespace(ids=[ids[i] for i in order], array=feats[order], encoder="x")
    scheme = create_scheme("structured", tokenizer="byte", k=3, c=4)
    assert scheme.build(shared_tiny_dataset, fs).image_to_id == scheme.build(shared_tiny_dataset, feats).image_to_id


def test_semantic_never_uses_held_out_captions(shared_tiny_dataset):
    idmap = _build("semantic", shared_tiny_dataset)
    held_out = {t.lower() for r in shared_tiny_dataset.images if r.split != "train" for t in r.texts}
    assert held_out
    for record in shared_tiny_dataset.images:
        identifier = idmap.to_id(record.image_id)
        assert identifier.lower() not in held_out
        if record.split == "train":
            assert identifier == record.texts[0]
        else:  # a keyword pseudo-query: a keyword, or the keywords joined into one phrase
            assert set(identifier.split()) <= {w for k in record.meta["keywords"] for w in k.split()}
    # other train captions are aliases of their image
    record = shared_tiny_dataset.split("train")[0]
    assert idmap.to_image(record.texts[1]) == record.image_id


def test_semantic_duplicates_disambiguated(tmp_path):
    records = [ImageRecord(f"i{n}", tmp_path / f"{n}.png", "train", ["a dog"]) for n in range(3)]
    idmap = create_scheme("semantic", tokenizer="byte").build(Dataset(records), None)
    assert idmap.identifiers() == ["a dog", "a dog 2", "a dog 3"]


def test_bad_input(shared_tiny_dataset):
    with pytest.raises(GraceError, match="unknown identifier scheme"):
        create_scheme("bogus")
    with pytest.raises(GraceError, match="unknown settings"):
        create_scheme("numeric", kk=3)
    with pytest.raises(GraceError, match="no images"):
        create_scheme("numeric").build(Dataset([]), None)
    with pytest.raises(GraceError, match="features have shape"):
        create_scheme("structured").build(shared_tiny_dataset, random_features(5))
    with pytest.raises(GraceError, match="needs image features"):
        create_scheme("structured").build(shared_tiny_dataset, None)
    with pytest.raises(GraceError, match="shared by several images"):
        IdentifierMap("numeric", {"a": "1", "b": "1"})
    with pytest.raises(GraceError, match="unknown identifier"):
        _build("numeric", shared_tiny_dataset).to_image("9 9 9")


def _fruit_and_vehicles(tmp_path, keywords: bool = True) -> Dataset:
    fruit = ["red apple fruit", "ripe banana fruit", "green pear fruit", "sweet cherry fruit", "fresh orange fruit",
             "tropical mango fruit"]
    vehicle = ["fast red car", "big yellow bus", "old green truck", "small blue van", "police motorcycle",
               "delivery lorry"]
    records = [ImageRecord(f"t{n}", tmp_path / f"t{n}.png", "train", [text]) for n, text in enumerate(fruit + vehicle)]
    records += [ImageRecord("h_fruit", tmp_path / "h1.png", "test", ["a fast racing car"],
                            meta={"keywords": ["plum fruit", "juicy plum"]} if keywords else {}),
                ImageRecord("h_vehicle", tmp_path / "h2.png", "test", ["a ripe apple"],
                            meta={"keywords": ["delivery truck", "vehicle"]} if keywords else {})]
    return Dataset(records)


def test_ids_read_the_runs_pseudo_queries_never_a_held_out_query(tmp_path):
    """Held-out images without keywords (e.g. Flickr30K with captioned pseudo-queries): text-clustered and
    semantic ids read the pseudo-queries given; one equal to a held-out query (here its own caption) is dropped."""
    dataset = _fruit_and_vehicles(tmp_path, keywords=False)
    given = {"h_fruit": ["a fast racing car", "plum fruit", "juicy plum"], "h_vehicle": ["delivery truck"]}
    features = np.zeros((len(dataset), 4), np.float32)
    idmap = create_scheme("structured", tokenizer="byte", k=2, c=7, cluster_on="text", seed=2).build(
        dataset, features, pseudo_queries=given)
    top = {r.image_id: idmap.to_id(r.image_id).split(">")[0] for r in dataset.images}
    assert top["h_fruit"] == top["t0"] and top["h_vehicle"] == top["t6"] and top["t0"] != top["t6"]
    semantic = create_scheme("semantic", tokenizer="byte").build(dataset, pseudo_queries=given)
    assert semantic.to_id("h_fruit") == "plum fruit" and semantic.to_id("h_vehicle") == "delivery truck"
    assert semantic.config["pseudo_queries_digest"] != create_scheme("semantic", tokenizer="byte").build(
        dataset).config["pseudo_queries_digest"]
    assert "pseudo_queries_digest" not in create_scheme("structured", tokenizer="byte", k=2, c=7).build(
        dataset, features).config  # image clusters do not read texts
    # without them, the held-out images have no text: semantic falls back to a name, not a held-out query
    assert create_scheme("semantic", tokenizer="byte").build(dataset).to_id("h_fruit") == "image h_fruit"


def test_held_out_texts_never_fall_back_to_annotations(tmp_path):
    """Ids read only the run's pseudo-queries: a held-out image the run gave none has no text (under the
    image-only protocol its keywords are its annotation, and must not reach the ids); a leaking one is dropped."""
    from grace.identifiers.schemes import held_out_texts

    dataset = _fruit_and_vehicles(tmp_path)
    full = {"h_fruit": ["plum"], "h_vehicle": ["truck"]}
    assert held_out_texts(dataset, full) == full
    assert held_out_texts(dataset, {"h_fruit": ["plum"]}) == {"h_fruit": ["plum"]}
    assert held_out_texts(dataset) == {}
    held_out_query = next(r for r in dataset.images if r.image_id == "h_vehicle").texts[0]
    reworded = " ".join(reversed(held_out_query.split())).upper()
    assert held_out_texts(dataset, {"h_fruit": ["plum", reworded]}) == {"h_fruit": ["plum"]}


def test_structured_on_text_groups_by_visible_texts_only(tmp_path):
    """cluster_on=text: the first level splits fruit from vehicles by the texts training may read — a held-out
    image goes by its keywords (pseudo-queries), never by its held-out caption (here deliberately misleading)."""
    dataset = _fruit_and_vehicles(tmp_path)
    records = dataset.images
    features = np.zeros((len(records), 4), np.float32)  # images carry no signal: only texts can split them
    # seed 2: one k-means init on 14 points depends on it (seed 0 starts both centroids in one group)
    scheme = create_scheme("structured", tokenizer="byte", k=2, c=7, cluster_on="text", seed=2)
    idmap = scheme.build(dataset, features, pseudo_queries=tagged_pseudo_queries(dataset))
    top = {r.image_id: idmap.to_id(r.image_id).split(">")[0] for r in records}
    fruit_ids = [f"t{n}" for n in range(6)] + ["h_fruit"]
    vehicle_ids = [f"t{n}" for n in range(6, 12)] + ["h_vehicle"]
    assert len({top[i] for i in fruit_ids}) == 1 and len({top[i] for i in vehicle_ids}) == 1
    assert top["h_fruit"] != top["h_vehicle"]
    assert idmap.config["cluster_on"] == "text"
    both = create_scheme("structured", tokenizer="byte", k=2, c=7, cluster_on="both").build(
        dataset, features, pseudo_queries=tagged_pseudo_queries(dataset))
    assert len(set(both.identifiers())) == len(records)
    with pytest.raises(GraceError, match="cluster_on"):
        create_scheme("structured", cluster_on="captions").build(dataset, features)
