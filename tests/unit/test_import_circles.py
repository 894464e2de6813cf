"""No import circles: no module of the package imports one that imports it back, directly or
through others. Every import counts, at the top of a module or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import taiat

ROOT = Path(taiat.__file__).parent


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _owner(name: str, modules: set[str]) -> str | None:
    """The module `name` is, or the nearest package it is a name of."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that the module at `path` imports, anywhere in it."""
    here = _name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(_owner(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(_owner(f"{base}.{alias.name}", modules) or _owner(base, modules))
    return {name for name in found if name is not None and name != here}


def graph() -> dict[str, set[str]]:
    paths = {_name(path): path for path in ROOT.rglob("*.py")}
    modules = set(paths)
    return {name: _imported(path, modules) for name, path in paths.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_finder_sees_a_circle_through_a_lazy_import() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_the_finder_sees_imports_inside_functions_and_of_submodules() -> None:
    edges = graph()
    assert "taiat.store.queries.plans" in edges["taiat.store.plans"]  # from ... import plans as
    assert (
        "taiat.supervisor.daemon" in edges["taiat.cli.supervisor_command"]
    )  # inside supervisor_main


def test_no_module_imports_one_that_imports_it_back() -> None:
    edges = graph()
    circles = cycles(edges)
    described = [
        " <-> ".join(circle)
        + ": "
        + "; ".join(f"{a} -> {b}" for a in circle for b in sorted(edges[a]) if b in circle)
        for circle in circles
    ]
    assert not circles, "import circles:\n" + "\n".join(described)
