"""Small I/O helpers shared by every stage: atomic writes, JSON configs beside artefacts, file digests, seeding."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator

CONFIG_NAME = "config.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto ``path`` only if the block succeeds.

    A killed or failing writer therefore never leaves a truncated artefact at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (dataclasses and Paths are converted)."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a missing or malformed file into a one-line :class:`InputError`."""
    from grace.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path=path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start}: {exc.reason})", path=path) from None


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, paths and tuples into plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_config(directory: str | os.PathLike, config: Any, name: str = CONFIG_NAME) -> Path:
    """Save the config that produced the artefacts in ``directory`` beside them."""
    return write_json(Path(directory) / name, config)


def file_digest(path: str | os.PathLike) -> str | None:
    """sha1 (16 hex digits) of a file's bytes, read in blocks; None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def folder_bytes(path: str | os.PathLike) -> int:
    """Total bytes of every file under ``path``, recursively (0 when ``path`` does not exist)."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (when installed) for deterministic runs."""
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass
