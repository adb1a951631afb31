"""``store``: the group-commit writer alone, against the physical limit of the raw driver.

*Store*: ``users`` concurrent trio tasks (one per user) each commit ``units`` prepared
:class:`~netra_actors._uow.UnitOfWork` objects of ``every`` ``agent_thinking`` events, one after
the other, through ``SqlStore.commit``. Timed: from the first commit to the last one returned,
including the hand-offs to the database side and back and the construction of the committed
:class:`~netra_actors.Event` values.

* **SQLite** (the default; a real file in WAL mode): the store's writer is a dedicated thread that
  owns its own ``sqlite3`` connection and runs each whole group commit (``BEGIN IMMEDIATE``, one
  ``executemany``, ``COMMIT``) as one call, handing the outcomes back to trio once per batch
  (``netra_actors/_store/_sqlite_writer.py``). *Raw*: the same rows (same table, same columns, same
  values, same order) written with the standard ``sqlite3`` module on one connection in WAL mode
  with ``synchronous=NORMAL`` (the store's settings), one ``executemany`` and one commit per round
  of all users: what a perfect group commit could do.
* **PostgreSQL** (``--db postgresql+asyncpg://…``): the store's writer holds one asyncpg connection
  on the asyncio host and writes each group commit as one statement (the lease check, every row
  over ``unnest`` arrays, the hints; ``netra_actors/_store/_postgres.py``). *Raw*: the same rows with asyncpg's
  ``copy_records_to_table`` into the same table, one ``COPY`` in one transaction per round of all
  users. Each repeat of each size creates a fresh database of its own (``netra_bench_<random>``)
  through the server's maintenance database (``postgres``, else ``test``) and drops it afterwards;
  nothing else on the server is touched. The store migrates its schema into ``public``; the raw
  side writes to ``netra_raw.netra_events``, created ``LIKE public.netra_events INCLUDING ALL``
  (the same columns, key and indexes) after the store side, before its clock starts. An unreachable server skips the scenario
  with a message (exit status 0, ``"skipped"`` in the JSON).

The raw row tuples are built before the clock starts. Both databases are counted afterwards:
every row must be there.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import trio

import netra_actors as na
from netra_actors._store import SqlStore
from netra_actors._uow import UnitOfWork

from .harness.emitter import TEXT
from .harness.inprocess import run_trio, scratch_dir, sqlite_counts
from .harness.machine import runtime_gc_threshold
from .harness.postgres import PgServer, PgUnavailable, scratch_database
from .harness.progress import Progress, measure_repeats
from .harness.report import BenchError, Column, Goal, Options, Report, Row
from .harness.stats import rate

TITLE = "group-commit writer alone vs raw sqlite3 executemany (same rows, same file settings)"
TITLE_PG = "group-commit writer alone vs raw asyncpg COPY (same rows, same table, PostgreSQL)"
INSERT = (
    "INSERT INTO netra_events (user_id, seq, run_id, event, ts, data) VALUES (?, ?, ?, ?, ?, ?)"
)
EVENT_COLUMNS = ("user_id", "seq", "run_id", "event", "ts", "data")
EventRow = tuple[str, int, str | None, str, float, str]

GOAL_SQLITE_1000 = 0.7
GOAL_SQLITE_1 = 0.3
GOAL_PG_1000 = 0.5
_PG_GOAL = f">= {GOAL_PG_1000}x raw asyncpg COPY at 1,000 writers"


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


def _rounds(work: list[list[UnitOfWork]], ts: float) -> list[list[EventRow]]:
    """The rows the store writes, grouped by round of all users (one raw transaction each)."""
    rounds: list[list[EventRow]] = []
    for r in range(max(len(w) for w in work)):
        chunk: list[EventRow] = []
        for units in work:
            if r < len(units):
                unit = units[r]
                base = r * len(unit.events)
                chunk.extend(
                    (unit.user_id, base + i, ev.run_id, ev.event, ts, ev.data_json)
                    for i, ev in enumerate(unit.events, start=1)
                )
        rounds.append(chunk)
    return rounds


async def _store_side(
    database_url: str, work: list[list[UnitOfWork]], progress: Progress, label: str
) -> Row:
    config = na.RuntimeConfig(database_url=database_url)
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


def _run_store(database_url: str, work: list[list[UnitOfWork]], progress: Progress) -> Row:
    users = len(work)
    with runtime_gc_threshold():  # as inside a runtime
        return run_trio(_store_side, database_url, work, progress, f"{users} writers")


def _result(users: int, units: int, every: int, row: Row, backend: str) -> Row:
    expected = users * units * every
    store_rate = rate(expected, row["store_seconds"])
    raw_rate = rate(expected, row["raw_seconds"])
    return {
        "users": users,
        "backend": backend,
        "units_per_user": units,
        "events_per_unit": every,
        "events": expected,
        "store_events_per_s": store_rate,
        "raw_events_per_s": raw_rate,
        "ratio": store_rate / raw_rate if raw_rate else 0.0,
        "group_commits": row["group_commits"],
        "units_per_commit": row["units_per_commit"],
        "store_commit_ms": row["store_seconds"] / row["group_commits"] * 1000
        if row["group_commits"]
        else 0.0,
        "verified": True,
    }


def _check_counts(users: int, expected: int, committed: int, in_store: int, in_raw: int) -> None:
    if not (committed == in_store == in_raw == expected):
        raise BenchError(
            f"store with {users} writers: expected {expected} rows; store committed "
            f"{committed}, its database has {in_store}; the raw one has {in_raw}"
        )


# -- SQLite -----------------------------------------------------------------------------------


def _raw_side(db: str, schema_from: str, rounds: list[list[EventRow]]) -> Row:
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
    (n,) = sqlite_counts(db, "SELECT COUNT(*) FROM netra_events")
    return n


def run_once(
    users: int, units: int, every: int, progress: Progress, directory: str | None = None
) -> Row:
    """One measurement of both sides on SQLite, back to back (the ratio is taken within it)."""
    work = _prepare(users, units, every)
    expected = users * units * every
    with scratch_dir(directory) as tmp:
        store_db = os.path.join(tmp, "store.db")
        raw_db = os.path.join(tmp, "raw.db")
        row = _run_store(na.sqlite_url(store_db), work, progress)
        row.update(_raw_side(raw_db, store_db, _rounds(work, time.time())))
        _check_counts(users, expected, row["store_events"], _count(store_db), _count(raw_db))
    return _result(users, units, every, row, "sqlite")


# -- PostgreSQL -------------------------------------------------------------------------------


RAW_SCHEMA = "netra_raw"


async def _raw_pg(dsn: str, rounds: list[list[EventRow]]) -> Row:
    """The same rows, raw: one ``COPY`` in one transaction per round of all users."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"CREATE SCHEMA {RAW_SCHEMA}; CREATE TABLE {RAW_SCHEMA}.netra_events "
            "(LIKE public.netra_events INCLUDING ALL)"
        )
        started = time.perf_counter()
        for chunk in rounds:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "netra_events", schema_name=RAW_SCHEMA, records=chunk, columns=EVENT_COLUMNS
                )
        seconds = time.perf_counter() - started
        in_store = await conn.fetchval("SELECT count(*) FROM public.netra_events")
        in_raw = await conn.fetchval(f"SELECT count(*) FROM {RAW_SCHEMA}.netra_events")
    finally:
        await conn.close()
    return {
        "raw_seconds": seconds,
        "raw_events": sum(len(c) for c in rounds),
        "rows_in_store": int(in_store),
        "rows_in_raw": int(in_raw),
    }


