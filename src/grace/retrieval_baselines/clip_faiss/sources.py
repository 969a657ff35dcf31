"""Image-text collections the extractor reads, in a fixed order so that chunks concatenate exactly.

- ``karpathy``: a ``dataset.json`` (:func:`grace.data_process.dataset.load_karpathy`), one item per image
  with all its captions;
- ``folder``: images under a folder (recursively, sorted), captions from a same-stem ``.txt`` (one a line);
- ``webdataset``: ``.tar`` shards in the REACT/img2dataset layout (``jpg``/``png`` + ``txt`` and/or
  ``json`` with ``caption``/``text``); chunks are contiguous runs of shards.
"""

from __future__ import annotations

import glob
import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from grace.errors import InputError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
WDS_IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")


@dataclass
class Item:
    """One image with its texts; ``source`` is a file path or ``SHARD.tar#MEMBER``."""

    image_id: str
    source: str
    texts: list[str] = field(default_factory=list)
    data: bytes | None = None

    def open(self):
        """The image as a PIL image (read from ``data`` or ``source``)."""
        from PIL import Image, UnidentifiedImageError

        try:
            raw = self.data if self.data is not None else read_source_bytes(self.source)
            image = Image.open(io.BytesIO(raw))
            image.load()
            return image
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"cannot read image: {exc.__class__.__name__}", path=self.source, entry=self.image_id) from None


def read_source_bytes(source: str) -> bytes:
    """Bytes of an image file or of a ``SHARD.tar#MEMBER`` member."""
    shard, sep, member = source.partition(".tar#")
    if sep:
        with tarfile.open(shard + ".tar") as tar:
            handle = tar.extractfile(member)
            if handle is None:
                raise InputError(f"member {member!r} not found", path=shard + ".tar")
            return handle.read()
    path = Path(source)
    if not path.is_file():
        raise InputError("image file not found", path=path)
    return path.read_bytes()


def detect_kind(source: Path, kind: str = "auto") -> str:
    if kind != "auto":
        return kind
    text = str(source)
    if source.suffix == ".json":
        return "karpathy"
    if text.endswith(".tar") or "*" in text or (source.is_dir() and any(source.glob("*.tar"))):
        return "webdataset"
    if source.is_dir():
        return "folder"
    raise InputError("not a dataset.json, an image folder or webdataset shards", path=source)


def _chunk_range(n: int, chunks: int, idx: int) -> range:
    if chunks < 1 or not 0 <= idx < chunks:
        raise InputError(f"need 0 <= chunk_idx < chunks, got chunk_idx={idx} chunks={chunks}")
    return range(n * idx // chunks, n * (idx + 1) // chunks)


def karpathy_items(path: Path, split: str = "") -> list[Item]:
    from grace.data_process.dataset import load_karpathy

    dataset = load_karpathy(path)
    records = dataset.split(split) if split else dataset.images
    return [Item(r.image_id, str(r.path), list(r.texts)) for r in records]


def folder_items(root: Path) -> list[Item]:
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()):
        caption = path.with_suffix(".txt")
        texts = [t.strip() for t in caption.read_text(encoding="utf-8").splitlines() if t.strip()] if caption.is_file() else []
        items.append(Item(str(path.relative_to(root).with_suffix("")), str(path), texts))
    if not items:
        raise InputError(f"no images ({', '.join(IMAGE_EXTS)}) found", path=root)
    return items


def shard_list(source: Path) -> list[str]:
    text = str(source)
    if source.is_dir():
        shards = sorted(str(p) for p in source.glob("*.tar"))
    else:
        shards = sorted(glob.glob(text)) if "*" in text else [text]
    if not shards or not all(Path(s).is_file() for s in shards):
        raise InputError("no webdataset .tar shards found", path=source)
    return shards


def _sample_texts(sample: dict) -> list[str]:
    import json

    texts = []
    if "txt" in sample:
        texts.append(sample["txt"].decode("utf-8").strip())
    if "json" in sample and not texts:
        meta = json.loads(sample["json"])
        for key in ("caption", "text"):
            if isinstance(meta.get(key), str) and meta[key].strip():
                texts.append(meta[key].strip())
                break
    return [t for t in texts if t]


def webdataset_items(shards: list[str]) -> Iterator[Item]:
    """Stream the samples of ``shards`` in order (webdataset's tar grouping, no decoding)."""
    import json

    import webdataset as wds

    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        ext = next((k for k in WDS_IMAGE_KEYS if k in sample), None)
        if ext is None:
            continue
        image_id = sample["__key__"]
        if "json" in sample:
            image_id = str(json.loads(sample["json"]).get("image_id", image_id))
        url = sample["__url__"]
        yield Item(image_id, f"{url}#{sample['__key__']}.{ext}", _sample_texts(sample), data=sample[ext])


def chunk_items(source: Path, kind: str, chunks: int, chunk_idx: int, split: str = "") -> tuple[Iterator[Item], int | None]:
    """Items of one chunk (iterator) and their count when known in advance."""
    kind = detect_kind(Path(source), kind)
    if kind == "webdataset":
        shards = shard_list(Path(source))
        mine = [shards[i] for i in _chunk_range(len(shards), chunks, chunk_idx)]
        return (webdataset_items(mine) if mine else iter(())), None
    if kind == "karpathy":
        items = karpathy_items(Path(source), split)
    elif kind == "folder":
        items = folder_items(Path(source))
    else:
        raise InputError(f"unknown source kind {kind!r}", path=source)
    mine = [items[i] for i in _chunk_range(len(items), chunks, chunk_idx)]
    return iter(mine), len(mine)
