"""The dataset type every stage reads: images with captions, in the Karpathy-split JSON form.

Karpathy form (``dataset_flickr30k.json``, ``dataset_coco.json``)::

    {"dataset": "flickr30k", "images": [{"filename": "1000092795.jpg", "filepath": "...",
      "split": "train|val|test|restval", "sentences": [{"raw": "Two young guys ..."}], ...}]}

Image ids are strings: an explicit ``image_id`` key when present (our builders write one), else
``cocoid``, else the file name without its extension.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from grace.errors import InputError
from grace.io_utils import read_json, write_json

SPLITS = ("train", "val", "test", "restval")
TRAIN_SPLITS = ("train", "restval")


@dataclass
class ImageRecord:
    """One image of a corpus: its string id, file, split and human-written texts."""

    image_id: str
    path: Path
    split: str
    texts: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


@dataclass
class Dataset:
    """A corpus of images; ``images`` keeps file order, ids are unique."""

    images: list[ImageRecord]
    name: str = "dataset"
    root: Path | None = None

    def __post_init__(self) -> None:
        counts = Counter(r.image_id for r in self.images)
        dupes = [i for i, c in counts.items() if c > 1]
        if dupes:
            raise InputError(f"duplicate image ids {dupes[:5]}", path=self.name)
        self._by_id = {r.image_id: r for r in self.images}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, image_id: str) -> ImageRecord:
        return self._by_id[image_id]

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._by_id

    def split(self, *names: str) -> list[ImageRecord]:
        """Records of the given splits (``"train"`` also takes Karpathy's ``restval``)."""
        wanted = set(names)
        if "train" in wanted:
            wanted.update(TRAIN_SPLITS)
        return [r for r in self.images if r.split in wanted]

    def image_ids(self) -> list[str]:
        return [r.image_id for r in self.images]

    def split_counts(self) -> dict[str, int]:
        return dict(Counter(r.split for r in self.images))

    def subset(self, image_ids: list[str], name: str | None = None) -> "Dataset":
        """A dataset with only the given images (in the given order)."""
        return Dataset([self._by_id[i] for i in image_ids], name=name or self.name, root=self.root)


def _image_id(entry: dict, index: int) -> str:
    if "image_id" in entry:
        return str(entry["image_id"])
    if "cocoid" in entry:
        return str(entry["cocoid"])
    return Path(entry["filename"]).stem


def _entry_texts(sentences, json_path: Path, index: int) -> list[str]:
    """The captions of one entry: a list of ``{"raw": str, ...}`` objects (Karpathy) or of strings."""
    if not isinstance(sentences, list):
        raise InputError(f"'sentences' must be a list, not {type(sentences).__name__}", path=json_path, entry=index)
    texts = []
    for sentence in sentences:
        raw = sentence.get("raw") if isinstance(sentence, dict) else sentence
        if not isinstance(raw, str):
            raise InputError("each sentence must be a string or an object with a string 'raw'", path=json_path,
                             entry=index)
        texts.append(raw.strip())
    return texts


def default_image_root(json_path: str | Path) -> Path:
    """Where a Karpathy JSON's images are looked up without ``--image-root``: ``<json dir>/images`` when that
    folder exists, else the JSON's folder."""
    folder = Path(json_path).parent
    return folder / "images" if (folder / "images").is_dir() else folder


def load_karpathy(json_path: str | Path, image_root: str | Path | None = None, *, check_files: bool = True) -> Dataset:
    """Load a Karpathy-split JSON; image paths are ``image_root/[filepath/]filename``.

    ``image_root`` defaults to ``<json dir>/images`` when that folder exists, else the JSON's folder.
    Raises :class:`InputError` naming the file and entry for malformed entries, missing images,
    empty captions and duplicate ids.
    """
    json_path = Path(json_path)
    data = read_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError("expected an object with an 'images' list (Karpathy form)", path=json_path)
    image_root = Path(image_root) if image_root is not None else default_image_root(json_path)
    records: list[ImageRecord] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or "filename" not in entry:
            raise InputError("entry has no 'filename'", path=json_path, entry=index)
        for key in ("filename", "filepath", "split"):
            if key in entry and not isinstance(entry[key], str):
                raise InputError(f"{key!r} must be a string, not {type(entry[key]).__name__}", path=json_path,
                                 entry=index)
        image_id = _image_id(entry, index)
        if image_id in seen:
            raise InputError(f"duplicate image id {image_id!r} (also entry {seen[image_id]})", path=json_path, entry=index)
        seen[image_id] = index
        split = entry.get("split", "train")
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {SPLITS}", path=json_path, entry=index)
        texts = _entry_texts(entry.get("sentences", []), json_path, index)
        if not texts or any(not t for t in texts):
            raise InputError(f"image {image_id!r} has an empty caption", path=json_path, entry=index)
        path = image_root / entry.get("filepath", "") / entry["filename"]
        if check_files and not path.is_file():
            raise InputError(f"image file not found: {path}", path=json_path, entry=index)
        meta = {k: v for k, v in entry.items() if k not in ("filename", "filepath", "split", "sentences", "image_id")}
        records.append(ImageRecord(image_id=image_id, path=path, split=split, texts=texts, meta=meta))
    return Dataset(records, name=str(data.get("dataset", json_path.stem)), root=image_root)


def save_karpathy(dataset: Dataset, json_path: str | Path) -> Path:
    """Write ``dataset`` in the Karpathy form (atomically); paths are stored relative to the JSON's
    ``images/`` folder when they are inside it."""
    json_path = Path(json_path)
    image_root = json_path.parent / "images"
    images = []
    for record in dataset.images:
        try:
            rel = record.path.resolve().relative_to(image_root.resolve())
            filepath, filename = str(rel.parent) if str(rel.parent) != "." else "", rel.name
        except ValueError:
            filepath, filename = str(record.path.resolve().parent), record.path.name
        entry = {"image_id": record.image_id, "filename": filename, "split": record.split,
                 "sentences": [{"raw": t, "tokens": t.lower().split()} for t in record.texts]}
        if filepath:
            entry["filepath"] = filepath
        entry.update(record.meta)
        images.append(entry)
    return write_json(json_path, {"dataset": dataset.name, "images": images})


def test_queries(dataset: Dataset, split: str = "test") -> tuple[list[str], list[str]]:
    """Held-out queries of a split: every text of every image, with its gold image id."""
    texts, gold = [], []
    for record in dataset.split(split):
        for text in record.texts:
            texts.append(text)
            gold.append(record.image_id)
    return texts, gold


test_queries.__test__ = False  # not a pytest test


def query_ids(dataset: Dataset, split: str = "test") -> list[str]:
    """Stable ids of :func:`test_queries`' queries, in the same order: ``<image id>#<text index>``."""
    return [f"{r.image_id}#{i}" for r in dataset.split(split) for i in range(len(r.texts))]


def dataset_digest(dataset: Dataset) -> str:
    """A short fingerprint of what a pseudo-query file depends on: every image id, its split, and the
    held-out images' texts (the queries a leak filter checked against)."""
    import hashlib
    import json

    rows = sorted((r.image_id, r.split, r.texts if r.split not in TRAIN_SPLITS else []) for r in dataset.images)
    return hashlib.sha1(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()[:16]
