#!/usr/bin/env python3
"""Make a venv from a conda env file's dependency list, where conda's channels cannot be reached.

    python scripts/venv_from_conda_env.py envs/train.yml .venv-train
    python scripts/venv_from_conda_env.py envs/infer.yml .venv-infer

The ``pip:`` list is installed as conda would install it: written as a requirements file beside the env file and
run from that folder, so ``-e ..[extras]`` and ``-c constraints.txt`` mean what they mean to conda. The conda
packages are mapped to their PyPI names (``ninja``); ``python`` must match this interpreter's major.minor, and
``pip`` comes with the venv. An unknown conda package is an error, not a silent skip.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

#: conda package → its PyPI name ("" when the venv itself provides it)
CONDA_TO_PIP = {"pip": "", "ninja": "ninja"}


def pip_requirements(env_file: Path) -> list[str]:
    """The env file's dependencies as pip requirement lines (conda names mapped, ``pip:`` entries as they are)."""
    import yaml

    spec = yaml.safe_load(env_file.read_text())
    lines: list[str] = []
    for dep in spec.get("dependencies", []):
        if isinstance(dep, dict):
            lines += [str(line) for line in dep.get("pip", [])]
            continue
        name, _, version = str(dep).partition("=")
        if name == "python":
            want, have = version.strip("="), f"{sys.version_info.major}.{sys.version_info.minor}"
            if want and not have.startswith(want):
                raise SystemExit(f"{env_file}: python={want}, but this interpreter is {have}")
        elif name in CONDA_TO_PIP:
            lines = ([CONDA_TO_PIP[name] + (f"=={version.strip('=')}" if version else "")] if CONDA_TO_PIP[name]
                     else []) + lines
        else:
            raise SystemExit(f"{env_file}: conda package {dep!r} has no PyPI mapping (add it to CONDA_TO_PIP)")
    return lines


def make_venv(env_file: Path, target: Path, *, pip_args: list[str] = ()) -> Path:
    """Create ``target`` (a venv) and install ``env_file``'s dependencies into it; returns its python."""
    env_file = env_file.resolve()
    lines = pip_requirements(env_file)
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    python = target / "bin" / "python"
    with tempfile.NamedTemporaryFile("w", suffix=".requirements.txt", dir=env_file.parent, delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", f.name, *pip_args],
                       cwd=env_file.parent, env=env, check=True)
    finally:
        os.unlink(f.name)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_file", type=Path, help="a conda env file (envs/train.yml, envs/infer.yml)")
    parser.add_argument("target", type=Path, help="the venv folder to create (replaced if it exists)")
    args = parser.parse_args(argv)
    print(make_venv(args.env_file, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
