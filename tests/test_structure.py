"""The codebase's shape, checked: every module imports, and no import cycle exists, not even
through imports inside functions (issue 20: a stale import hid on the GPU path for a round; seven
function-level cycles ran through the demo)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Extras a module may need that the test environment does not install: only these may be missing.
OPTIONAL = {"ray", "torchvision", "pynvml"}


def modules() -> dict[str, Path]:
    """guardedge.* module name -> file, over pyproject's package-dir mapping."""
    text = (ROOT / "pyproject.toml").read_text()
    dirs = {k: ROOT / v for k, v in re.findall(r'"(guardedge[\w.]*)"\s*=\s*"([^"]+)"', text)}
    out = {}
    for package, folder in dirs.items():
        for file in folder.rglob("*.py"):
            parts = [p for p in file.relative_to(folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = file
    return out


def test_every_module_imports():
    failed = {}
    for name in sorted(modules()):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in OPTIONAL:
                failed[name] = repr(exc)
        except Exception as exc:  # noqa: BLE001 - report every module that fails, not the first
            failed[name] = repr(exc)
    assert not failed, failed


def import_graph() -> dict[str, set[str]]:
    """Edges module -> guardedge module it imports, anywhere in the file (TYPE_CHECKING blocks excepted)."""
    found = modules()

    def owner(name: str) -> str | None:
        while name:
            if name in found:
                return name
            name = name.rpartition(".")[0]
        return None

    graph: dict[str, set[str]] = {name: set() for name in found}
    for name, file in found.items():
        tree = ast.parse(file.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("guardedge"):
                targets = [owner(f"{node.module}.{a.name}") or owner(node.module) for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [owner(a.name) for a in node.names if a.name.startswith("guardedge")]
            graph[name].update(t for t in targets if t and t != name)
    return graph


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
        for w in sorted(graph[v]):
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


def test_no_import_cycles_even_inside_functions():
    assert cycles(import_graph()) == []


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_core_never_imports_the_demo_export_or_bench():
    graph = import_graph()
    core = [m for m in graph if _in(m, "guardedge.runtime") and not _in(m, "guardedge.runtime.demo")
            and m != "guardedge.runtime.cli"]  # the CLI is the face over everything (it reaches the demo lazily)
    outside = ("guardedge.runtime.demo", "guardedge.export", "guardedge.bench")
    bad = {m: sorted(t for t in graph[m] if any(_in(t, p) for p in outside)) for m in core}
    assert {m: t for m, t in bad.items() if t} == {}


@pytest.mark.parametrize("graph", [{"a": {"b"}, "b": {"a"}, "c": set()}])
def test_a_cycle_is_found(graph):
    assert cycles(graph) == [["a", "b"]]


def test_every_guardedge_import_names_something_that_exists():
    """Every ``from guardedge.x import y`` anywhere, inside functions and in the tests too, names a
    module and an attribute that exist: an import inside a function runs only on its path (last
    round one sat on the GPU path, where the first GPU would have found it)."""
    files = list(modules().items()) + [(f"tests.{p.stem}", p) for p in (ROOT / "tests").glob("*.py")]
    stale = []
    for name, file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("guardedge")):
                continue
            try:
                module = importlib.import_module(node.module)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] not in OPTIONAL:
                    stale.append(f"{file.relative_to(ROOT)}:{node.lineno}: no module {node.module}")
                continue
            for alias in node.names:
                if hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ModuleNotFoundError:
                    stale.append(f"{file.relative_to(ROOT)}:{node.lineno}: {node.module} has no {alias.name}")
    assert not stale, "\n".join(stale)
