"""Stand-ins for the other stages (same interfaces as docs/DESIGN.md) to test the pipeline's orchestration
without them: each fake writes the marker file the real stage writes, and counts its calls. They reach the
pipeline as a :class:`~grace.experiments.pipeline.StageFunctions` (:func:`fake_stages`)."""

from __future__ import annotations

import json
import types
from pathlib import Path

from grace.data_process.features import FeatureSet, view_cache_dir  # the real type and layout
from grace.experiments.pipeline import StageFunctions
from infer_helpers import CharTokenizer, DictTrie, random_sequences, tiny_llama

CALLS: dict[str, int] = {}


def _count(name):
    CALLS[name] = CALLS.get(name, 0) + 1


class FakeTokenizer(CharTokenizer):
    def encode_identifier(self, identifier):
        return [int(t) for t in identifier.split()]


class FakeIdMap:
    def __init__(self, image_to_id, config=None):
        self.image_to_id = dict(image_to_id)
        self.config = dict(config or {})
        self._inv = {v: k for k, v in self.image_to_id.items()}

    def to_id(self, image_id):
        return self.image_to_id[image_id]

    def to_image(self, identifier):
        return self._inv[identifier]

    def save(self, out):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "ids.json").write_text(json.dumps(self.image_to_id))
        (Path(out) / "config.json").write_text(json.dumps(self.config))  # the settings, as IdentifierMap saves them

    @classmethod
    def load(cls, out):
        return cls(json.loads((Path(out) / "ids.json").read_text()))


class FakeScheme:
    def __init__(self, name, seed=0, **settings):
        self.name, self.seed, self.settings = name, seed, settings

    def build(self, dataset, features, pseudo_queries=None):
        _count(f"ids:{self.name}")
        seqs = random_sequences(len(dataset), 40, FakeTokenizer.eoc_token_id, seed=len(self.name))
        return FakeIdMap({r.image_id: " ".join(map(str, s[:-1])) for r, s in zip(dataset.images, seqs)},
                         {"scheme": self.name, "seed": self.seed, **self.settings})


class FakeTrie(DictTrie):
    def save(self, out):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "trie.json").write_text(json.dumps(self.sequences))

    @classmethod
    def load(cls, out):
        return cls(json.loads((Path(out) / "trie.json").read_text()))


def build_trie(idmap, tokenizer, image_ids=None):
    _count("trie")
    ids = image_ids or list(idmap.image_to_id)
    return FakeTrie([tokenizer.encode_identifier(idmap.to_id(i)) + [tokenizer.eoc_token_id] for i in ids])


def train(config):
    _count("train")
    export = Path(config.output_dir) / "export"
    export.mkdir(parents=True, exist_ok=True)
    return types.SimpleNamespace(export_dir=export, losses=[1.0], steps=config.steps)


def image_features(dataset, encoder="efficientnet-lite0", cache_dir=None, tokens=False, view=0, seed=0):
    _count("features" if view == 0 else f"features:view{view}")
    cache_dir = view_cache_dir(cache_dir, view)
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "meta.json").write_text("{}")
    if tokens:
        (cache_dir / "tokens.npy").write_text("")
    import numpy as np

    rows = np.random.default_rng(len(dataset)).standard_normal((len(dataset), 8)).astype(np.float32)
    return FeatureSet(ids=dataset.image_ids(), array=rows, encoder=encoder)


def write_shards(dataset, idmap, out_dir, *, pseudo_queries, max_per_shard=1000):
    _count("shards")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "shards.json").write_text("{}")


def fake_stages() -> StageFunctions:
    """The pipeline's lower stages as stand-ins (pseudo-queries, scheme settings and the train config stay real:
    they are cheap); ``run_ablation(config, stages=fake_stages())``."""
    CALLS.clear()
    return StageFunctions(image_features=image_features, create_scheme=FakeScheme, load_idmap=FakeIdMap.load,
                          build_trie=build_trie, load_trie=FakeTrie.load, write_shards=write_shards,
                          load_tokenizer=lambda folder: FakeTokenizer(), train=train,
                          load_pretrained=lambda folder: (tiny_llama(48, 0), FakeTokenizer()))
