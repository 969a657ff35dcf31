"""Every third-party module that src/grace imports belongs to a distribution that pyproject.toml declares (as a
dependency or in an extra): an import that only works because another package happened to bring it fails here."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).parents[1]
#: modules of optional extras this machine cannot install, and their distributions
NOT_INSTALLED_HERE = {"open_clip": "open-clip-torch", "wandb": "wandb"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {_normalise(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0]) for req in requirements}


def imported_top_level_modules() -> dict[str, str]:
    """Top-level module → one file that imports it, over every import statement in src/grace (also inside
    functions: those are the lazy heavy imports)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "src" / "grace").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_declared_dependencies_cover_every_import():
    declared = declared_distributions()
    owners = packages_distributions()
    undeclared = {}
    for module, where in imported_top_level_modules().items():
        if module == "grace" or module in sys.stdlib_module_names:
            continue
        dists = {_normalise(d) for d in owners.get(module, [])} or (
            {_normalise(NOT_INSTALLED_HERE[module])} if module in NOT_INSTALLED_HERE else set())
        if not dists:
            undeclared[module] = f"{where} (no installed distribution provides it)"
        elif not dists & declared:
            undeclared[module] = f"{where} (from {', '.join(sorted(dists))})"
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
