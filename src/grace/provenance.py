"""What every result file says about how it was made: the code's git commit (and whether the checkout had
uncommitted changes), the protocol, the pseudo-queries' source and digest, the seeds, and the query ids the
numbers were computed on (so two results are paired by id, never by count)."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
