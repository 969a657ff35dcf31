"""What a run-folder stage was built from, so a reused stage is never stale.

Each stage folder gets ``stage.json``, written last: the stage's settings and a digest of each input file
(the dataset, the identifier map, the pseudo-queries, the shards' manifest, ...). Before a stage is reused,
:func:`reusable` compares the record with what the stage would be built from now; on a difference the
stage is rebuilt (cheap, derived stages) or the run stops with a one-line error that names the difference
(stages that later stages were trained on, or that cost a training run). A folder built before records
existed has none: it is treated as a difference.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from grace.errors import GraceError
from grace.io_utils import file_digest, read_json, write_json

RECORD = "stage.json"
log = logging.getLogger(__name__)


def stage_record(settings: dict[str, Any], inputs: dict[str, str | Path]) -> dict:
    """The record of a stage built now: its ``settings`` and the digest of each named input file."""
    return {"settings": dict(settings), "inputs": {name: file_digest(path) for name, path in inputs.items()}}


def differences(have: dict | None, want: dict) -> list[str]:
    """What differs between a saved record and the wanted one, one phrase per item."""
    if have is None:
        return ["no stage record (built by an older grace)"]
    out = []
    for part in ("settings", "inputs"):
        saved, wanted = have.get(part, {}), want[part]
        for key in sorted(set(saved) | set(wanted)):
            if saved.get(key) != wanted.get(key):
                if part == "settings":
                    out.append(f"{key}={saved.get(key)!r}, now {wanted.get(key)!r}")
                else:
                    out.append(f"input {key} changed")
    return out


def reusable(folder: Path, complete: bool, want: dict, *, stage: str, on_change: str = "rebuild") -> bool:
    """Whether the stage in ``folder`` (``complete``: its outputs are all there) can be reused as built for
    ``want``. A difference either removes the folder so it is rebuilt (``on_change="rebuild"``) or raises a
    one-line :class:`GraceError` naming it (``"error"``)."""
    if not complete:
        return False
    path = Path(folder) / RECORD
    found = differences(read_json(path) if path.is_file() else None, want)
    if not found:
        return True
    if on_change == "error":
        raise GraceError(f"{folder} ({stage}) was built from something else: {'; '.join(found)}. Use another "
                         "--run folder, or --force to rebuild it and everything after it")
    print(f"[{stage}] stale ({'; '.join(found)}): rebuilding")
    shutil.rmtree(folder, ignore_errors=True)
    return False


def save_record(folder: Path, record: dict) -> None:
    """Write ``folder/stage.json`` (call it last, once the stage's outputs are complete)."""
    write_json(Path(folder) / RECORD, record)
