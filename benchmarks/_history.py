"""``history``: reading conversations out of a big store (issue 19's goals).

A fresh store (a SQLite file, or with ``--db postgresql+asyncpg://…`` a fresh PostgreSQL database
created and dropped around the run) is loaded with ``--events`` events (default 1,000,000;
``--quick``: 20,000) of chat turns as the runtime commits them
(:mod:`benchmarks.harness.conversations`: one real turn captured from a runtime, replayed through
the store's group commit in units of 50 turns). 1,000 users (``--quick``: 20): the measured user,
``heavy``, holds a tenth of the events in 1,000 threads (``--quick``: 50) — every other turn in
the thread ``long``, the rest in blocks over 999 short threads; every other user has the rest,
each over 10 threads. Before measuring, one more ``say`` goes through the runtime on the loaded
data (its seq must follow the loaded head).

Then each read of ``heavy`` is timed one at a time on an otherwise idle runtime, in three layers,
to show where the time goes:

* ``api``: the Runtime API (``runtime.history(...)`` / ``runtime.threads(...)``): argument checks,
  then the store;
* ``store``: the store call alone (``runtime.store.history(...)``): the hand-off to the reader
  (a thread on SQLite, a connection on the asyncio host on PostgreSQL), the SQL, the page's values;
* ``sql``: the same SQL statements alone on a connection of their own (``sqlite3`` / ``asyncpg``),
  rows fetched, after the runtime closed.

Goals: a ``history`` page of 100 events p50 <= 5 ms; ``threads`` for a user with 1,000 threads
<= 10 ms (one ``threads`` command: the first page, default limit 50).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

import netra_actors as na
from netra_actors._store._history import dollar, history_query, qmark, threads_query
from netra_actors._store._rows import LIVE_STATE_VALUES

from .harness.conversations import (
    ChatBenchAgent,
    Turn,
    UserPlan,
    capture_turn,
    interleaved,
    load,
    spread,
)
from .harness.inprocess import run_trio, scratch_dir
from .harness.postgres import PgServer, PgUnavailable, scratch_database
from .harness.progress import Progress, measure_repeats
from .harness.report import BenchError, Column, Goal, Options, Report, Row
from .harness.stats import percentile

TITLE = "history and threads pages of one user in a store of 1,000,000 events"
HEAVY = "heavy"
LONG = "long"
PAGE = 100
GOAL_HISTORY_MS = 5.0
GOAL_THREADS_MS = 10.0
LAYERS = ("api", "store", "sql")


@attrs.frozen
class Layout:
    """How many events, users and threads the store is loaded with."""

    events: int
    users: int
    heavy_threads: int
    other_threads: int = 10

    def plans(self, turn: Turn) -> list[UserPlan]:
        turns = self.events // len(turn)
        heavy = max(turns // 10, 2 * self.heavy_threads)
        plans = [UserPlan(HEAVY, interleaved(heavy, self.heavy_threads, LONG))]
        others = self.users - 1
        for u in range(others):
            mine = (turns - heavy) * (u + 1) // others - (turns - heavy) * u // others
            plans.append(UserPlan(f"user{u:04d}", spread(mine, self.other_threads)))
        return plans


@attrs.frozen
class Case:
    """One read of ``heavy``: ``history`` (kwargs) or ``threads`` (kwargs); ``walk``: every page
    of ``threads`` in turn, following the cursor."""

    name: str
    kind: str
    kwargs: dict[str, Any]
    expect: int
    """How many events (history) or threads (threads, walk) the read must return."""
    walk: bool = False


def cases(head: int, short: tuple[str, int], threads: int) -> list[Case]:
    """The reads of ``heavy`` whose last seq is ``head``; ``short``: a short thread and how many
    events it has."""
    middle = head // 2
    return [
        Case("history: last page", "history", {"limit": PAGE}, PAGE),
        Case("history: a page in the middle", "history", {"before_seq": middle}, PAGE),
        Case("history: last page of a thread", "history", {"thread": LONG}, PAGE),
        Case(
            "history: a page in the middle of a thread",
            "history",
            {"thread": LONG, "before_seq": middle},
            PAGE,
        ),
        Case("history: a short thread", "history", {"thread": short[0]}, short[1]),
        Case("threads: first page (50)", "threads", {}, min(50, threads)),
        Case("threads: first page (100)", "threads", {"limit": 100}, min(100, threads)),
        Case(f"threads: all {threads:,}, pages of 100", "threads", {"limit": 100}, threads, True),
    ]


# -- the runtime and store layers (in the runtime's trio) --------------------------------------


Reader = Callable[..., Awaitable[Any]]


async def _timed(case: Case, read_history: Reader, read_threads: Reader) -> tuple[float, int]:
    """One read: (seconds, how many events or threads it returned)."""
    started = time.perf_counter()
    if case.kind == "history":
        page = await read_history(HEAVY, **case.kwargs)
        count = len(page.events)
    elif not case.walk:
        page = await read_threads(HEAVY, **case.kwargs)
        count = len(page.threads)
    else:
        count, before = 0, None
        while True:
            page = await read_threads(HEAVY, before=before, **case.kwargs)
            count += len(page.threads)
            if page.next is None:
                break
            before = page.next
    return time.perf_counter() - started, count


async def _load_and_read(
    url: str, layout: Layout, samples: int, progress: Progress
) -> tuple[dict[str, Any], list[Row]]:
    turn = await capture_turn()
    plans = layout.plans(turn)
    total = sum(len(p.threads) for p in plans) * len(turn)
    config = na.RuntimeConfig(database_url=url)
    async with na.open_runtime(config, agents=[ChatBenchAgent]) as rt:
        loaded = await load(
            rt.store, turn, plans, tick=lambda done: progress.bar("loading", done, total)
        )
        progress.done()
        head = loaded.heads[HEAVY]
        run_id = await rt.say(HEAVY, "one more, through the runtime", thread=LONG)
        await rt.wait_run(HEAVY, run_id)
        last = (await rt.history(HEAVY, limit=1)).events[-1].seq
        if last != head + len(turn):
            raise BenchError(f"a turn after the load ended at seq {last}, not {head + len(turn)}")
        long_events = (sum(t == LONG for t in plans[0].threads) + 1) * len(turn)
        name = plans[0].threads[1]
        short = (name, sum(t == name for t in plans[0].threads) * len(turn))
        todo = cases(last, short, layout.heavy_threads)
        rows: list[Row] = []
        for n, case in enumerate(todo):
            progress.bar("reading", n, len(todo))
            for layer, h, t in (
                ("api", rt.history, rt.threads),
                ("store", rt.store.history, rt.store.threads),
            ):
                times, count = [], -1
                for _ in range(samples + 3):  # the first three warm up
                    seconds, count = await _timed(case, h, t)
                    times.append(seconds)
                rows.append(_row(case, layer, times[3:], count))
        progress.done()
    info = {
        "events": loaded.events + len(turn),
        "turns": loaded.turns + 1,
        "load_s": loaded.seconds,
        "load_events_per_s": loaded.events / loaded.seconds if loaded.seconds else 0.0,
        "turn_events": len(turn),
        "head": last,
        "long_events": long_events,
        "short": short,
    }
    return info, rows


def _row(case: Case, layer: str, times: list[float], count: int) -> Row:
    return {
        "case": f"{case.name} | {layer}",
        "read": case.name,
        "layer": layer,
        "returned": count,
        "p50_ms": percentile(times, 50) * 1000,
        "p99_ms": percentile(times, 99) * 1000,
        "mean_ms": sum(times) / len(times) * 1000,
        "samples": len(times),
        "verified": count == case.expect,
    }


# -- the SQL alone (after the runtime closed, in plain asyncio) ---------------------------------


@attrs.frozen
class RawSql:
    """A connection of its own: ``fetch(sql, params)``, and the dialect's SQL details."""

    fetch: Callable[[str, list[Any]], Awaitable[list[Any]]]
    pg: bool
    begin: str

    def marks(self, i: int) -> str:
        return dollar(i) if self.pg else qmark(i)

    def live(self) -> tuple[str, list[Any]]:
        """The store's count of live runs per thread (a ``threads`` page reads it too)."""
        if self.pg:
            states, params = "= ANY($2::text[])", [HEAVY, list(LIVE_STATE_VALUES)]
        else:
            states = f"IN ({', '.join('?' * len(LIVE_STATE_VALUES))})"
            params = [HEAVY, *LIVE_STATE_VALUES]
        mark = self.marks(1)
        sql = f"SELECT thread, count(*) FROM netra_runs WHERE user_id = {mark} AND state {states}"
        return sql + " GROUP BY thread", params


