"""How far a reader walks to follow the demo's run through the experiments floor: every call into a function of
``grace/experiments/`` (or ``grace/run_layout.py``), in call (depth-first, reading) order, by source file.

Runs ``grace demo``'s ablation (a small preset by default: 60 emoji, 2 steps, no baselines but the controls)
under a profile hook, then collapses the call sequence into *stays* (consecutive calls in one file) and reports
the files entered, the stays, the *returns* (stays in a file already left once) and the *climbs* (calls into a
file that is already higher on the call stack: down into another file and back up). The same script measures
any commit (it uses only ``grace.experiments.demo.demo_ablate_config`` and
``grace.experiments.ablate.run_ablation``)::

    PYTHONPATH=src python benchmarks/config_walk.py --out /tmp/walk --json walk.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def follow(run) -> list[tuple[str, str, bool]]:
    """``(file, function, climb)`` of every call into the experiments floor while ``run()`` runs, in order;
    ``climb``: the file is already on the call stack above the caller's file."""
    import grace

    root = Path(grace.__file__).resolve().parent
    floor = (str(root / "experiments"), str(root / "run_layout.py"))
    calls: list[tuple[str, str, bool]] = []

    def hook(frame, event, arg):
        if event != "call" or not frame.f_code.co_filename.startswith(floor) or frame.f_code.co_name.startswith("<"):
            return
        file = frame.f_code.co_filename
        above, caller = [], frame.f_back
        while caller is not None:
            if caller.f_code.co_filename.startswith(floor):
                above.append(caller.f_code.co_filename)
            caller = caller.f_back
        climb = bool(above) and above[0] != file and file in above[1:]
        calls.append((str(Path(file).relative_to(root)), frame.f_code.co_name, climb))

    sys.setprofile(hook)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls


def walk(calls: list[tuple[str, str, bool]]) -> dict:
    """Files entered, stays (runs of consecutive calls in one file), returns (stays in a file left before) and
    climbs (calls back up into a file higher on the stack)."""
    stays: list[str] = []
    for file, _, _ in calls:
        if not stays or stays[-1] != file:
            stays.append(file)
    returns = sum(1 for i, file in enumerate(stays) if file in stays[:i])
    functions = list(dict.fromkeys(f"{file}:{name}" for file, name, _ in calls))
    return {"files": len(set(stays)), "stays": len(stays), "returns": returns,
            "climbs": sum(climb for *_, climb in calls), "calls": len(calls), "functions_called": len(functions),
            "walk": stays, "functions": functions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder of the traced demo")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the walk here")
    args = parser.parse_args()

    from grace.experiments.ablate import run_ablation
    from grace.experiments.configs import DemoConfig
    from grace.experiments.demo import demo_ablate_config

    config = demo_ablate_config(DemoConfig(out=args.out, quick=True, limit=args.limit, steps=args.steps,
                                           baselines=["none"]))
    found = walk(follow(lambda: run_ablation(config)))
    print(f"walk: {found['files']} files entered, {found['stays']} stays, {found['returns']} returns to a file "
          f"already left, {found['climbs']} climbs back up ({found['calls']} calls of {found['functions_called']} "
          "functions)")
    print(" -> ".join(found["walk"]))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
