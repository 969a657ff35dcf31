"""Tiny training inputs for the train tests: ids folder (+ tokenizer), i2id/t2id shards, a features cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from launch_helpers import torchrun_prefix, without_process_group

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def build_tiny_run(root: Path, dataset) -> dict:
    """Write ids/ (numeric ids over byte tokens, + tokenizer/), trie/, shards/ (i2id + t2id with the test
    images' keywords as pseudo-queries) and a random features cache (4 tokens x 32-d, as ``tiny`` reads) under ``root``; return
    TrainConfig values for the packaged ``tiny`` model."""
    from grace.data_process.features import FeatureSet
    from grace.data_process.shards import write_shards
    from grace.identifiers import IdentifierMap, build_trie

    ids = [r.image_id for r in dataset.images]
    idmap = IdentifierMap("numeric", {image_id: " ".join(str(i)) for i, image_id in enumerate(ids)},
                          {"tokenizer": "byte"})
    idmap.save(root / "ids")
    build_trie(idmap, idmap.tokenizer()).save(root / "trie")
    queries = {r.image_id: r.meta["keywords"][:2] for r in dataset.images if r.split == "test"}
    write_shards(dataset, idmap, root / "shards", pseudo_queries=queries, progress=False)
    tokens = np.random.default_rng(0).standard_normal((len(ids), 4, 32)).astype(np.float16)  # tiny: 4 x 32-d
    (root / "features").mkdir(exist_ok=True)
    np.save(root / "features" / "tokens.npy", tokens)
    np.save(root / "features" / "pooled.npy", tokens.astype(np.float32).mean(1))
    (root / "features" / "meta.json").write_text(json.dumps({"ids": ids, "encoder": "random"}))
    assert FeatureSet.load(root / "features", tokens=True).array.shape == (len(ids), 4, 32)
    return dict(trie_dir=str(root / "trie"), shards_dir=str(root / "shards"), ids_dir=str(root / "ids"),
                features_cache=str(root / "features"), model="tiny", output_dir=str(root / "out"), steps=6, lr=1e-2,
                warmup_steps=1, batch_size_i2id=2, batch_size_t2id=2, seed=0)


def train_tokenizer(values: dict) -> Any:
    """The tokenizer exactly as training loads it."""
    from grace.config import dataclass_from_dict
    from grace.train import TrainConfig
    from grace.train.engine import load_tokenizer

    return load_tokenizer(dataclass_from_dict(TrainConfig, values))


def subprocess_env() -> dict:
    """The environment of a child ``grace train``: offline, one thread, and none of the process-group variables
    an in-process run of this pytest process may have set (its MASTER_PORT is still bound here)."""
    env = without_process_group(dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                                     TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1"))
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def torchrun_cmd(nproc: int, config_path: Path, *extra: str) -> list[str]:
    return [*torchrun_prefix(nproc), "-m", "grace.cli", "train", "--config", str(config_path), *extra]


def reference_model(spec: str, tokenizer: Any, state: dict | None = None) -> Any:
    """A fresh model of ``spec``, optionally loaded with a consolidated state dict."""
    from grace.model import load_state
    from grace.train.engine import create_model

    model, _ = create_model(spec, tokenizer)
    if state is not None:
        load_state(model, state)
    return model.eval()


def load_export(export: Path) -> tuple[Any, Any]:
    """(model, tokenizer) read back from an export without DeepSpeed (``grace.model.load_pretrained``)."""
    from grace.model import load_pretrained

    return load_pretrained(export)