async def _raw_read(raw: RawSql, case: Case) -> int:
    """The statements of one read, as the store runs them; how many events or threads."""
    kw = case.kwargs
    limit: int
    if case.kind == "history":
        limit = kw.get("limit", PAGE)
        sql, params = history_query(
            raw.marks, HEAVY, kw.get("thread"), kw.get("before_seq"), limit, None, any_array=raw.pg
        )
        return min(len(await raw.fetch(sql, params)), limit)
    limit = kw.get("limit", 50)
    count, before = 0, None
    live, live_params = raw.live()
    while True:
        sql, params = threads_query(raw.marks, HEAVY, before, limit)
        await raw.fetch(raw.begin, [])
        got = await raw.fetch(sql, params)
        await raw.fetch(live, live_params)
        await raw.fetch("COMMIT", [])
        count += min(len(got), limit)
        if not (case.walk and len(got) > limit):
            return count
        before = got[limit - 1][3]


async def _raw_rows(raw: RawSql, todo: list[Case], samples: int) -> list[Row]:
    rows: list[Row] = []
    for case in todo:
        times, count = [], -1
        for _ in range(samples + 3):  # the first three warm up
            started = time.perf_counter()
            count = await _raw_read(raw, case)
            times.append(time.perf_counter() - started)
        rows.append(_row(case, "sql", times[3:], count))
    return rows


