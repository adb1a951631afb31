"""The sans-I/O core imports no I/O, concurrency or clock library (architecture §3, style.md).

The test reads source with :mod:`ast` and never imports what it checks. It starts from every
module under ``netra_actors/_core/`` and follows each import that lands inside ``netra_actors``
(relative or absolute, e.g. ``from .._exceptions import ...``) transitively. Each module reached
may import only the standard library minus a deny-list, ``attrs``, and other pure modules of the
package.

The package's own ``netra_actors/__init__.py`` is the runtime's public face (it re-exports trio
code), so the core must not import names *from* it; only its submodules are followed.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import attrs
import pytest

PACKAGE = "netra_actors"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / PACKAGE
CORE = f"{PACKAGE}._core"

FORBIDDEN = frozenset(
    {
        "trio",
        "trio_websocket",
        "pykka",
        "sqlalchemy",
        "aiosqlite",
        "asyncpg",
        "asyncio",
        "socket",
        "threading",
        "time",
        "selectors",
        "ssl",
        "h11",
        "wsproto",
        # Dynamic imports would hide all of the above from this walker.
        "importlib",
    }
)
ALLOWED_THIRD_PARTY = frozenset({"attrs"})


@attrs.frozen
class Imported:
    """One import statement's target, resolved to an absolute module name."""

    module: str
    """The module named by the statement (``x.y`` for ``import x.y`` / ``from x.y import z``)."""
    names: tuple[str, ...]
    """For ``from m import a, b``: ``a``, ``b`` (each may be a submodule of ``m``)."""
    line: int


@attrs.frozen
class Violation:
    module: str
    line: int
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.why}"


def resolve_relative(module: str | None, level: int, package: str) -> str:
    """The absolute name of ``from <level dots><module> import ...`` inside ``package``."""
    if level == 0:
        assert module is not None
        return module
    parts = package.split(".")
    if level - 1 >= len(parts):
        raise ImportError(f"relative import beyond the top-level package from {package}")
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(source: str, module: str, *, is_package: bool) -> list[Imported]:
    """Every import in ``source`` (at any depth, including ``if TYPE_CHECKING:`` blocks)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Imported] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(Imported(a.name, (), node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = resolve_relative(node.module, node.level, package)
            names = tuple(a.name for a in node.names if a.name != "*")
            found.append(Imported(target, names, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.append(Imported("importlib", (), node.lineno))  # flagged as dynamic
    return found


def module_file(root: Path, package: str, module: str) -> Path | None:
    """The source file of ``module`` if it is ``package`` or inside it, else ``None``."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    path = root.joinpath(*parts[1:])
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def check_import(package: str, imported: str) -> str | None:
    """Why ``imported`` may not be imported by pure code, or ``None`` when it may."""
    top = imported.partition(".")[0]
    if top in FORBIDDEN:
        return "forbidden in the sans-I/O core"
    if top == package or top in ALLOWED_THIRD_PARTY:
        return None
    if top in sys.stdlib_module_names:
        return None
    return f"third-party module not allowed (only {sorted(ALLOWED_THIRD_PARTY)})"


@attrs.frozen
class Scan:
    reached: frozenset[str]
    violations: tuple[Violation, ...]


def scan(root: Path, package: str, start: str) -> Scan:
    """Walk ``start`` (a subpackage of ``package``, whose directory is ``root``) and all the
    modules of ``package`` it reaches through imports."""
    start_dir = root.joinpath(*start.split(".")[1:])
    todo = [
        ".".join([start, *p.relative_to(start_dir).with_suffix("").parts]).removesuffix(".__init__")
        for p in sorted(start_dir.rglob("*.py"))
    ]
    reached: set[str] = set()
    violations: list[Violation] = []
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        path = module_file(root, package, module)
        assert path is not None, module
        is_package = path.name == "__init__.py"
        for imp in imports_of(path.read_text(encoding="utf-8"), module, is_package=is_package):
            candidates = [imp.module, *(f"{imp.module}.{n}" for n in imp.names)]
            why = check_import(package, imp.module)
            if why is not None:
                violations.append(Violation(module, imp.line, imp.module, why))
                continue
            if imp.module.partition(".")[0] != package:
                continue
            if imp.module == package:
                # ``from netra_actors import x``: only a submodule is acceptable, never a name
                # re-exported by the package's __init__ (which pulls in the whole runtime).
                submodules = [c for c in candidates[1:] if module_file(root, package, c)]
                bad = [n for n in imp.names if f"{package}.{n}" not in submodules]
                if bad or not imp.names:
                    violations.append(
                        Violation(module, imp.line, package, "imports the package's __init__")
                    )
                todo.extend(submodules)
                continue
            if module_file(root, package, imp.module) is None:
                violations.append(Violation(module, imp.line, imp.module, "no such module"))
                continue
            todo.extend(c for c in candidates if module_file(root, package, c) is not None)
    return Scan(frozenset(reached), tuple(violations))


# ---------------------------------------------------------------------------- the real core


def test_core_is_pure() -> None:
    result = scan(PACKAGE_DIR, PACKAGE, CORE)
    assert not result.violations, "\n".join(str(v) for v in result.violations)


def test_walker_reaches_the_core_and_what_it_imports() -> None:
    reached = scan(PACKAGE_DIR, PACKAGE, CORE).reached
    expected = {
        f"{CORE}",
        f"{CORE}._execution",
        f"{CORE}._restart",
        f"{CORE}._liveness",
        f"{PACKAGE}._exceptions",  # through ``from .._exceptions import ...``
    }
    assert expected <= reached
    assert PACKAGE not in reached
    assert all(m == PACKAGE or m.startswith(f"{PACKAGE}.") for m in reached)


