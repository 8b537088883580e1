"""The rooms' dependency rules, read from the source (lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("skiff", "training", "functions", "infra")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import module` imports the module; `from module import name` the module.
                targets.update(
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names
                )
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _imports_from(graph: dict[str, set[str]], source: str, target: str) -> set[tuple[str, str]]:
    return {(m, t) for m, ts in graph.items() if m.startswith(source) for t in ts if t.startswith(target)}


def test_no_import_circle_among_the_project_modules() -> None:
    assert _cycles(_import_graph()) == []


def test_the_circle_check_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_training_does_not_depend_on_the_local_stack() -> None:
    assert _imports_from(_import_graph(), "training", "skiff.local") == set()


def test_the_core_depends_on_no_outer_room() -> None:
    graph = _import_graph()
    core = {m: ts for m, ts in graph.items() if not m.startswith("skiff.local")}
    assert {edge for room in ("functions", "infra", "training") for edge in _imports_from(core, "skiff", room)} == set()


def test_the_local_stack_reaches_out_only_to_handlers_and_the_progress_protocol() -> None:
    graph = _import_graph()
    outward = {t for room in ("functions", "infra", "training") for _, t in _imports_from(graph, "skiff.local", room)}
    # It runs the very Lambda handlers, and reads training jobs' progress with the job's own protocol.
    assert all(t.startswith("functions.") and t.endswith(".handler") for t in outward - {"training.progress"})
    assert "training.progress" in outward
