"""Issue 10, ``--db``: a URL the server cannot use is a clear error at start (non-zero exit, a
message naming the problem), never a SQLite file (or folder) named after it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from clusterkit import SECRET, free_port


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        pytest.param("postgresql+asyncpg:", "://", id="no-slashes"),
        pytest.param("postgresql+asyncpg:/netra", "://", id="one-slash"),
        pytest.param("mysql+aiomysql://u@127.0.0.1:3306/netra", "not supported", id="mysql"),
        pytest.param("redis://127.0.0.1/0", "not supported", id="redis"),
    ],
)
def test_cluster_an_unusable_db_url_is_a_clear_error(
    db: str, expected: str, tmp_path: Path
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    env = dict(os.environ, NETRA_HOME=str(tmp_path / "home"))
    env.pop("NETRA_SECRET", None)
    cmd = [
        sys.executable, "-m", "netra_actors._cli", "serve",
        "--port", str(free_port()), "--db", db, "--secret", SECRET,
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0, done
    assert expected in done.stderr, done.stderr
    assert db in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert list(work.iterdir()) == [], "a file was created for an unusable URL"
    scheme = db.split(":", 1)[0]
    assert not list(tmp_path.rglob(f"{scheme}*")), list(tmp_path.rglob("*"))