def sqlite_sql_rows(db: str, todo: list[Case], samples: int) -> list[Row]:
    conn = sqlite3.connect(db, isolation_level=None)

    async def fetch(sql: str, params: list[Any]) -> list[Any]:
        return conn.execute(sql, params).fetchall()

    try:
        return asyncio.run(_raw_rows(RawSql(fetch=fetch, pg=False, begin="BEGIN"), todo, samples))
    finally:
        conn.close()


def pg_sql_rows(dsn: str, todo: list[Case], samples: int) -> list[Row]:
    async def main() -> list[Row]:
        import asyncpg

        conn = await asyncpg.connect(dsn)

        async def fetch(sql: str, params: list[Any]) -> list[Any]:
            return list(await conn.fetch(sql, *params))

        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        try:
            return await _raw_rows(RawSql(fetch=fetch, pg=True, begin=begin), todo, samples)
        finally:
            await conn.close()

    return asyncio.run(main())


# -- the scenario ------------------------------------------------------------------------------


def measure_once(
    layout: Layout, samples: int, options: Options, progress: Progress, server: PgServer | None
) -> tuple[dict[str, Any], list[Row]]:
    """One repeat: a fresh store, loaded, read in the three layers."""
    if server is None:
        with scratch_dir(options.directory) as tmp:
            db = os.path.join(tmp, "history.db")
            info, rows = run_trio(_load_and_read, na.sqlite_url(db), layout, samples, progress)
            todo = cases(info["head"], info["short"], layout.heavy_threads)
            rows += sqlite_sql_rows(db, todo, samples)
            info["db_mib"] = _sqlite_mib(db)
    else:
        with scratch_database(server, "netra_bench_history_") as name:
            url = server.sa_url(name)
            info, rows = run_trio(_load_and_read, url, layout, samples, progress)
            todo = cases(info["head"], info["short"], layout.heavy_threads)
            rows += pg_sql_rows(server.dsn(name), todo, samples)
    order = {c.name: n for n, c in enumerate(todo)}
    rows.sort(key=lambda r: (order[r["read"]], LAYERS.index(r["layer"])))
    return info, rows


