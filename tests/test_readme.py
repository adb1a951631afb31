"""Every complete program in README.md runs as pasted, and stops by itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = [
    block
    for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    if re.search(r"\b(na\.run|netra_actors\.run|asyncio\.run|trio\.run)\(|__main__", block)
]


def test_the_readme_has_a_program() -> None:
    assert PROGRAMS


@pytest.mark.parametrize("program", PROGRAMS, ids=[f"program{i + 1}" for i in range(len(PROGRAMS))])
def test_readme_program_runs_as_pasted(program: str, tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text(program)
    for _ in range(2):  # twice: a second run on the same database must stop too
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "tool_completed" in proc.stdout
        assert "'state': 'completed'" in proc.stdout
