"""What every result file says about how it was made: the code's git commit (and whether the checkout had
uncommitted changes), the protocol, the pseudo-queries' source and digest, the seeds, and the query ids the
numbers were computed on (so two results are paired by id, never by count); for a benchmark script, the
command, commit and machine of its footer (:func:`script_provenance`, :func:`provenance_lines`)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from grace.run_layout import RunLayout

PACKAGE_DIR = Path(__file__).resolve().parent


def git_state(path: str | Path = PACKAGE_DIR) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding ``path`` (None outside git:
    an installed wheel, say, with ``"reason"``)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError) as err:
        return {"commit": None, "dirty": None, "reason": f"not a git checkout ({type(err).__name__})"}
    return {"commit": commit, "dirty": dirty}


def query_provenance(query_ids: list[str], gold_ids: list[str], split: str, source: str) -> dict:
    """The query set a table was scored on: ids and gold image ids in scoring order."""
    if len(query_ids) != len(gold_ids):
        raise ValueError(f"{len(query_ids)} query ids for {len(gold_ids)} gold ids")
    return {"split": split, "source": source, "count": len(query_ids), "ids": list(query_ids),
            "gold": list(gold_ids)}


def same_queries(a: dict, b: dict) -> str | None:
    """None when two result files were scored on the same query ids and gold images; else why not."""
    qa, qb = a.get("queries"), b.get("queries")
    if not qa or not qb or "ids" not in qa or "ids" not in qb:
        return "a result file has no query ids (made before they were recorded): re-score it"
    if qa["ids"] != qb["ids"]:
        return f"different query ids ({qa.get('count')} vs {qb.get('count')} queries)"
    if qa["gold"] != qb["gold"]:
        return "same query ids but different gold images"
    return None


def machine_description() -> str:
    """One line: CPU cores and model, memory, accelerator, torch version (for published results)."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        mem = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}){mem}, {gpu}, torch {torch.__version__}, {platform.system()}"


def script_provenance(script: str | Path, argv: Sequence[str] | None = None) -> dict:
    """How a benchmark script's result was made: ``command`` as typed (``python <script> ARGS``, the script
    relative to the working folder when under it; ``argv`` None: this process's arguments), ``git`` (commit and
    dirty flag) and ``machine``."""
    path = Path(script)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    args = sys.argv[1:] if argv is None else list(argv)
    return {"command": "python " + shlex.join([path.as_posix(), *args]), "git": git_state(),
            "machine": machine_description()}


def provenance_lines(report: Mapping) -> list[str]:
    """The Markdown footer of a result made by :func:`script_provenance`: its command, commit (when recorded)
    and machine, with the wall time when ``report`` has ``wall_s``."""
    lines = [f"- command: `{report['command']}`"]
    if "git" in report:
        lines.append(f"- commit: {report['git'].get('commit')} (dirty: {report['git'].get('dirty')})")
    wall = f"; wall {report['wall_s']:.0f} s" if report.get("wall_s") is not None else ""
    return [*lines, f"- machine: {report['machine']}{wall}"]


def trained_run_provenance(run: str | Path) -> dict:
    """What a ``grace ablate`` run's own table says about how its models were made (protocol, selection split,
    seeds, commit, the pseudo-queries' generator and digest), for a result computed later from that run;
    ``{}`` when the run has no table."""
    import json

    path = RunLayout(run).ablation
    prov = json.loads(path.read_text(encoding="utf-8")).get("provenance", {}) if path.is_file() else {}
    keep = {key: prov[key] for key in ("protocol", "selected_on", "seeds", "git") if key in prov}
    if "pseudo_queries" in prov:
        keep["pseudo_queries"] = {k: prov["pseudo_queries"].get(k) for k in ("generator", "digest")}
    return keep