def _sqlite_mib(db: str) -> float:
    size = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
    return size / 2**20


COLUMNS = [
    Column(key="read", title="read of the user 'heavy'"),
    Column(key="layer", title="layer"),
    Column(key="returned", title="returned"),
    Column(key="p50_ms", title="p50 ms", fmt="{:,.3f}"),
    Column(key="p99_ms", title="p99 ms", fmt="{:,.3f}"),
    Column(key="mean_ms", title="mean ms", fmt="{:,.3f}"),
    Column(key="samples", title="samples"),
    Column(key="verified", title="ok"),
]


def _goals(rows: list[Row], threads: int) -> list[Goal]:
    def p50(read: str) -> float | None:
        found = [r["p50_ms"] for r in rows if r["read"] == read and r["layer"] == "api"]
        return found[0] if found else None

    history = [p50(r) for r in ("history: last page", "history: last page of a thread")]
    known = [h for h in history if h is not None]
    return [
        Goal.at_most(
            f"a history page of {PAGE} events p50 <= {GOAL_HISTORY_MS:g} ms (Runtime API; "
            "the worse of the last page and the last page of a thread)",
            max(known) if known else None,
            GOAL_HISTORY_MS,
            " ms",
        ),
        Goal.at_most(
            f"threads for a user with {threads:,} threads <= {GOAL_THREADS_MS:g} ms (Runtime API, "
            "p50 of the first page, default limit 50)",
            p50("threads: first page (50)"),
            GOAL_THREADS_MS,
            " ms",
        ),
    ]


def run(options: Options, progress: Progress) -> Report:
    """The scenario."""
    quick = options.quick
    layout = Layout(
        events=options.events or (20_000 if quick else 1_000_000),
        users=(options.users([1000], [20]))[0],
        heavy_threads=50 if quick else 1000,
    )
    samples = 20 if quick else 200
    db_url = options.extra.get("db")
    server: PgServer | None = None
    title = TITLE
    if db_url:
        title += " (PostgreSQL)"
        try:
            server = PgServer.connect(db_url)
        except PgUnavailable as exc:
            return Report.skip(title, options, COLUMNS, _goals([], layout.heavy_threads), str(exc))
    infos: list[dict[str, Any]] = []

    def one(_config: str) -> list[Row]:
        info, rows = measure_once(layout, samples, options, progress, server)
        infos.append(info)
        return rows

    backend = "postgresql" if server else "sqlite"
    runs = measure_repeats(options, progress, [backend], one)
    report = Report.of(title, options, COLUMNS, [r[0] for r in runs], "case")
    report.goals = _goals(report.rows, layout.heavy_threads)
    info = infos[0]
    where = f"PostgreSQL {server.version} at {server.where()}" if server else "a SQLite file"
    report.notes = [
        f"{info['events']:,} events ({info['turns']:,} chat turns of {info['turn_events']} "
        f"events) of {layout.users:,} users in {where}; 'heavy' has {info['head']:,} events "
        f"in {layout.heavy_threads:,} threads, {info['long_events']:,} of them in the thread "
        f"'{LONG}' (every other turn)",
        "loaded through the store's own group commit (SqlStore.commit, 50 turns per unit, 64 "
        "users at a time): a turn captured from a real runtime replayed with fresh run and "
        "message ids; the runtime's schema, indexes, run rows and netra_threads summary rows "
        f"({info['load_events_per_s']:,.0f} events/s, {info['load_s']:.1f} s"
        + (f", {info['db_mib']:,.0f} MiB" if "db_mib" in info else "")
        + "); one more turn then went through say() and continued the user's seqs",
        f"each read timed {samples} times one after the other on an idle runtime (after 3 "
        "warm-ups); layers: api = runtime.history/threads, store = runtime.store.history/"
        "threads, sql = the same statements on a connection of their own",
    ]
    return report
