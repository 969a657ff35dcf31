"""Stand-ins for the other stages (same interfaces as docs/DESIGN.md) to test the pipeline's orchestration
without them: each fake writes the marker file the real stage writes, and counts its calls."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

from infer_helpers import CharTokenizer, DictTrie, random_sequences, tiny_llama

from grace.data_process.features import FeatureSet, encoder_folder, view_cache_dir  # the real type and layout

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


def install(monkeypatch):
    """Put the fakes in sys.modules under the real module names (pseudo-queries stay real: they are cheap)."""
    from grace.identifiers.schemes import SchemeConfig  # the real settings dataclass (stage_ids compares them)

    CALLS.clear()
    mods = {
        "grace.data_process.features": {"image_features": image_features, "view_cache_dir": view_cache_dir,
                                        "encoder_folder": encoder_folder},
        "grace.data_process.shards": {"write_shards": write_shards},
        "grace.identifiers": {"create_scheme": FakeScheme, "SchemeConfig": SchemeConfig, "IdentifierMap": FakeIdMap,
                              "Trie": FakeTrie},
        "grace.identifiers.trie": {"Trie": FakeTrie, "build_trie": build_trie},
        "grace.identifiers.tokenization": {"IdentifierTokenizer": types.SimpleNamespace(load=lambda d: FakeTokenizer())},
        "grace.model": {"load_pretrained": lambda d: (tiny_llama(48, 0), FakeTokenizer())},
    }
    import grace.model.config  # noqa: F401  (the ablation reads a model config's n_visual_tokens)
    import grace.model.prompt  # noqa: F401  (inference builds its prompts with the real definition)
    import grace.train as real_train  # the real TrainConfig checks the ablation's train config; training is faked

    monkeypatch.setattr(real_train, "train", train)
    for name, attrs in mods.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
