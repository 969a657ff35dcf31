"""i2id / t2id training shards (webdataset tar files), written atomically and resumably.

- ``i2id-%06d.tar`` — "learning to memorise": every image of every split → its identifier.
- ``t2id-%06d.tar`` — "learning to retrieve": train captions, plus the pseudo-queries of held-out images
  (never their held-out captions) → the identifier.

Each sample is ``__key__``, the image bytes under ``png``/``jpg``, and ``json`` =
``{"image_id", "identifier", "text", "task", "split"}`` (``text`` is "" for i2id). Shards are written by
``webdataset.ShardWriter`` under a temporary name and renamed when complete, so a killed run leaves no
truncated shard; a re-run with the same inputs skips the finished shards. ``shards.json`` (written last)
records the counts and the config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from grace.data_process.dataset import TRAIN_SPLITS, Dataset
from grace.data_process.pseudo_queries import leak_filter
from grace.errors import InputError
from grace.io_utils import read_json, write_json

log = logging.getLogger(__name__)
TASKS = ("i2id", "t2id")
IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}
MANIFEST = "shards.json"


@dataclass(frozen=True)
class ShardSample:
    """One training sample before its image bytes are read."""

    key: str
    image_id: str
    path: Path
    identifier: str
    text: str
    task: str
    split: str

    def json(self) -> bytes:
        meta = {"image_id": self.image_id, "identifier": self.identifier, "text": self.text, "task": self.task,
                "split": self.split}
        return json.dumps(meta, ensure_ascii=False).encode("utf-8")


def _safe_key(image_id: str) -> str:
    """webdataset splits keys at the first dot of a member name: keep keys dot- and slash-free."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", image_id)


def plan_samples(dataset: Dataset, idmap, pseudo_queries: dict[str, list[str]]) -> dict[str, list[ShardSample]]:
    """The i2id and t2id samples, in dataset order. Raises :class:`InputError` if a pseudo-query leaks a
    held-out query (the leak filter's word bags) or names an image that is not in the dataset."""
    unknown = sorted(set(pseudo_queries) - set(dataset.image_ids()))
    if unknown:
        raise InputError(f"pseudo-queries for {len(unknown)} unknown images, e.g. {unknown[0]!r}", path=dataset.name)
    guard = leak_filter(dataset)
    samples: dict[str, list[ShardSample]] = {task: [] for task in TASKS}
    keys: set[str] = set()
    for record in dataset.images:
        key = _safe_key(record.image_id)
        if key in keys:
            raise InputError(f"image ids collide as shard key {key!r}", path=dataset.name, entry=record.image_id)
        keys.add(key)
        identifier = idmap.to_id(record.image_id)
        common = {"image_id": record.image_id, "path": Path(record.path), "identifier": identifier, "split": record.split}
        samples["i2id"].append(ShardSample(key=key, text="", task="i2id", **common))
        if record.split in TRAIN_SPLITS:
            texts = record.texts
        else:
            texts = pseudo_queries.get(record.image_id, [])
            leaks = [t for t in texts if not guard.keep(t, record.image_id)]
            if leaks:
                raise InputError(f"pseudo-query {leaks[0]!r} repeats a held-out query: it would leak into training",
                                 path=dataset.name, entry=record.image_id)
        for j, text in enumerate(texts):
            samples["t2id"].append(ShardSample(key=f"{key}-t{j}", text=text, task="t2id", **common))
    return samples


def _image_member(path: Path, image_id: str) -> tuple[str, bytes]:
    """(extension, bytes) of an image; other formats are converted to PNG; corrupt files are an error."""
    from grace.data_process.features import open_image

    if not path.is_file():
        raise InputError("image file not found", path=path, entry=image_id)
    ext = IMAGE_EXTENSIONS.get(path.suffix.lower())
    if ext is not None:
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as exc:  # noqa: BLE001 -- PIL raises many types for corrupt files
            raise InputError(f"unreadable or corrupt image ({type(exc).__name__})", path=path, entry=image_id) from None
        return ext, path.read_bytes()
    import io

    buffer = io.BytesIO()
    open_image(path).save(buffer, format="PNG")
    return "png", buffer.getvalue()


