"""Chunked, resumable feature extraction and the merge of chunks into one feature set.

Layout: ``OUT/chunks/chunk-IIIII-of-NNNNN/{image.npy,text.npy,meta.json}`` (float16 features,
``meta.json`` written last = the chunk is finished and a re-run skips it); ``merge`` writes
``OUT/{image.npy,text.npy,meta.json}``. ``meta.json``: ``ids``, ``sources`` (one per image),
``texts`` and ``text_owner`` (image row of each text), ``model``, ``dim``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grace.errors import InputError
from grace.io_utils import atomic_path, read_json, save_config, write_json

log = logging.getLogger(__name__)
CHUNK_RE = re.compile(r"chunk-(\d{5})-of-(\d{5})$")


@dataclass
class FeatureSet:
    """Joint-space features of an image-text collection (rows of ``text`` point at ``image`` rows)."""

    image: np.ndarray
    text: np.ndarray
    meta: dict

    @property
    def ids(self) -> list[str]:
        return self.meta["ids"]


def chunk_dir(out: Path, chunks: int, idx: int) -> Path:
    return Path(out) / "chunks" / f"chunk-{idx:05d}-of-{chunks:05d}"


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def save_features(folder: Path, fs: FeatureSet) -> None:
    """Write ``image.npy``, ``text.npy`` (float16) then ``meta.json`` (atomic each, meta last)."""
    save_npy(folder / "image.npy", fs.image.astype(np.float16))
    save_npy(folder / "text.npy", fs.text.astype(np.float16))
    write_json(folder / "meta.json", fs.meta)


def load_features(folder: str | Path) -> FeatureSet:
    """Read a feature folder, with one-line errors for missing or inconsistent files."""
    folder = Path(folder)
    meta = read_json(folder / "meta.json")
    arrays = {}
    for name in ("image", "text"):
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise InputError("feature file missing", path=path)
        try:
            arrays[name] = np.load(path)
        except (ValueError, OSError) as exc:
            raise InputError(f"unreadable feature file ({exc.__class__.__name__})", path=path) from None
    if len(arrays["image"]) != len(meta["ids"]) or len(arrays["text"]) != len(meta["texts"]):
        raise InputError(f"{len(arrays['image'])} image / {len(arrays['text'])} text rows for {len(meta['ids'])} ids / "
                         f"{len(meta['texts'])} texts in meta.json", path=folder)
    for name, arr in arrays.items():
        if arr.ndim != 2 or (len(arr) and arr.shape[1] != meta["dim"]):
            raise InputError(f"{name}.npy has shape {arr.shape}, expected (N, {meta['dim']})", path=folder)
    return FeatureSet(arrays["image"], arrays["text"], meta)


def extract_chunk(config, encoder=None) -> Path:
    """Extract one chunk (skipped when already finished); returns its folder."""
    from tqdm import tqdm

    from grace.retrieval_baselines.clip_faiss.dual_encoder import canonical_spec, load_dual_encoder
    from grace.retrieval_baselines.clip_faiss.sources import chunk_items

    folder = chunk_dir(config.out, config.chunks, config.chunk_idx)
    model = canonical_spec(config.model)
    if (folder / "meta.json").is_file():
        done = read_json(folder / "meta.json")
        if done.get("model") == model:
            log.info("chunk %d/%d already extracted: %s", config.chunk_idx, config.chunks, folder)
            return folder
        raise InputError(f"chunk was extracted with {done.get('model')!r}, not {model!r}; use another --out",
                         path=folder)
    items, total = chunk_items(config.source, config.source_kind, config.chunks, config.chunk_idx, config.split)
    encoder = encoder or load_dual_encoder(model, config.device)
    ids, sources, texts, owners, image_parts, text_parts = [], [], [], [], [], []

    def flush(batch):
        image_parts.append(encoder.encode_images([item.open() for item in batch], config.batch_size))
        batch_texts = [t for item in batch for t in item.texts]
        if batch_texts:
            text_parts.append(encoder.encode_texts(batch_texts, config.batch_size))

    batch = []
    for item in tqdm(items, total=total, desc=f"extract chunk {config.chunk_idx}/{config.chunks}",
                     disable=not config.progress):
        owners.extend([len(ids)] * len(item.texts))
        ids.append(item.image_id)
        sources.append(item.source)
        texts.extend(item.texts)
        batch.append(item)
        if len(batch) == config.batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    dim = encoder.dim
    empty = np.zeros((0, dim), np.float32)
    fs = FeatureSet(np.concatenate(image_parts) if image_parts else empty,
                    np.concatenate(text_parts) if text_parts else empty,
                    {"ids": ids, "sources": sources, "texts": texts, "text_owner": owners, "model": model,
                     "dim": dim, "source": str(config.source), "chunk": [config.chunk_idx, config.chunks]})
    folder.mkdir(parents=True, exist_ok=True)
    save_config(folder, config, name="extract_config.json")
    save_features(folder, fs)
    log.info("chunk %d/%d: %d images, %d texts → %s", config.chunk_idx, config.chunks, len(ids), len(texts), folder)
    return folder


def merge_chunks(features: str | Path) -> FeatureSet:
    """Concatenate every chunk of ``features/chunks`` (all N of one chunking must be finished)."""
    features = Path(features)
    found: dict[int, dict[int, Path]] = {}
    for path in sorted((features / "chunks").glob("chunk-*")):
        match = CHUNK_RE.search(path.name)
        if match and (path / "meta.json").is_file():
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = path
    if not found:
        raise InputError("no finished chunks (run extract first)", path=features / "chunks")
    if len(found) > 1:
        raise InputError(f"chunks of several chunkings {sorted(found)} found; keep one", path=features / "chunks")
    (total, parts), = found.items()
    missing = sorted(set(range(total)) - set(parts))
    if missing:
        raise InputError(f"chunks {missing} of {total} are not finished", path=features / "chunks")
    sets = [load_features(parts[i]) for i in range(total)]
    models = {s.meta["model"] for s in sets}
    if len(models) != 1:
        raise InputError(f"chunks extracted with different models {sorted(models)}", path=features)
    meta = {"ids": [], "sources": [], "texts": [], "text_owner": [], "model": sets[0].meta["model"],
            "dim": sets[0].meta["dim"], "source": sets[0].meta["source"], "chunks": total}
    for s in sets:
        offset = len(meta["ids"])
        meta["text_owner"].extend(o + offset for o in s.meta["text_owner"])
        for key in ("ids", "sources", "texts"):
            meta[key].extend(s.meta[key])
    merged = FeatureSet(np.concatenate([s.image for s in sets]), np.concatenate([s.text for s in sets]), meta)
    save_features(features, merged)
    log.info("merged %d chunks: %d images, %d texts → %s", total, len(meta["ids"]), len(meta["texts"]), features)
    return merged
