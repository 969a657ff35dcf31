"""The package's import graph: data flows down the stages, with no circle and no arrow pointing back up.

Every ``import`` counts, including those inside functions (a function-local import hides a circle from the
interpreter, not from a reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"

#: stage → the stages it may import (the shared modules ``grace/*.py`` are "bottom")
ALLOWED = {
    "bottom": {"bottom"},
    "data_process": {"bottom"},
    "identifiers": {"bottom", "data_process"},
    "model": {"bottom", "data_process", "identifiers"},
    "train": {"bottom", "data_process", "identifiers", "model"},
    "infer": {"bottom", "data_process", "identifiers", "model"},
    "retrieval_baselines": {"bottom", "data_process", "identifiers", "model"},
    "experiments": {"bottom", "data_process", "identifiers", "model", "train", "infer", "retrieval_baselines"},
}
#: the command line and ``python -m grace``: above everything
TOP = {"grace.cli", "grace.__main__"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "grace").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and (SRC / "grace" / parts[1]).is_dir():
        return parts[1]
    return "bottom"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_there_is_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_arrow_points_back_up_the_stages():
    graph = import_graph()
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() if a not in TOP for b in targets
                    if stage_of(b) != stage_of(a) and stage_of(b) not in ALLOWED[stage_of(a)])
    assert upward == []


def test_the_checker_sees_function_local_imports_and_circles():
    # the checker itself must be able to fail: a local import is an edge, and a 2-cycle is a circle
    graph = import_graph()
    assert "grace.experiments.retrievers" in graph["grace.cli"] or any(
        stage_of(b) == "experiments" for b in graph["grace.experiments.cli"])
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