def test_every_core_file_is_reached() -> None:
    reached = scan(PACKAGE_DIR, PACKAGE, CORE).reached
    core_dir = PACKAGE_DIR / "_core"
    for path in core_dir.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        assert name in reached


# ------------------------------------------------------------------- the walker can fail


def flagged(source: str, module: str = f"{CORE}._x", *, is_package: bool = False) -> set[str]:
    return {
        imp.module
        for imp in imports_of(textwrap.dedent(source), module, is_package=is_package)
        if check_import(PACKAGE, imp.module) is not None
    }


def test_self_check_import_trio_is_flagged() -> None:
    assert flagged("import trio\n") == {"trio"}


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("import trio.lowlevel as tl", "trio.lowlevel"),
        ("from trio import sleep", "trio"),
        ("import os, socket", "socket"),
        ("from time import monotonic", "time"),
        ("import sqlalchemy.ext.asyncio", "sqlalchemy.ext.asyncio"),
        ("from asyncio import Queue", "asyncio"),
        ("import threading", "threading"),
        ("import pykka", "pykka"),
        ("import h11, wsproto", "h11"),
        ("def f() -> None:\n    import selectors\n", "selectors"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ssl\n", "ssl"),
        ("try:\n    import aiosqlite\nexcept ImportError:\n    pass\n", "aiosqlite"),
        ("import importlib\n", "importlib"),
        ("m = __import__('trio')\n", "importlib"),
        ("import numpy", "numpy"),
        ("import attr", "attr"),  # the old namespace is not the allowed one
        ("import orjson", "orjson"),
    ],
)
def test_self_check_forbidden_forms(source: str, bad: str) -> None:
    assert bad in flagged(source)


@pytest.mark.parametrize(
    "source",
    [
        "from __future__ import annotations",
        "import attrs",
        "from attrs import frozen",
        "import enum, math",
        "from collections.abc import Mapping",
        "from .._exceptions import ConfigError",
        "from . import _execution",
    ],
)
def test_self_check_allowed_forms(source: str) -> None:
    assert flagged(source) == set()


def test_relative_imports_resolve() -> None:
    def targets(source: str, module: str, *, is_package: bool) -> list[tuple[str, tuple[str, ...]]]:
        return [(i.module, i.names) for i in imports_of(source, module, is_package=is_package)]

    assert targets("from .._exceptions import E", f"{CORE}._execution", is_package=False) == [
        (f"{PACKAGE}._exceptions", ("E",))
    ]
    assert targets("from ._restart import R", CORE, is_package=True) == [
        (f"{CORE}._restart", ("R",))
    ]
    assert targets("from . import _restart", CORE, is_package=True) == [(CORE, ("_restart",))]
    assert targets("from . import _restart", f"{CORE}._x", is_package=False) == [
        (CORE, ("_restart",))
    ]
    assert targets("from .. import _exceptions", CORE, is_package=True) == [
        (PACKAGE, ("_exceptions",))
    ]
    with pytest.raises(ImportError):
        imports_of("from ... import x", f"{CORE}._x", is_package=False)


def write_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "fakepkg"
    for rel, source in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return pkg


def test_self_check_follows_relative_imports_transitively(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "_core/__init__.py": "from ._a import A\n",
            "_core/_a.py": "from .._helpers import H\nA = H\n",
            "_helpers.py": "from ._deeper import D\nH = D\n",
            "_deeper.py": "import trio\nD = 1\n",
            "_unrelated.py": "import sqlalchemy\n",  # not reached: must not be reported
        },
    )
    result = scan(pkg, "fakepkg", "fakepkg._core")
    assert {"fakepkg._core", "fakepkg._core._a", "fakepkg._helpers", "fakepkg._deeper"} <= (
        result.reached
    )
    assert "fakepkg._unrelated" not in result.reached
    assert [(v.module, v.imported) for v in result.violations] == [("fakepkg._deeper", "trio")]


def test_self_check_follows_absolute_and_from_package_imports(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "__init__.py": "import trio\n",
            "_core/__init__.py": "import fakepkg._store\nfrom .. import _clock\n",
            "_store.py": "import aiosqlite\n",
            "_clock.py": "import time\n",
        },
    )
    result = scan(pkg, "fakepkg", "fakepkg._core")
    assert {(v.module, v.imported) for v in result.violations} == {
        ("fakepkg._store", "aiosqlite"),
        ("fakepkg._clock", "time"),
    }
    assert "fakepkg" not in result.reached  # the package __init__ is not walked ...


def test_self_check_importing_from_the_package_init_is_flagged(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "__init__.py": "from ._runtime import Runtime\n",
            "_runtime.py": "import trio\nclass Runtime: ...\n",
            "_core/__init__.py": "from .. import Runtime\n",
        },
    )
    result = scan(pkg, "fakepkg", "fakepkg._core")
    assert [(v.module, v.why) for v in result.violations] == [
        ("fakepkg._core", "imports the package's __init__")
    ]


def test_self_check_missing_package_module_is_flagged(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path, {"__init__.py": "", "_core/__init__.py": "from .._gone import X\n"}
    )
    result = scan(pkg, "fakepkg", "fakepkg._core")
    assert [(v.imported, v.why) for v in result.violations] == [("fakepkg._gone", "no such module")]
