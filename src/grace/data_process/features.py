"""Image features from a frozen encoder, cached on disk and reused by every stage.

Layout of a cache folder (``RUN/features/<encoder>/``)::

    meta.json     {"encoder", "ids", "dim", "tokens_shape", "dataset", "dtype"}
    pooled.npy    (N, D) float32 — mean of the visual tokens (structured ids, CLIP+FAISS heads)
    tokens.npy    (N, T, D) float16 — visual tokens (training the perceiver), only when asked for
    views/<k>/    the same files for augmented view k = 1, 2, ... of every image (i2id augmentation,
                  :mod:`grace.data_process.augment`), each with its own meta.json naming the view

The cache is reused when its encoder and image ids match; a run killed while encoding keeps the finished
chunks in ``.partial/`` and resumes from them, and the final files are written atomically.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from grace.data_process.augment import ViewAugment, view_rng
from grace.errors import InputError
from grace.io_utils import atomic_path, read_json, write_json

log = logging.getLogger(__name__)
CHUNK = 512


@dataclass
class FeatureSet:
    """Features of a list of images: ``array`` is (N, D) pooled or (N, T, D) tokens, rows follow ``ids``."""

    ids: list[str]
    array: np.ndarray
    encoder: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.array):
            raise InputError(f"{len(self.ids)} ids but {len(self.array)} feature rows", path=self.encoder)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        """Feature rows of ``image_ids`` in that order (one-line error for unknown ids)."""
        where = {image_id: i for i, image_id in enumerate(self.ids)}
        missing = [i for i in image_ids if i not in where]
        if missing:
            raise InputError(f"{len(missing)} images have no features, e.g. {missing[0]!r}", path=self.encoder)
        return self.array[[where[i] for i in image_ids]]

    @classmethod
    def load(cls, cache_dir: str | Path, *, tokens: bool = False, mmap: bool = True) -> "FeatureSet":
        """Read ``tokens.npy`` (``tokens=True``) or ``pooled.npy`` of a cache folder."""
        cache_dir = Path(cache_dir)
        meta = read_json(cache_dir / "meta.json")
        name = "tokens.npy" if tokens else "pooled.npy"
        if not (cache_dir / name).is_file():
            raise InputError(f"features cache has no {name}", path=cache_dir)
        array = np.load(cache_dir / name, mmap_mode="r" if mmap else None)
        ids = [str(i) for i in meta.get("ids", [])]
        if len(ids) != len(array):
            raise InputError(f"meta.json lists {len(ids)} ids but {name} has {len(array)} rows", path=cache_dir)
        return cls(ids=ids, array=array, encoder=str(meta.get("encoder", "")), meta=meta)

    def save(self, cache_dir: str | Path) -> Path:
        """Write pooled (N, D) rows as a cache folder :meth:`load` reads (``pooled.npy``, then ``meta.json``:
        written last, so a half-written cache is never read). The ids may be any strings, e.g. texts."""
        cache_dir = Path(cache_dir)
        array = np.asarray(self.array, dtype=np.float32)
        if array.ndim != 2:
            raise InputError(f"FeatureSet.save writes pooled (N, D) rows, got shape {array.shape}", path=cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_dir / "pooled.npy", suffix=".npy") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, array)
        meta = {**self.meta, "encoder": self.encoder, "ids": list(self.ids), "dim": int(array.shape[1]),
                "tokens_shape": None, "pooled_dtype": "float32"}
        write_json(cache_dir / "meta.json", meta)
        return cache_dir


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row (last axis) scaled to unit L2 norm; an all-zero row stays zero."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def encoder_folder(encoder: str) -> str:
    """The folder name of an encoder's features cache (``open_clip:ViT-B-32/openai`` → ``open_clip_ViT-B-32_openai``)."""
    return encoder.replace("/", "_").replace(":", "_")


def open_image(path: str | Path):
    """Open an image fully (so corrupt files fail here) with a one-line error naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError("image file not found", path=path)
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"unreadable or corrupt image ({type(exc).__name__}: {exc})".splitlines()[0], path=path) from None


def view_cache_dir(cache_dir: str | Path, view: int) -> Path:
    """Folder of augmented view ``view`` inside a features cache (view 0: the cache itself)."""
    return Path(cache_dir) if view == 0 else Path(cache_dir) / "views" / str(view)


def _cached_superset(cache_dir: Path, encoder: str, ids: list[str], tokens: bool,
                     view_key: dict) -> FeatureSet | None:
    """The cache of ``cache_dir`` restricted to ``ids`` when it has this encoder (and view) and all of them."""
    if not (cache_dir / "meta.json").is_file() or not (cache_dir / ("tokens.npy" if tokens else "pooled.npy")).is_file():
        return None
    try:
        cached = FeatureSet.load(cache_dir, tokens=tokens)
    except InputError:
        return None
    if cached.encoder != encoder or {k: cached.meta.get(k) for k in view_key} != view_key:
        return None
    if cached.ids == ids:
        return cached
    if not set(ids) <= set(cached.ids):
        return None
    return FeatureSet(ids=list(ids), array=np.asarray(cached.rows(ids)), encoder=encoder, meta=cached.meta)


def _encode_chunk(encoder, paths: Sequence[Path], batch_size: int, tokens: bool,
                  view: Callable[[Any, int], Any] | None = None, first: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Pooled (and token) features of ``paths``; ``view(image, index)`` transforms each image first."""
    pooled, toks = [], []
    for start in range(0, len(paths), batch_size):
        images = [open_image(p) for p in paths[start:start + batch_size]]
        if view is not None:
            images = [view(image, first + start + i) for i, image in enumerate(images)]
        visual = encoder.encode_tokens(images)  # (B, T, D) float32
        pooled.append(visual.mean(dim=1).numpy().astype(np.float32))
        if tokens:
            toks.append(visual.numpy().astype(np.float16))
    return np.concatenate(pooled), (np.concatenate(toks) if tokens else None)


