"""All hand-offs between asyncio, trio and threads live in one module: ``_bridge.py``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "netra_actors"

#: Attributes whose use is a crossing between asyncio, trio and threads.
CROSSINGS = {
    "from_thread",
    "to_thread",
    "run_sync_soon",
    "start_guest_run",
    "call_soon",
    "call_soon_threadsafe",
    "current_trio_token",
    "run_coroutine_threadsafe",
}

#: Packages outside the bridge that may cross, and why (the benchmarks, which measure the
#: crossings themselves, live outside the package in benchmarks/).
ALLOWED: dict[str, str] = {}


def offenders(root: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.name == "_bridge.py" or rel.parts[0] in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names] + (node.module or "").split(".")
            line = getattr(node, "lineno", 0)
            found.extend(f"{rel}:{line}: {name}" for name in names if name in CROSSINGS)
    return found


def test_only_the_bridge_crosses_between_asyncio_trio_and_threads() -> None:
    assert offenders(PACKAGE) == []


def test_the_check_finds_a_crossing(tmp_path: Path) -> None:
    (tmp_path / "_x.py").write_text(
        '"""trio.from_thread in prose is fine"""\ntrio.from_thread.run(f)\n'
    )
    assert offenders(tmp_path) == ["_x.py:2: from_thread"]
