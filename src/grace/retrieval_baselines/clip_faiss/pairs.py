"""REACT's "retrieve pairs per class prompt": class names × prompt templates → retrieved image-text pairs.

``prompt_mode="averaged"``: each class query is the normalised mean of its prompt embeddings (CLIP's prompt
ensembling). ``"separate"`` (REACT's ``retrieve_pairs_sep_prompts``): every prompt of a class is its own
query, and the class keeps its prompts' hits interleaved by rank (the first hit of every prompt, then the
second, ...), each image once. The top ``images_per_class`` distinct images are written as
``OUT/<class>/NNNN.<ext>`` + ``NNNN.txt`` and listed in ``OUT/metadata.json``; optionally as webdataset
shards ``OUT/shards/pairs-NNNNNN.tar`` (``__key__``, image bytes, ``txt`` and a ``json`` with class, image
id, score, rank, prompt). ``dataset="imagenet-1k"`` takes the shipped class names and CLIP's 80 templates
(folders ``NNNN_<class>``, NNNN = the label, which also key ``metadata.json``'s classes).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from grace.data_process.features import unit_rows
from grace.errors import InputError
from grace.io_utils import atomic_path, save_config, write_json

log = logging.getLogger(__name__)


def class_folder_name(name: str) -> str:
    """A file-system-safe folder name for a class."""
    return re.sub(r"[^\w.-]+", "_", name.strip()).strip("._") or "class"


CLASS_SETS = Path(__file__).parent / "class_sets"
DEFAULT_TEMPLATES = ["a photo of a {}."]


def class_set_names() -> list[str]:
    """Named class sets shipped with the package (``--dataset``)."""
    return sorted(p.stem for p in CLASS_SETS.glob("*.json"))


def load_class_set(name: str) -> dict:
    """A shipped class set: ``classes`` (index = label), ``templates``, ``source``."""
    path = CLASS_SETS / f"{name}.json"
    if not path.is_file():
        raise InputError(f"unknown class set {name!r}; shipped: {', '.join(class_set_names())}")
    return json.loads(path.read_text(encoding="utf-8"))


def read_classes(classes: list[str], classes_file: Path | None) -> list[str]:
    names = list(classes)
    if classes_file is not None:
        if not Path(classes_file).is_file():
            raise InputError("classes file not found", path=classes_file)
        names += [line.strip() for line in Path(classes_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise InputError("no class names: give --classes, --classes-file or --dataset")
    if any(not n.strip() for n in names):
        raise InputError("empty class name")
    return names


def resolve_classes(config) -> tuple[list[str], list[str], list[str]]:
    """(classes, their folder names, templates) from ``--dataset`` or ``--classes``/``--classes-file``."""
    if config.dataset:
        if config.classes or config.classes_file:
            raise InputError("give --dataset or your own classes (--classes / --classes-file), not both")
        class_set = load_class_set(config.dataset)
        classes = class_set["classes"]
        folders = [f"{i:04d}_{class_folder_name(c)}" for i, c in enumerate(classes)]
        return classes, folders, list(config.templates or class_set["templates"])
    classes = read_classes(config.classes, config.classes_file)
    if len(set(classes)) != len(classes):
        raise InputError(f"duplicate class names: {sorted({c for c in classes if classes.count(c) > 1})}")
    folders = [class_folder_name(c) for c in classes]
    if len(set(folders)) != len(folders):
        raise InputError(f"class names collide as folder names: {classes}")
    return classes, folders, list(config.templates or DEFAULT_TEMPLATES)


def _check_templates(templates: list[str]) -> None:
    if not templates or any("{}" not in t for t in templates):
        raise InputError(f"every template needs a '{{}}' placeholder, got {templates}")


def class_queries(encoder, classes: list[str], templates: list[str]) -> np.ndarray:
    """(C, D) prompt-ensembled class embeddings."""
    _check_templates(templates)
    prompts = [t.format(c) for c in classes for t in templates]
    emb = encoder.encode_texts(prompts).reshape(len(classes), len(templates), -1).mean(axis=1)
    return unit_rows(emb)


def interleave_prompt_hits(per_prompt: list[list[tuple[int, float]]], row_images: list[str], k: int
                           ) -> list[tuple[int, float, int]]:
    """One class's hits from its prompts' separate searches: rank 0 of every prompt, then rank 1, ...,
    each image once (its first appearance), up to ``k``: (row, score, prompt index)."""
    seen, picked = set(), []
    for rank in range(max((len(h) for h in per_prompt), default=0)):
        for prompt, hits in enumerate(per_prompt):
            if rank < len(hits) and row_images[hits[rank][0]] not in seen:
                seen.add(row_images[hits[rank][0]])
                picked.append((*hits[rank], prompt))
                if len(picked) == k:
                    return picked
    return picked


def class_hits(retriever, classes: list[str], templates: list[str], k: int, mode: str
               ) -> list[list[tuple[int, float, int | None]]]:
    """Per class, up to ``k`` (row, score, prompt index or None when averaged) of distinct images."""
    if mode == "averaged":
        rows = retriever.search_rows(class_queries(retriever.encoder, classes, templates), k)
        return [[(row, score, None) for row, score in picked] for picked in rows]
    if mode != "separate":
        raise InputError(f"prompt mode must be averaged or separate, got {mode!r}")
    from grace.retriever import Query

    _check_templates(templates)
    rows = retriever.search_rows(retriever.embed([Query(text=t.format(c)) for c in classes for t in templates]), k)
    width = len(templates)
    return [interleave_prompt_hits(rows[i * width:(i + 1) * width], retriever.index.row_images, k)
            for i in range(len(classes))]


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

    classes, folders, templates = resolve_classes(config)
    retriever = retriever or ClipFaissRetriever.load(config.index)
    keys = retriever.index.keys
    hits = class_hits(retriever, classes, templates, config.images_per_class, config.prompt_mode)
    out = Path(config.out)
    metadata = {"classes": {}, "templates": templates, "prompt_mode": config.prompt_mode,
                "dataset": config.dataset, "index": str(config.index)}
    samples = []
    for cls, folder, picked in zip(classes, folders, hits):
        entries = []
        for rank, (row, score, prompt) in enumerate(picked):
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
            meta = {"class": cls, "image_id": image_id, "text": text, "score": score, "rank": rank, "source": source,
                    "prompt": templates[prompt].format(cls) if prompt is not None else None}
            entries.append({**meta, "file": f"{folder}/{name}.{ext}" if config.folders else None})
            samples.append({"key": f"{folder}-{name}", "ext": ext, "bytes": data, "text": text, "meta": meta})
        # a class set may repeat a name (ImageNet: two "missile"s): key its classes by the labelled folder
        metadata["classes"][folder if config.dataset else cls] = {"class": cls, "folder": folder, "pairs": entries}
    if config.shards:
        metadata["shards"] = [str(p.relative_to(out)) for p in _write_shards(out, samples, config.max_per_shard)]
    write_json(out / "metadata.json", metadata)
    save_config(out, config)
    log.info("%d classes × up to %d pairs → %s", len(classes), config.images_per_class, out)
    return metadata
