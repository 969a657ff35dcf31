"""``grace ablate --publish DIR``: the ablation's table, JSON and plot copied to
``DIR/<benchmark>-<model>-<protocol>[-<space>-space].{md,json,png}`` (``--publish-name N``:
``DIR/<benchmark>-N.*``) with the command, machine, wall time and commit that made them."""

from __future__ import annotations

import time
from pathlib import Path

from grace.errors import GraceError
from grace.experiments.configs import AblateConfig
from grace.experiments.stage import StageTimer
from grace.io_utils import write_json
from grace.run_layout import RunLayout


def check_publish_name(name: str) -> None:
    """A one-line error unless ``--publish-name`` is empty or a plain file name."""
    if name and (Path(name).name != name or name.startswith(".")):
        raise GraceError(f"--publish-name {name!r} must be a plain file name (e.g. best)")


def publish(run: Path, config: AblateConfig, tables: str, wall_s: float, timer: StageTimer) -> list[Path]:
    """Copy the ablation to ``config.publish/<benchmark>-<model>.{md,json,png}`` with its provenance."""
    import shlex
    import shutil
    import sys

    from grace.io_utils import atomic_write_text, read_json
    from grace.provenance import machine_description

    check_publish_name(config.publish_name)
    space = "" if config.vision_space == "features" else f"-{config.vision_space}-space"
    name = f"{_benchmark_name(config)}-" + (config.publish_name or f"{Path(config.model).stem}-{config.protocol}{space}")
    out = Path(config.publish)
    out.mkdir(parents=True, exist_ok=True)
    args = shlex.join(sys.argv[1:])
    command = f"grace {args}" if Path(sys.argv[0]).name in ("grace", "cli.py", "__main__.py") \
        else shlex.join(sys.argv)
    ablation = read_json(RunLayout(run).ablation)
    provenance = {**ablation.get("provenance", {}), "command": command, "machine": machine_description(),
                  "wall_s": round(wall_s, 1),
                  "date": time.strftime("%Y-%m-%d"), "stage_seconds": {k: round(v, 1) for k, v in timer.seconds.items()},
                  "reused_stages": sorted(timer.skipped), "config": read_json(RunLayout(run).results / "ablation_config.json")}
    previous = out / f"{name}.json"  # a re-run that reuses trained stages keeps the full run's wall time
    if timer.skipped and previous.is_file():
        old = read_json(previous).get("provenance", {})
        full = old.get("full_run_wall_s") or (old.get("wall_s") if not old.get("reused_stages") else None)
        if full:
            provenance["full_run_wall_s"], provenance["full_run_date"] = full, old.get("full_run_date", old.get("date"))
    record = {**ablation, "provenance": provenance}
    write_json(out / f"{name}.json", record)
    reused = f" (stages reused from an earlier run: {', '.join(sorted(timer.skipped))})" if timer.skipped else ""
    if "full_run_wall_s" in provenance:
        reused += (f"; the run that built them took {provenance['full_run_wall_s'] / 60:.1f} min "
                   f"({provenance['full_run_date']})")
    git = provenance.get("git", {})
    text = (f"# Identifier ablation: {_benchmark_name(config)}, model {Path(config.model).stem}, protocol "
            f"`{config.protocol}`{'' if not space else f', the generator in the {config.vision_space} joint space'}"
            f"\n\n{tables}\n"
            f"Recall in % on the held-out test queries with [95% bootstrap intervals over gold images]; latency in "
            f"ms/query; train_s = training (baselines: building) wall time; index_bytes in the JSON.\n\n"
            f"- command: `{command}`\n- machine: {provenance['machine']}\n"
            f"- wall time: {wall_s / 60:.1f} min{reused}\n- date: {provenance['date']}\n"
            f"- commit: {git.get('commit')}{' (with uncommitted changes)' if git.get('dirty') else ''}\n"
            f"- pseudo-queries: {provenance.get('pseudo_queries', {}).get('generator')} (digest "
            f"{provenance.get('pseudo_queries', {}).get('digest')}); query ids in the JSON\n")
    atomic_write_text(out / f"{name}.md", text)
    shutil.copyfile(RunLayout(run).results / "ablation.png", out / f"{name}.png")
    return [out / f"{name}.{ext}" for ext in ("md", "json", "png")]


def _benchmark_name(config: AblateConfig) -> str:
    return Path(config.dataset).parent.name if config.dataset else config.benchmark
