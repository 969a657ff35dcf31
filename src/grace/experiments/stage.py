"""One reuse rule for every run-folder stage: a :class:`Stage` is reused only when its record matches.

A stage is a name, a folder, its settings, its inputs (upstream stage folders or plain files), a build function
and a load function. Its record, ``folder/stage.json``, holds the settings, the digest of each input (an upstream
stage's own ``stage.json``, or the file), a token drawn at build time and the build's seconds, and is written
last:

- the stage is reused when the record is there and its settings and input digests equal the wanted ones;
- otherwise the folder is emptied and rebuilt, and the log names what changed;
- a rebuilt stage draws a new token, so every stage that lists it as an input sees a changed digest and is
  rebuilt in turn: forcing one stage (``force``) rebuilds it and everything downstream of it;
- a crash mid-build leaves no record, so the next run rebuilds the stage — from scratch, or, for a
  ``resumable`` stage (training, shards, pseudo-queries: they continue from what they wrote), from the
  interrupted build's files when it was started for the same record (``stage.building.json``).

The builders record their own output paths in their configs, so a stage is built in place (emptied first)
rather than in a temporary folder renamed at the end; the record written last gives the same guarantee.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grace.errors import GraceError
from grace.io_utils import file_digest, read_json, to_jsonable, write_json
from grace.run_layout import RunLayout

#: a stage's record, in its folder, written last
RECORD = "stage.json"
#: the record a resumable stage's build started from (removed when the build's record is written)
BUILDING = "stage.building.json"


@dataclass
class StageTimer:
    """Seconds per stage in this run (``skipped`` when reused, ``built`` in build order) — printed by the demo
    and the ablation — and what each stage's build took (``build_seconds``: now, or, reused, when it was built;
    a group's is the sum of the stages inside)."""

    seconds: dict[str, float] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)
    built: list[str] = field(default_factory=list)
    build_seconds: dict[str, float] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    def run(self, name: str, done: bool, fn: Callable[[], Any], load: Callable[[], Any], *,
            built_s: float = 0.0) -> Any:
        """``load()`` when ``done`` (its build took ``built_s`` when it was made), else ``fn()``."""
        t0 = time.perf_counter()
        if done:
            self.skipped.add(name)
            result = load()
            print(f"[{name}] reused (already built)")
        else:
            self.skipped.discard(name)
            result = fn()
            self.built.append(name)
        self.seconds[name] = time.perf_counter() - t0
        self.build_seconds[name] = built_s if done else self.seconds[name]
        self.ran.append(name)
        if not done:
            print(f"[{name}] built in {self.seconds[name]:.1f} s")
        return result

    @contextmanager
    def group(self, name: str) -> Iterator[None]:
        """Time the stages run inside as one entry ``name``: built when any of them was built, else reused."""
        t0, before, first = time.perf_counter(), len(self.built), len(self.ran)
        yield
        self.seconds[name] = time.perf_counter() - t0
        self.build_seconds[name] = sum(self.build_seconds[inside] for inside in self.ran[first:])
        if len(self.built) > before:
            self.skipped.discard(name)
        else:
            self.skipped.add(name)


@dataclass
class Stage:
    """One run-folder stage. ``build(folder)`` writes the stage's outputs into ``folder`` (absent when it is
    called; for a ``resumable`` stage, there and holding the interrupted build's files) and returns what
    ``load(folder)`` would; ``inputs`` name upstream stage folders (their ``stage.json`` is what is digested) or
    files; ``settings`` are compared as JSON (tuples as lists, paths as strings)."""

    name: str
    folder: Path
    build: Callable[[Path], Any]
    load: Callable[[Path], Any]
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Path] = field(default_factory=dict)
    resumable: bool = False

    def wanted(self) -> dict:
        """The record this stage would have if built now (without its build token)."""
        settings = json.loads(json.dumps(to_jsonable(dict(self.settings)), sort_keys=True))
        return {"settings": settings, "inputs": {k: input_digest(p) for k, p in self.inputs.items()}}


def differences(have: dict | None, want: dict) -> list[str]:
    """What differs between a saved record and the wanted one, one phrase per item."""
    if have is None:
        return ["no stage record (built by an older grace)"]
    out = []
    for part in ("settings", "inputs"):
        saved, wanted = have.get(part, {}), want[part]
        for key in sorted(set(saved) | set(wanted)):
            if saved.get(key) != wanted.get(key):
                out.append(f"{key}={saved.get(key)!r}, now {wanted.get(key)!r}" if part == "settings"
                           else f"input {key} changed")
    return out


def input_digest(path: Path) -> str:
    """An upstream stage's record digest (its folder's ``stage.json``), or the digest of a plain file; a missing
    input is an error naming it (the stage that makes it has not run)."""
    path = Path(path)
    record = path / RECORD if path.is_dir() else path
    if not record.is_file():
        raise GraceError(f"{path}: a stage's input is missing (its stage has not been built)")
    return file_digest(record)


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether stage ``name`` is named by one of ``patterns`` (itself, or a stage under it: ``build/clip_faiss``
    names ``build/clip_faiss/heads``; ``all`` names every stage)."""
    return any(p == "all" or name == p or name.startswith(p.rstrip("/") + "/") for p in patterns)


def ensure(stage: Stage, *, timer: StageTimer | None = None, force: Iterable[str] = ()) -> Any:
    """Reuse ``stage`` when its record matches and it is not forced, else (re)build it; returns what its
    build or load function returns."""
    timer = timer or StageTimer()
    want = stage.wanted()
    path, building = stage.folder / RECORD, stage.folder / BUILDING
    have = read_json(path) if path.is_file() else None
    found = differences(have, want)
    forced = matches(stage.name, force)
    resume = (stage.resumable and not forced and have is None and building.is_file()
              and read_json(building) == want)
    if found and have is not None:
        print(f"[{stage.name}] stale ({'; '.join(found)}): rebuilding")
    elif forced and not found:
        print(f"[{stage.name}] forced: rebuilding")
    elif resume:
        print(f"[{stage.name}] resuming the interrupted build")

    def build() -> Any:
        if not resume:
            shutil.rmtree(stage.folder, ignore_errors=True)
        stage.folder.parent.mkdir(parents=True, exist_ok=True)
        if stage.resumable:
            write_json(building, want)
        t0 = time.perf_counter()
        built = stage.build(stage.folder)
        stage.folder.mkdir(parents=True, exist_ok=True)
        write_json(path, {**want, "built": uuid.uuid4().hex,  # last: a crash before this leaves no record
                          "build_s": round(time.perf_counter() - t0, 3)})
        building.unlink(missing_ok=True)
        return built

    reuse = not found and not forced
    return timer.run(stage.name, reuse, build, lambda: stage.load(stage.folder),
                     built_s=float(have.get("build_s", 0.0)) if reuse else 0.0)


@dataclass
class RunContext:
    """What every stage of one run shares, passed once: the run folder (and its :class:`RunLayout`), the timer,
    the seed, the progress flag, the device, and the stages to rebuild whatever their records say (``force``)."""

    run: Path
    timer: StageTimer = field(default_factory=StageTimer)
    seed: int = 0
    progress: bool = True
    device: str = "auto"
    force: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.run = Path(self.run)
        self.layout = RunLayout(self.run)

    def stage(self, stage: Stage) -> Any:
        """:func:`ensure` ``stage`` with this run's timer and forced stages."""
        return ensure(stage, timer=self.timer, force=self.force)
