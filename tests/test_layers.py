"""The layers the README promises, checked on the source: who may import whom, and no import cycles.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import is still a
dependency, and a cycle that only works because one side imports late is still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("searchspaces", "ostr_ray")
LAYERS = {
    "searchspaces": 0,
    "ostr_ray.fileio": 0,
    "ostr_ray.data": 1,
    "ostr_ray.core": 2,
    "ostr_ray.experiment": 3,
    "ostr_ray.console": 4,
    "ostr_ray.tracking": 4,
    "ostr_ray.orchestration": 5,
    "ostr_ray.evidence": 5,
    "ostr_ray.retrain": 6,
    "ostr_ray.evaluate": 7,
    "ostr_ray.cli": 8,
}
"""A module may import its own package and packages of a lower layer (same-layer edge packages stay apart)."""
EDGE_LIBRARIES = ("ray", "mlflow", "rich", "typer", "matplotlib")
PURE_LAYERS = ("searchspaces", "ostr_ray.fileio", "ostr_ray.data", "ostr_ray.core", "ostr_ray.experiment")
"""Layers that never import the edge libraries (the core is torch only; Ray, MLflow and the CLI consume it)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every module ``name`` imports (absolute form); relative imports resolved against its package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                yield child if child in known else base


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: set(_imports(name, path, known)) - {name} for name, path in modules.items()}


def _layer_of(module: str) -> str | None:
    return max((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), key=len, default=None)


def test_every_module_belongs_to_a_layer():
    assert [m for m in _modules() if _layer_of(m) is None and m != "ostr_ray"] == []


def test_imports_go_down_the_layers():
    wrong = []
    for module, targets in _graph().items():
        own = _layer_of(module)
        for target in targets:
            other = _layer_of(target)
            if own is None or other is None or other == own:
                continue
            if LAYERS[other] >= LAYERS[own]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_searchspaces_never_imports_ostr_ray():
    assert [
        (m, t) for m, ts in _graph().items() if m.startswith("searchspaces") for t in ts if t.startswith("ostr_ray")
    ] == []


def test_the_core_layers_never_import_ray_mlflow_rich_or_typer():
    wrong = []
    for module, targets in _graph().items():
        if _layer_of(module) in PURE_LAYERS:
            wrong += [f"{module} -> {t}" for t in targets if t.split(".")[0] in EDGE_LIBRARIES]
    assert wrong == []


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
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


ARCHITECTURE = REPO / "docs" / "architecture.md"


def _documented_layers() -> dict[str, tuple[int, set[str]]]:
    """The layer table of docs/architecture.md: package -> (rank, the modules it names)."""
    rows = {}
    for line in ARCHITECTURE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            modules = {m.strip() for m in cells[3].split(",")}
            rows[cells[1].strip("`")] = (int(cells[0]), modules)
    return rows


def test_the_architecture_page_has_the_layers_of_the_code():
    assert {package: rank for package, (rank, _) in _documented_layers().items()} == LAYERS


def test_the_architecture_page_names_every_module_in_its_package():
    documented = _documented_layers()
    missing, stale = [], []
    for name in _modules():
        package = _layer_of(name)
        if package is None or name == package and package != "ostr_ray.fileio":
            continue  # a package's own __init__
        if name.endswith("__main__"):
            continue
        if name.rpartition(".")[2] not in documented[package][1]:
            missing.append(name)
    for package, (_, modules) in documented.items():
        for module in modules:
            full = package if package == f"ostr_ray.{module}" else f"{package}.{module}"
            if full not in _modules():
                stale.append(full)
    assert missing == [] and stale == []


def test_the_core_has_a_map():
    import ostr_ray.core

    assert ostr_ray.core.__doc__ and "TODO" not in ostr_ray.core.__doc__
    for module in ("search", "step", "seed", "coordinator"):
        assert f"{module}" in ostr_ray.core.__doc__
