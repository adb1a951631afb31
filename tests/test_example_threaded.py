"""The threaded-agent example runs as documented (docs/agents.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_threaded_agent_example(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "examples/threaded_agent.py", "--db", str(tmp_path / "t.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "run 1: completed" in out
    assert "run 2: cancelled while its thread was blocked" in out
    assert "threads still finishing their blocked call: 1" in out
    assert "'reason': 'cancelled'" in out
