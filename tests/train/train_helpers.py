"""Tiny training inputs for the train tests: ids folder (+ tokenizer), i2id/t2id shards, a features cache."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
REPO = HERE.parents[1]


class TinyIdMap:
    """A trivial id map (image i → "i" as digits), with the interface write_shards needs."""

    def __init__(self, image_ids):
        self.image_to_id = {image_id: " ".join(str(i)) for i, image_id in enumerate(image_ids)}

    def to_id(self, image_id: str) -> str:
        return self.image_to_id[image_id]


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def real_model() -> bool:
    """Train the real ``tiny`` Flamingo when grace.model is present (else the stand-in GRU)."""
    return has_module("grace.model") and os.environ.get("GRACE_TRAIN_TEST_STANDIN") != "1"


def write_tiny_shards(dataset, idmap, out: Path) -> None:
    """i2id: every image; t2id: train captions + test keywords (pseudo-queries)."""
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(out / "i2id-000000.tar")) as i2id, wds.TarWriter(str(out / "t2id-000000.tar")) as t2id:
        for record in dataset.images:
            ident = idmap.to_id(record.image_id)
            image = Path(record.path).read_bytes()
            meta = {"image_id": record.image_id, "identifier": ident, "text": "", "task": "i2id", "split": record.split}
            i2id.write({"__key__": f"{record.image_id}", "png": image, "json": json.dumps(meta).encode()})
            texts = record.texts if record.split != "test" else record.meta["keywords"][:2]
            for j, text in enumerate(texts):
                meta = dict(meta, text=text, task="t2id")
                t2id.write({"__key__": f"{record.image_id}-{j}", "png": image, "json": json.dumps(meta).encode()})


def real_ids() -> bool:
    """Use grace.identifiers' IdentifierMap + IdentifierTokenizer (byte-level base) when present."""
    return has_module("grace.identifiers.tokenization") and os.environ.get("GRACE_TRAIN_TEST_STANDIN") != "1"


def build_tiny_run(root: Path, dataset) -> dict:
    """Write ids/ (+ tokenizer/, trie/), shards/, features/ under ``root``; return TrainConfig values."""
    from train_standin import VIS_DIM, StandinTokenizer

    vis_dim = 32 if real_model() else VIS_DIM  # the tiny config's vis_dim
    ids = [r.image_id for r in dataset.images]
    idmap = TinyIdMap(ids)
    values = {"tokenizer": "train_standin:load_tokenizer"}
    if real_ids():
        from grace.identifiers import IdentifierMap, build_trie

        real = IdentifierMap("numeric", idmap.image_to_id, {"tokenizer": "byte"})
        real.save(root / "ids")
        build_trie(real, real.tokenizer()).save(root / "trie")
        values = {"tokenizer": "", "trie_dir": str(root / "trie")}
    else:
        (root / "ids").mkdir(parents=True, exist_ok=True)
        (root / "ids" / "ids.json").write_text(json.dumps(idmap.image_to_id))
        StandinTokenizer().save(root / "ids" / "tokenizer")
    if has_module("grace.data_process.shards"):
        from grace.data_process.shards import write_shards

        queries = {r.image_id: r.meta["keywords"][:2] for r in dataset.images if r.split == "test"}
        write_shards(dataset, idmap, root / "shards", pseudo_queries=queries)
    else:
        write_tiny_shards(dataset, idmap, root / "shards")
    feats = np.random.default_rng(0).standard_normal((len(ids), vis_dim)).astype(np.float32)
    (root / "features").mkdir(exist_ok=True)
    np.save(root / "features" / "pooled.npy", feats)
    (root / "features" / "meta.json").write_text(json.dumps({"ids": ids, "encoder": "random"}))
    return dict(values, shards_dir=str(root / "shards"), ids_dir=str(root / "ids"),
                features_cache=str(root / "features"), model="tiny" if real_model() else "train_standin:create_model",
                output_dir=str(root / "out"), steps=6, lr=1e-2 if real_model() else 3e-2, warmup_steps=1,
                batch_size_i2id=2, batch_size_t2id=2, seed=0)


def train_tokenizer(values: dict) -> Any:
    """The tokenizer exactly as training loads it."""
    from grace.config import dataclass_from_dict
    from grace.train import TrainConfig
    from grace.train.engine import load_tokenizer

    return load_tokenizer(dataclass_from_dict(TrainConfig, values))


def subprocess_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def torchrun_cmd(nproc: int, config_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(_free_port()), "-m", "grace.cli", "train", "--config", str(config_path), *extra]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reference_model(spec: str, tokenizer: Any, state: dict | None = None) -> Any:
    """A fresh model of ``spec``, optionally loaded with a consolidated state dict."""
    from grace.train.engine import create_model

    model = create_model(spec, tokenizer)
    if state is not None:
        if spec == "tiny":
            from grace.model import load_state

            load_state(model, state)
        else:
            model.load_state_dict(state)
    return model.eval()


def load_export(export: Path, spec: str, scratch: Path) -> tuple[Any, Any]:
    """(model, tokenizer) read back from an export without DeepSpeed (``grace.model.load_pretrained``).

    With the stand-in tokenizer, its ``tokenizer/`` is left out of a copy, since load_pretrained would
    read it as an IdentifierTokenizer.
    """
    if spec == "tiny":
        import shutil

        from grace.model import load_pretrained

        if (export / "tokenizer" / "standin_tokenizer.json").is_file():
            shutil.copytree(export, scratch, ignore=shutil.ignore_patterns("tokenizer"))
            export = scratch
        return load_pretrained(export)
    from train_standin import load_pretrained

    return load_pretrained(export)