def run_once_pg(users: int, units: int, every: int, progress: Progress, server: PgServer) -> Row:
    """One measurement of both sides on PostgreSQL, in a fresh database of its own."""
    work = _prepare(users, units, every)
    expected = users * units * every
    with scratch_database(server, "netra_bench_") as name:
        row = _run_store(server.sa_url(name), work, progress)
        row.update(asyncio.run(_raw_pg(server.dsn(name), _rounds(work, time.time()))))
    _check_counts(users, expected, row["store_events"], row["rows_in_store"], row["rows_in_raw"])
    return _result(users, units, every, row, "postgresql")


# -- the scenario -----------------------------------------------------------------------------


def _columns(raw_title: str) -> list[Column]:
    return [
        Column(key="users", title="concurrent writers"),
        Column(key="events", title="events"),
        Column(key="events_per_unit", title="events/unit"),
        Column(key="store_events_per_s", title="store events/s"),
        Column(key="raw_events_per_s", title=raw_title),
        Column(key="ratio", title="store / raw", fmt="{:.2f}"),
        Column(key="units_per_commit", title="units/commit", fmt="{:,.1f}"),
        Column(key="store_commit_ms", title="ms/group commit", fmt="{:,.3f}"),
        Column(key="verified", title="verified"),
    ]


