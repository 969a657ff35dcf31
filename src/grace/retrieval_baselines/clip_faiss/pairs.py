"""REACT's "retrieve pairs per class prompt": class names × prompt templates → retrieved image-text pairs.

Each class query is the normalised mean of its prompt embeddings (CLIP's prompt ensembling); the top
``images_per_class`` distinct images are written as ``OUT/<class>/NNNN.<ext>`` + ``NNNN.txt`` and listed
in ``OUT/metadata.json``; optionally as webdataset shards ``OUT/shards/pairs-NNNNNN.tar`` (``__key__``,
image bytes, ``txt`` and a ``json`` with class, image id, score, rank).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from grace.errors import InputError
from grace.io_utils import atomic_path, save_config, write_json

log = logging.getLogger(__name__)


def class_folder_name(name: str) -> str:
    """A file-system-safe folder name for a class."""
    return re.sub(r"[^\w.-]+", "_", name.strip()).strip("._") or "class"


def read_classes(classes: list[str], classes_file: Path | None) -> list[str]:
    names = list(classes)
    if classes_file is not None:
        if not Path(classes_file).is_file():
            raise InputError("classes file not found", path=classes_file)
        names += [line.strip() for line in Path(classes_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise InputError("no class names: give --classes or --classes-file")
    if any(not n.strip() for n in names):
        raise InputError("empty class name")
    return names


def class_queries(encoder, classes: list[str], templates: list[str]) -> np.ndarray:
    """(C, D) prompt-ensembled class embeddings."""
    if not templates or any("{}" not in t for t in templates):
        raise InputError(f"every template needs a '{{}}' placeholder, got {templates}")
    prompts = [t.format(c) for c in classes for t in templates]
    emb = encoder.encode_texts(prompts).reshape(len(classes), len(templates), -1).mean(axis=1)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _write_shards(out: Path, samples: list[dict], max_per_shard: int) -> list[Path]:
    import io
    import json
    import tarfile

    paths = []
    for shard_idx, start in enumerate(range(0, len(samples), max_per_shard)):
        path = out / "shards" / f"pairs-{shard_idx:06d}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".tar") as tmp, tarfile.open(tmp, "w") as tar:
            for sample in samples[start:start + max_per_shard]:
                members = {sample["ext"]: sample["bytes"], "txt": sample["text"].encode("utf-8"),
                           "json": json.dumps(sample["meta"], ensure_ascii=False).encode("utf-8")}
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{sample['key']}.{ext}")
                    info.size = len(data)
                    info.mtime = 0
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def retrieve_pairs(config, retriever=None) -> dict:
    """``retrieve-pairs``: writes the per-class folders / shards and returns the metadata."""
    from grace.retrieval_baselines.clip_faiss.retriever import ClipFaissRetriever
    from grace.retrieval_baselines.clip_faiss.sources import read_source_bytes

    classes = read_classes(config.classes, config.classes_file)
    folders = [class_folder_name(c) for c in classes]
    if len(set(folders)) != len(folders):
        raise InputError(f"class names collide as folder names: {classes}")
    retriever = retriever or ClipFaissRetriever.load(config.index)
    keys = retriever.index.keys
    rows = retriever.search_rows(class_queries(retriever.encoder, classes, config.templates), config.images_per_class)
    out = Path(config.out)
    metadata, samples = {"classes": {}, "templates": list(config.templates), "index": str(config.index)}, []
    for cls, folder, picked in zip(classes, folders, rows):
        entries = []
        for rank, (row, score) in enumerate(picked):
            image_id, source = keys["row_image"][row], keys["row_source"][row]
            text = keys["row_text"][row] or (keys["captions"].get(image_id) or [""])[0]
            ext = Path(source.partition("#")[2] or source).suffix.lstrip(".").lower() or "png"
            data = read_source_bytes(source)
            name = f"{rank:04d}"
            if config.folders:
                with atomic_path(out / folder / f"{name}.{ext}") as tmp:
                    tmp.write_bytes(data)
                with atomic_path(out / folder / f"{name}.txt") as tmp:
                    tmp.write_text(text + "\n", encoding="utf-8")
            meta = {"class": cls, "image_id": image_id, "text": text, "score": score, "rank": rank, "source": source}
            entries.append({**meta, "file": f"{folder}/{name}.{ext}" if config.folders else None})
            samples.append({"key": f"{folder}-{name}", "ext": ext, "bytes": data, "text": text, "meta": meta})
        metadata["classes"][cls] = {"folder": folder, "pairs": entries}
    if config.shards:
        metadata["shards"] = [str(p.relative_to(out)) for p in _write_shards(out, samples, config.max_per_shard)]
    write_json(out / "metadata.json", metadata)
    save_config(out, config)
    log.info("%d classes × up to %d pairs → %s", len(classes), config.images_per_class, out)
    return metadata
