"""FAISS inner-product indexes over joint-space features: ``Flat`` (exact) and ``IVF{n}_PQ{m}``.

IVF-PQ is trained on a random sample of the keys, then populated in batches. GPU FAISS (``grace[gpu]``) is
used when it sees a device (``grace.faiss_device``; the saved index is always the CPU form, and
``index_config.json`` says where it was built). An index folder holds
``index.faiss``, ``keys.json`` (what each row is: image id, text, owner image id) and ``config.json``.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np

from grace.data_process.features import unit_rows
from grace.errors import GraceError, InputError
from grace.faiss_device import faiss_device, import_faiss
from grace.io_utils import atomic_path, file_digest, read_json, save_config, write_json

log = logging.getLogger(__name__)
IVFPQ_RE = re.compile(r"^IVF(\d+)_PQ(\d+)$")


def faiss_factory(name: str, dim: int) -> str:
    """``Flat`` → ``Flat``; ``IVF{n}_PQ{m}`` → ``IVF{n},PQ{m}np`` (m must divide ``dim``).

    ``np`` turns off FAISS's polysemous training, which only speeds up Hamming-filtered search (unused
    here) and costs minutes of simulated annealing per training.
    """
    if name == "Flat":
        return "Flat"
    match = IVFPQ_RE.match(name)
    if not match:
        raise GraceError(f"unknown index type {name!r}; use Flat or IVF{{n}}_PQ{{m}} (e.g. IVF256_PQ32)")
    nlist, m = int(match.group(1)), int(match.group(2))
    if dim % m:
        raise GraceError(f"{name}: PQ{m} needs m to divide the feature size {dim}")
    return f"IVF{nlist},PQ{m}np"


def _as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _maybe_gpu(index, use_gpu: bool, what: str = "dense index search"):
    """``(index on every faiss GPU, True)`` when faiss-gpu sees one and ``use_gpu``; else ``(index, False)``."""
    from grace.faiss_device import faiss_device, import_faiss

    if faiss_device(what, use_gpu) == "gpu":
        return import_faiss().index_cpu_to_all_gpus(index), True
    return index, False


def train_index(keys: np.ndarray, name: str = "Flat", *, train_size: int = 100_000, add_batch_size: int = 65_536,
                nprobe: int = 16, use_gpu: bool = True, seed: int = 0, progress: bool = False):
    """A populated FAISS index (CPU form) over ``keys`` (N, D), inner-product metric."""
    faiss = import_faiss()
    from tqdm import tqdm

    keys = _as_float32(keys)
    if keys.ndim != 2 or len(keys) == 0:
        raise InputError(f"need a non-empty (N, D) key matrix, got shape {keys.shape}")
    n, dim = keys.shape
    index = faiss.index_factory(dim, faiss_factory(name, dim), faiss.METRIC_INNER_PRODUCT)
    index, on_gpu = _maybe_gpu(index, use_gpu, "dense index build")
    if not index.is_trained:
        nlist = int(IVFPQ_RE.match(name).group(1))
        if n < nlist:
            raise InputError(f"{name} needs at least {nlist} vectors to train, got {n}; use Flat or a smaller IVF")
        sample = np.random.default_rng(seed).choice(n, size=min(n, train_size), replace=False)
        index.train(keys[np.sort(sample)])
    for start in tqdm(range(0, n, add_batch_size), desc=f"add to {name}", disable=not progress):
        index.add(keys[start:start + add_batch_size])
    if on_gpu:
        index = faiss.index_gpu_to_cpu(index)
    set_nprobe(index, nprobe)
    return index


def set_nprobe(index, nprobe: int) -> None:
    faiss = import_faiss()

    ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
    if ivf is not None:
        ivf.nprobe = nprobe


class DenseIndex:
    """A saved index folder: FAISS index + what its rows are + the dual encoder spec that made them."""

    def __init__(self, index, keys: dict, config: dict, use_gpu: bool = True):
        self.cpu_index = index
        self.index, self.on_gpu = _maybe_gpu(index, use_gpu)
        self.keys = keys
        self.config = config
        self.dim = index.d

    @property
    def row_images(self) -> list[str]:
        """Image id of every index row (the image itself, or the owner of a text row)."""
        return self.keys["row_image"]

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (Q, k); rows are -1 where fewer than k results exist."""
        vectors = _as_float32(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"query vectors have shape {vectors.shape}, the index expects (Q, {self.dim})")
        k = max(1, min(k, self.index.ntotal))
        return self.index.search(vectors, k)

    def vectors(self, rows: list[int]) -> np.ndarray:
        """(len(rows), dim) stored vectors of index ``rows`` (decoded codes for a compressed index)."""
        faiss = import_faiss()

        if not rows:
            return np.zeros((0, self.dim), np.float32)
        try:
            return self.cpu_index.reconstruct_batch(np.asarray(rows, np.int64))
        except RuntimeError:  # an IVF index needs its direct map (row → list position) to reconstruct
            faiss.extract_index_ivf(self.cpu_index).make_direct_map()
            return self.cpu_index.reconstruct_batch(np.asarray(rows, np.int64))

    def save(self, out: str | Path) -> Path:
        faiss = import_faiss()

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "index.faiss") as tmp:
            faiss.write_index(self.cpu_index, str(tmp))
        write_json(out / "keys.json", self.keys)
        write_json(out / "index_config.json", self.config)
        return out

    @classmethod
    def load(cls, folder: str | Path, use_gpu: bool = True) -> DenseIndex:
        faiss = import_faiss()

        folder = Path(folder)
        path = folder / "index.faiss"
        if not path.is_file():
            raise InputError("no index.faiss (run build-index first)", path=folder)
        config = read_json(folder / "index_config.json")
        index = faiss.read_index(str(path))
        set_nprobe(index, config.get("nprobe", 16))
        return cls(index, read_json(folder / "keys.json"), config, use_gpu=use_gpu)