def _fingerprint(samples: list[ShardSample], max_per_shard: int) -> str:
    digest = hashlib.sha256(str(max_per_shard).encode())
    for s in samples:
        digest.update(f"{s.key}\t{s.identifier}\t{s.text}\t{s.path}\n".encode())
    return digest.hexdigest()


def _write_task(out_dir: Path, task: str, samples: list[ShardSample], max_per_shard: int, progress: bool) -> list[Path]:
    """Write one task's shards, skipping the finished ones of an earlier run with the same samples."""
    import webdataset as wds
    from tqdm import tqdm

    n_shards = max(1, -(-len(samples) // max_per_shard))
    finals = [out_dir / f"{task}-{i:06d}.tar" for i in range(n_shards)]
    state_file = out_dir / f".{task}-progress.json"
    fingerprint = _fingerprint(samples, max_per_shard)
    if not state_file.is_file() or read_json(state_file).get("fingerprint") != fingerprint:
        for stale in out_dir.glob(f"{task}-*.tar"):
            stale.unlink()  # written from other inputs: start over
        write_json(state_file, {"fingerprint": fingerprint, "shards": n_shards})
    first = next((i for i, f in enumerate(finals) if not f.is_file()), n_shards)
    if first == n_shards:
        log.info("shards: %s complete (%d shards), nothing to do", task, n_shards)
        return finals
    if first:
        log.info("shards: %s resumes at shard %d of %d", task, first, n_shards)

    def publish(temp_name: str) -> None:
        temp = Path(temp_name)
        temp.replace(out_dir / temp.name.removeprefix(".tmp-"))

    writer = wds.ShardWriter(str(out_dir / f".tmp-{task}-%06d.tar"), maxcount=max_per_shard, maxsize=float("inf"),
                             post=publish, start_shard=first, verbose=0)
    member: tuple[Path, str, bytes] | None = None  # samples of one image are adjacent: read it once
    try:
        for sample in tqdm(samples[first * max_per_shard:], desc=f"shards {task}", disable=not progress):
            if member is None or member[0] != sample.path:
                member = (sample.path, *_image_member(sample.path, sample.image_id))
            writer.write({"__key__": sample.key, member[1]: member[2], "json": sample.json()})
    except BaseException:
        writer.post = None  # never publish a shard that was cut short
        writer.close()
        for temp in out_dir.glob(f".tmp-{task}-*.tar"):
            temp.unlink()
        raise
    writer.close()
    return finals


def write_shards(dataset: Dataset, idmap, out_dir: str | Path, *, pseudo_queries: dict[str, list[str]],
                 max_per_shard: int = 1000, progress: bool = True) -> dict:
    """Write i2id and t2id shards of ``dataset`` under ``out_dir`` and return the summary saved in
    ``shards.json`` (counts per task, shard files, config)."""
    if max_per_shard < 1:
        raise InputError(f"max_per_shard must be positive, got {max_per_shard}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # re-written only when every shard is complete
    samples = plan_samples(dataset, idmap, pseudo_queries)
    summary: dict = {"dataset": dataset.name, "max_per_shard": max_per_shard, "tasks": {}}
    for task in TASKS:
        files = _write_task(out_dir, task, samples[task], max_per_shard, progress)
        summary["tasks"][task] = {"samples": len(samples[task]), "shards": [f.name for f in files]}
    summary["t2id_from_pseudo_queries"] = sum(1 for s in samples["t2id"] if s.split not in TRAIN_SPLITS)
    write_json(out_dir / MANIFEST, summary)
    log.info("shards: %d i2id + %d t2id samples -> %s", len(samples["i2id"]), len(samples["t2id"]), out_dir)
    return summary


def read_shards(out_dir: str | Path, task: str) -> Iterator[dict]:
    """Decoded samples of one task (``webdataset.WebDataset(...).decode("pil")``: images as PIL), for inspection and tests."""
    import webdataset as wds

    files = sorted(str(p) for p in Path(out_dir).glob(f"{task}-*.tar"))
    if not files:
        raise InputError(f"no {task}-*.tar shards", path=out_dir)
    yield from wds.WebDataset(files, shardshuffle=False, empty_check=False).decode("pil")

