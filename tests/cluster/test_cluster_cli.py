"""Issue 10, ``--db``: a URL the server cannot use is a clear error at start (non-zero exit, a
message naming the problem), never a SQLite file (or folder) named after it; nor is a folder
made for a SQLite file whose directory is missing (issue 20)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from clusterkit import SECRET, free_port

import netra_actors as na


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


@pytest.mark.parametrize("db", ["sqlite:///data/x.db", "data/x.db"])
def test_cluster_a_sqlite_file_in_a_missing_directory_is_a_clear_error(
    db: str, tmp_path: Path
) -> None:
    """``sqlite:///data/x.db`` (three slashes: relative) names ``./data/x.db``; without a
    ``./data`` the server refuses to start, naming the absolute path, instead of making one."""
    work = tmp_path / "cwd"
    work.mkdir()
    env = dict(os.environ, NETRA_HOME=str(tmp_path / "home"))
    cmd = [
        sys.executable, "-m", "netra_actors._cli", "serve",
        "--port", str(free_port()), "--db", db, "--secret", SECRET,
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    assert f"{work / 'data'} does not exist" in done.stderr, done.stderr
    if "://" in db:
        assert "'sqlite:////data/x.db', with four" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert list(work.iterdir()) == [], "a directory was created"


def test_cluster_a_sqlite_database_url_names_its_file_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    absolute = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'x.db'}"
    assert na.database_url("sqlite:///data/x.db") == absolute
    assert na.database_url("data/x.db") == absolute
    assert na.database_url(f"sqlite:///{tmp_path}/data/x.db?timeout=3") == absolute + "?timeout=3"
    for memory in ("sqlite://", "sqlite:///:memory:"):  # no file: as they are
        assert na.database_url(memory) == "sqlite+aiosqlite" + memory[len("sqlite") :]
    with pytest.raises(na.exceptions.ConfigError, match=re.escape("sqlite:////elsewhere/x.db")):
        na.database_url("sqlite:///elsewhere/x.db")
