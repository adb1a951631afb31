"""``store``: the group-commit writer alone, against the physical limit of raw ``sqlite3``.

*Store*: ``users`` concurrent trio tasks (one per user) each commit ``units`` prepared
:class:`~netra_actors._uow.UnitOfWork` objects of ``every`` ``agent_thinking`` events, one after
the other, through ``SqlStore.commit`` (group commit on the asyncio host, aiosqlite, a real SQLite
file in WAL mode). Timed: from the first commit to the last one returned, including the hand-offs
trio → asyncio → trio and the construction of the committed :class:`~netra_actors.Event` values.

*Raw*: the same rows (same table, same columns, same values, same order) written with the standard
``sqlite3`` module on one connection in WAL mode with ``synchronous=NORMAL`` (the store's settings),
one ``executemany`` and one commit per round of all users: what a perfect group commit could do.
The row tuples are built before the clock starts.

Both files are counted afterwards with ``sqlite3``: every row must be there.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time

import trio

import netra_actors as na
from netra_actors._store import SqlStore
from netra_actors._uow import UnitOfWork

from ._common import (
    BenchError,
    Column,
    Goal,
    Options,
    Progress,
    Report,
    Row,
    measure_repeats,
    median_rows,
    rate,
    runtime_gc_threshold,
)
from ._throughput import TEXT, users_list

NAME = "store"
TITLE = "group-commit writer alone vs raw sqlite3 executemany (same rows, same file settings)"
INSERT = (
    "INSERT INTO netra_events (user_id, seq, run_id, event, ts, data) VALUES (?, ?, ?, ?, ?, ?)"
)


def units_per_user(users: int, every: int, quick: bool) -> int:
    """Enough units that each configuration runs for a measurable time."""
    total_events = (10_000 if quick else 100_000) if users >= 100 else (1_000 if quick else 20_000)
    return max(2, total_events // (users * every))


def _prepare(users: int, units: int, every: int) -> list[list[UnitOfWork]]:
    out = []
    for u in range(users):
        user_id = f"user{u:05d}"
        mine = []
        for n in range(units):
            unit = UnitOfWork(user_id)
            for _ in range(every):
                unit.emit(f"r_{u:05d}_{n}", "agent_thinking", {"text": TEXT})
            mine.append(unit)
        out.append(mine)
    return out


async def _store_side(db: str, work: list[list[UnitOfWork]], progress: Progress, label: str) -> Row:
    config = na.RuntimeConfig(database_url=na.sqlite_url(db))
    store = await SqlStore.open(config)
    total_units = sum(len(w) for w in work)
    done = [0]
    bad: list[str] = []
    try:

        async def user(units: list[UnitOfWork]) -> None:
            head = 0
            for unit in units:
                events = await store.commit(unit.user_id, head, unit)
                if events[0].seq != head + 1 or len(events) != len(unit.events):
                    bad.append(f"{unit.user_id}: seq {events[0].seq} after head {head}")
                head = events[-1].seq
                done[0] += 1

        async def tick() -> None:
            while True:
                progress.bar(label, done[0], total_units)
                await trio.sleep(0.2)

        async with trio.open_nursery() as outer:
            outer.start_soon(tick)
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for units in work:
                    nursery.start_soon(user, units)
            seconds = time.perf_counter() - started
            outer.cancel_scope.cancel()
        progress.done()
        stats = store.statistics()
    finally:
        await store.aclose()
    if bad:
        raise BenchError(f"store returned wrong seqs: {bad[0]}")
    return {
        "store_seconds": seconds,
        "store_events": stats.events_committed,
        "group_commits": stats.batches,
        "units_per_commit": stats.units_committed / stats.batches if stats.batches else 0.0,
    }


def _raw_side(db: str, schema_from: str, work: list[list[UnitOfWork]], ts: float) -> Row:
    """The same rows, raw: one executemany + commit per round of all users."""
    with sqlite3.connect(schema_from) as src:
        ddl = [
            sql
            for (sql,) in src.execute(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name = 'netra_events'"
            )
        ]
    src.close()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for sql in ddl:
            conn.execute(sql)
        rounds: list[list[tuple[str, int, str | None, str, float, str]]] = []
        for r in range(max(len(w) for w in work)):
            chunk: list[tuple[str, int, str | None, str, float, str]] = []
            for units in work:
                if r < len(units):
                    unit = units[r]
                    base = r * len(unit.events)
                    chunk.extend(
                        (unit.user_id, base + i, ev.run_id, ev.event, ts, ev.data_json)
                        for i, ev in enumerate(unit.events, start=1)
                    )
            rounds.append(chunk)
        started = time.perf_counter()
        for chunk in rounds:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, chunk)
            conn.execute("COMMIT")
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    return {"raw_seconds": seconds, "raw_events": sum(len(c) for c in rounds)}


def _count(db: str) -> int:
    with sqlite3.connect(db) as conn:
        n = int(conn.execute("SELECT COUNT(*) FROM netra_events").fetchone()[0])
    conn.close()
    return n


def run_once(
    users: int, units: int, every: int, progress: Progress, directory: str | None = None
) -> Row:
    """One measurement of both sides, back to back (the ratio is taken within this run)."""
    work = _prepare(users, units, every)
    expected = users * units * every
    with tempfile.TemporaryDirectory(prefix="netra-bench-", dir=directory) as tmp:
        store_db = os.path.join(tmp, "store.db")
        raw_db = os.path.join(tmp, "raw.db")
        with runtime_gc_threshold():  # as inside a runtime
            row = na.run(
                _store_side, store_db, work, progress, f"{users} writers", handle_signals=False
            )
        if row is None:
            raise KeyboardInterrupt
        row.update(_raw_side(raw_db, store_db, work, time.time()))
        in_store, in_raw = _count(store_db), _count(raw_db)
    if not (row["store_events"] == in_store == in_raw == expected):
        raise BenchError(
            f"store with {users} writers: expected {expected} rows; store committed "
            f"{row['store_events']}, file has {in_store}; raw file has {in_raw}"
        )
    store_rate = rate(expected, row["store_seconds"])
    raw_rate = rate(expected, row["raw_seconds"])
    return {
        "users": users,
        "units_per_user": units,
        "events_per_unit": every,
        "events": expected,
        "store_events_per_s": store_rate,
        "raw_events_per_s": raw_rate,
        "ratio": store_rate / raw_rate if raw_rate else 0.0,
        "group_commits": row["group_commits"],
        "units_per_commit": row["units_per_commit"],
        "verified": True,
    }


COLUMNS = [
    Column(key="users", title="concurrent writers"),
    Column(key="events", title="events"),
    Column(key="events_per_unit", title="events/unit"),
    Column(key="store_events_per_s", title="store events/s"),
    Column(key="raw_events_per_s", title="raw sqlite3 events/s"),
    Column(key="ratio", title="store / raw", fmt="{:.2f}"),
    Column(key="units_per_commit", title="units/commit", fmt="{:,.1f}"),
    Column(key="verified", title="verified"),
]


def run(options: Options, progress: Progress) -> Report:
    """The scenario, for every number of concurrent writers."""
    users = users_list(options, [1, 100, 1000], [1, 100, 1000])
    every: int = options.extra.get("every") or 10
    fixed: int | None = options.extra.get("events")
    directory: str | None = options.extra.get("dir")
    configs = [
        (n, max(1, fixed // every) if fixed else units_per_user(n, every, options.quick))
        for n in users
    ]
    runs = measure_repeats(
        options,
        progress,
        configs,
        lambda c, _i: run_once(c[0], c[1], every, progress, directory),
        label=lambda c: f"{c[0]} writers x {c[1]} units",
    )
    rows = median_rows(runs, "users")
    at_1000 = next((r["ratio"] for r in rows if r["users"] == 1000), None)
    return Report(
        scenario=NAME,
        title=TITLE,
        options=options,
        columns=COLUMNS,
        rows=rows,
        runs=runs,
        goals=[Goal(text=">= 0.5 of raw sqlite3 (1,000 writers)", measured=at_1000, target=0.5)],
        notes=[
            "ratio = median over the repeats of (store events/s / raw events/s), each repeat "
            "measuring both sides back to back",
            "raw: one sqlite3 connection, WAL, synchronous=NORMAL, one executemany + COMMIT per "
            "round of all writers (the best a group commit could batch); rows prebuilt",
            "the store side runs with the collector thresholds a runtime sets "
            "(RuntimeConfig.gc_threshold)",
        ],
    )