def image_features(dataset, encoder: str = "efficientnet-lite0", cache_dir: str | Path | None = None, *,
                   tokens: bool = False, batch_size: int = 32, progress: bool = True, view: int = 0,
                   seed: int = 0, augment: ViewAugment | None = None) -> FeatureSet:
    """Features of every image of ``dataset`` (in dataset order) from the frozen ``encoder``.

    Returns pooled (N, D) features, or (N, T, D) visual tokens with ``tokens=True``. With ``cache_dir``
    the result is cached there and reused when the encoder matches and the cache holds every image (a
    subset of a cached dataset is served from it); encoding resumes chunk by chunk. ``view > 0`` encodes
    augmented view ``view`` (``augment``, seeded by ``seed``) into ``view_cache_dir(cache_dir, view)``.
    """
    ids = dataset.image_ids()
    if not ids:
        raise InputError("the dataset has no images", path=getattr(dataset, "name", None))
    if view < 0:
        raise InputError(f"view must be >= 0, got {view}")
    augment = augment or ViewAugment()
    view_key = {"view": view, "seed": seed, "augment": augment.describe()} if view else {"view": None}
    transform = (lambda image, index: augment(image, view_rng(seed, view, index))) if view else None
    cache = view_cache_dir(cache_dir, view) if cache_dir is not None else None
    cached = _cached_superset(cache, encoder, ids, tokens, view_key) if cache is not None else None
    if cached is not None:
        log.info("features: reusing cache %s (%d of its images, %s)", cache, len(ids), encoder)
        return cached

    from tqdm import tqdm

    from grace.data_process.encoders import create_image_encoder

    model = create_image_encoder(encoder)
    paths = [r.path for r in dataset.images]
    partial = cache / ".partial" if cache is not None else None
    if partial is not None:
        key = {"encoder": encoder, "ids": ids, "tokens": tokens, **view_key}
        if (partial / "key.json").is_file() and read_json(partial / "key.json") != key:
            shutil.rmtree(partial)  # chunks of another encoder / image list: start over
        partial.mkdir(parents=True, exist_ok=True)
        write_json(partial / "key.json", key)
    pooled_parts, token_parts = [], []
    for start in tqdm(range(0, len(ids), CHUNK), desc=f"features {encoder}", unit="chunk", disable=not progress):
        chunk_file = partial / f"chunk-{start // CHUNK:06d}.npz" if partial is not None else None
        if chunk_file is not None and chunk_file.is_file():
            with np.load(chunk_file) as saved:
                pooled, toks = saved["pooled"], (saved["tokens"] if tokens else None)
        else:
            pooled, toks = _encode_chunk(model, paths[start:start + CHUNK], batch_size, tokens, transform, start)
            if chunk_file is not None:
                with atomic_path(chunk_file, suffix=".npz") as tmp:
                    arrays = {"pooled": pooled, **({"tokens": toks} if tokens else {})}
                    with open(tmp, "wb") as handle:
                        np.savez(handle, **arrays)
        pooled_parts.append(pooled)
        if tokens:
            token_parts.append(toks)
    pooled = np.concatenate(pooled_parts)
    token_array = np.concatenate(token_parts) if tokens else None
    meta = {"encoder": encoder, "ids": ids, "dim": int(pooled.shape[1]), "dataset": getattr(dataset, "name", ""),
            "tokens_shape": list(token_array.shape[1:]) if tokens else None, "pooled_dtype": "float32",
            "tokens_dtype": "float16", **view_key}
    if cache is not None:
        for name, array in (("pooled.npy", pooled), ("tokens.npy", token_array)):
            if array is not None:
                with atomic_path(cache / name, suffix=".npy") as tmp:
                    with open(tmp, "wb") as handle:
                        np.save(handle, array)
        write_json(cache / "meta.json", meta)  # last: marks the cache complete
        shutil.rmtree(partial, ignore_errors=True)
        log.info("features: %d images encoded with %s -> %s", len(ids), encoder, cache)
    return FeatureSet(ids=ids, array=token_array if tokens else pooled, encoder=encoder, meta=meta)