def expand_keys(image_keys: np.ndarray, image_ids: list[str], texts: dict[str, list[str]], encode_texts,
                weight: float = 1.0) -> np.ndarray:
    """Document expansion: row i becomes unit(unit(image_i) + weight · unit(mean of unit text vectors of
    ``texts[image_ids[i]]``)); rows without texts keep their unit image vector. ``encode_texts(list) -> (N, D)``."""
    keys = unit_rows(_as_float32(image_keys))
    pairs = [(row, text) for row, image_id in enumerate(image_ids) for text in texts.get(image_id, []) if text.strip()]
    if not pairs:
        return keys
    rows = np.array([row for row, _ in pairs])
    vectors = unit_rows(_as_float32(encode_texts([text for _, text in pairs])))
    sums = np.zeros_like(keys)
    np.add.at(sums, rows, vectors)
    has = np.unique(rows)
    keys[has] += weight * unit_rows(sums[has])
    return unit_rows(keys)


def build_index(config) -> DenseIndex:
    """``build-index``: merged features → index folder (keys = image or text features, or image features
    expanded with texts: ``config.expansion``)."""
    from grace.retrieval_baselines.clip_faiss.extract import load_features

    fs = load_features(config.features)
    meta = fs.meta
    expansion = config.expansion
    if expansion is not None and config.feature_mode != "image":
        raise GraceError("--expansion expands image keys: use --feature-mode image")
    if config.feature_mode == "image":
        keys_x = fs.image
        keys = {"mode": "image", "row_image": meta["ids"], "row_text": [None] * len(meta["ids"]),
                "row_source": meta["sources"]}
    else:
        keys_x = fs.text
        keys = {"mode": "text", "row_image": [meta["ids"][o] for o in meta["text_owner"]], "row_text": meta["texts"],
                "row_source": [meta["sources"][o] for o in meta["text_owner"]]}
    # every image's texts, so image rows can show a caption and text rows their image
    keys["captions"] = {}
    for text, owner in zip(meta["texts"], meta["text_owner"]):
        keys["captions"].setdefault(meta["ids"][owner], []).append(text)
    expanded = None
    if expansion is not None:
        from grace.retrieval_baselines.clip_faiss.dual_encoder import load_dual_encoder

        texts = read_json(expansion)
        if not isinstance(texts, dict):
            raise InputError("expected an object {image_id: [texts]}", path=expansion)
        keys_x = expand_keys(keys_x, meta["ids"], texts, load_dual_encoder(meta["model"]).encode_texts,
                             config.expansion_weight)
        expanded = {"file": str(expansion), "sha1": file_digest(expansion),
                    "weight": config.expansion_weight, "images": sum(bool(texts.get(i)) for i in meta["ids"])}
    start = time.perf_counter()
    index = train_index(keys_x, config.index, train_size=config.train_size, add_batch_size=config.add_batch_size,
                        nprobe=config.nprobe, use_gpu=config.use_gpu, seed=config.seed, progress=True)
    build_s = time.perf_counter() - start
    index_config = {"index": config.index, "feature_mode": config.feature_mode, "model": meta["model"],
                    "dim": int(meta["dim"]), "ntotal": int(index.ntotal), "nprobe": config.nprobe,
                    "build_s": build_s, "features": str(config.features), "expansion": expanded,
                    "built_on": faiss_device("dense index build", config.use_gpu)}
    dense = DenseIndex(index, keys, index_config, use_gpu=config.use_gpu)
    dense.save(config.out)
    save_config(config.out, config)
    log.info("%s over %d %s keys in %.2fs → %s", config.index, index.ntotal, config.feature_mode, build_s, config.out)
    return dense
