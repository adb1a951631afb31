"""No import cycle between the modules of ``netra_actors`` (also none under ``TYPE_CHECKING``).

The test reads every module of the package with :mod:`ast` (it imports nothing it checks) and
collects every import that lands inside the package — at module level, inside ``if
TYPE_CHECKING:`` blocks and inside function bodies alike — resolving relative imports and
``from package import submodule``. A cycle between modules is a design fault whatever the import
machinery would tolerate: it means two modules are one concept, or a value lives in the wrong
place. The test prints every cycle it finds.

A package's ``__init__.py`` is a re-export surface: an import of ``netra_actors.x.y`` executes
``netra_actors/x/__init__.py`` first, but that edge is not a design dependency, so only the
module named (and its submodules named in ``from ... import``) count as edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "netra_actors"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def resolve(module: str | None, level: int, package: str) -> str:
    if level == 0:
        assert module is not None
        return module
    base = package.split(".")[: len(package.split(".")) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node.module, node.level, package)
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            targets = subs if subs and len(subs) == len(node.names) else [base, *subs]
        for target in targets:
            while target and target not in known:  # ``import a.b.c`` where c is a name
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def a_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module, for the message."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}

    def walk(v: str) -> bool:
        for w in sorted(edges[v] & members):
            if w == start:
                return True
            if w not in seen:
                seen.add(w)
                path.append(w)
                if walk(w):
                    return True
                path.pop()
        return False

    walk(start)
    return [*path, start]


def test_no_import_cycles() -> None:
    edges = graph()
    found = cycles(edges)
    message = "\n".join(" -> ".join(a_cycle(c, edges)) for c in found)
    assert not found, f"import cycles in {PACKAGE}:\n{message}"


def test_the_walker_sees_type_checking_and_function_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ._b import B\n"
        "def f():\n    from . import _c\n"
    )
    known = {f"{PACKAGE}._a": tmp_path, f"{PACKAGE}._b": tmp_path, f"{PACKAGE}._c": tmp_path}
    path = tmp_path / "_a.py"
    path.write_text(source)
    assert imports_of(f"{PACKAGE}._a", path, known) == {f"{PACKAGE}._b", f"{PACKAGE}._c"}


def test_cycles_are_found() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert a_cycle(["a", "b", "c"], edges) == ["a", "b", "c", "a"]
