"""The recovery scan's reads stay on their indexes (they run every ``recovery_scan`` seconds,
however many runs the store holds): SQLite's plan for the due-timers read searches
``netra_runs_wake_at``, the live-runs read ``netra_runs_state_wait`` (the runs that wait as a
row are not read); neither scans every run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine

from netra_actors._store._rows import LIVE_STATE_VALUES
from netra_actors._store._schema import migrate
from netra_actors._store._sqlite_reader import ORPHANS_DUE, ORPHANS_LIVE


def plan(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> str:
    return " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def test_the_due_timers_read_searches_the_wake_at_index(tmp_path: Path) -> None:
    db = tmp_path / "netra.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as sa:
        migrate(sa)
    engine.dispose()
    conn = sqlite3.connect(db)
    try:
        runs = [(f"u{i % 100}", f"r{i}", "running", "input") for i in range(2000)]
        conn.executemany(
            "INSERT INTO netra_runs (user_id, run_id, agent, state, attempt, created_at, "
            "updated_at, wait) VALUES (?, ?, 'a', ?, 1, 0, 0, ?)",
            runs,
        )
        conn.commit()
        due = plan(conn, ORPHANS_DUE, (1.0, 100))
        assert "USING INDEX netra_runs_wake_at" in due, due
        assert "SCAN r" not in due, due
        live = plan(conn, ORPHANS_LIVE, (*LIVE_STATE_VALUES, 100))
        assert "SCAN r" not in live, live
        # the waiting runs are skipped by the index, not by reading each one's row
        assert "USING INDEX netra_runs_state_wait (state=? AND wait=?)" in live, live
        assert conn.execute(ORPHANS_DUE, (1.0, 100)).fetchall() == []
    finally:
        conn.close()