COLUMNS = _columns("raw sqlite3 events/s")
COLUMNS_PG = _columns("raw asyncpg COPY events/s")


def _label(config: tuple[int, int]) -> str:
    return f"{config[0]} writers x {config[1]} units"


def _ratio_at(rows: list[Row], users: int) -> float | None:
    return next((r["ratio"] for r in rows if r["users"] == users), None)


def run(options: Options, progress: Progress) -> Report:
    """The scenario, for every number of concurrent writers (SQLite, or ``--db`` PostgreSQL)."""
    every = options.every
    fixed = options.events
    configs = [
        (n, max(1, fixed // every) if fixed else units_per_user(n, every, options.quick))
        for n in options.users([1, 100, 1000], [1, 100, 1000])
    ]
    db_url: str | None = options.extra.get("db")
    if db_url:
        try:
            server = PgServer.connect(db_url)
        except PgUnavailable as exc:
            goal = Goal.at_least(_PG_GOAL, None, GOAL_PG_1000, "x")
            why = f"{exc}; start it (trust auth, user postgres) or drop --db"
            return Report.skip(TITLE_PG, options, COLUMNS_PG, [goal], why)
        title, columns, notes = TITLE_PG, COLUMNS_PG, _pg_notes(server)

        def one(c: tuple[int, int]) -> Row:
            return run_once_pg(c[0], c[1], every, progress, server)

    else:
        title, columns, notes = TITLE, COLUMNS, SQLITE_NOTES

        def one(c: tuple[int, int]) -> Row:
            return run_once(c[0], c[1], every, progress, options.directory)

    runs = measure_repeats(options, progress, configs, one, label=_label)
    report = Report.of(title, options, columns, runs, "users")
    if db_url:
        report.goals = [Goal.at_least(_PG_GOAL, _ratio_at(report.rows, 1000), GOAL_PG_1000, "x")]
    else:
        report.goals = [
            Goal.at_least(
                f">= {GOAL_SQLITE_1000}x raw sqlite3 at 1,000 writers",
                _ratio_at(report.rows, 1000),
                GOAL_SQLITE_1000,
                "x",
            ),
            Goal.at_least(
                f">= {GOAL_SQLITE_1}x raw sqlite3 with 1 writer",
                _ratio_at(report.rows, 1),
                GOAL_SQLITE_1,
                "x",
            ),
        ]
    report.notes = [*COMMON_NOTES, *notes]
    return report


COMMON_NOTES = [
    "ratio = median over the repeats of (store events/s / raw events/s), each repeat "
    "measuring both sides back to back",
    "the store side runs with the collector thresholds a runtime sets (RuntimeConfig.gc_threshold)",
    "ms/group commit = store wall time / group commits (with one writer: the latency of one "
    "commit through the store)",
]
SQLITE_NOTES = [
    "store: a writer thread with its own sqlite3 connection runs each whole group commit "
    "(BEGIN IMMEDIATE, executemany, COMMIT) as one call, one hand-off back per batch",
    "raw: one sqlite3 connection, WAL, synchronous=NORMAL, one executemany + COMMIT per "
    "round of all writers (the best a group commit could batch); rows prebuilt",
]


def _pg_notes(server: PgServer) -> list[str]:
    return [
        f"PostgreSQL {server.version} at {server.where()}; each repeat of each size "
        "creates a fresh database (netra_bench_<random>) and drops it afterwards; raw "
        "rows go to netra_raw.netra_events, LIKE public.netra_events INCLUDING ALL",
        "store: one asyncpg connection on the asyncio host, one statement (lease check, "
        "rows over unnest arrays, hints) per group commit; raw: asyncpg copy_records_to_table + COMMIT per round of all writers "
        "(the best a group commit could batch); rows prebuilt",
    ]
