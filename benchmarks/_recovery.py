"""``recovery``: issue 18's goals for runs that outlive their server, measured.

1. **lone server**: ``netra-actors serve`` on a SQLite file with N live ``durable_steps`` runs
   (100 and 1,000; ``--quick``: 100) is killed (``kill -9``) and started again; the seconds from
   the new process's first healthy ``/healthz`` until the last run's ``run_state`` ``recovered``
   was committed (negative: before it listened; see :mod:`.harness.recovery_servers`). Goals: <= 2 s (100 runs),
   <= lease TTL + 5 s (1,000 runs).
2. **cluster takeover**: two servers on one SQLite file (lease TTL 3 s); the owner of a user with
   a live run is killed while a socket on the other server follows the user; the seconds from the
   kill to that socket's ``recovered``. Goal: <= TTL + 1 s.
3. **timers**: 10,000 runs (``--quick``: 1,000) of an in-process runtime each ``ctx.sleep`` until
   the same second; the wake error of each (when the code after its sleep ran, minus the
   ``until`` its ``sleeping`` event committed) and the last wake after the last due time. Goals:
   all within 2 s; any single wake-up within ± 1 s.
4. **waiting runs**: 100,000 runs (``--quick``: 1,000) of an in-process runtime, 10 per user, each
   waiting for an answer (``ctx.ask``, ``input_requested`` committed): the process's RSS beyond
   the idle runtime's, per run (it includes the users' activations and the SQLite page cache of
   the process), and its CPU seconds per second while they wait. Goals: <= 2 KiB, ~0.

One measurement per case (``--repeat`` does not apply: process kills are costly and the in-process
cases are large).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import trio

import netra_actors as na

from .harness.durable_cluster import StoreReader, database
from .harness.inprocess import run_trio, scratch_dir, sqlite_counts
from .harness.machine import cpu_seconds, rss_kib
from .harness.progress import Progress
from .harness.recovery_servers import cluster_takeover, lone_restart
from .harness.report import BenchError, Column, Goal, Options, Report, Row
from .harness.stats import percentile

TITLE = "runs that outlive their server: recovery after kill -9, durable timers, waiting runs"
LONE_TTL = 10.0
CLUSTER_TTL = 3.0
PASSIVATED = "waiting runs, idle_timeout 2 s"

_WOKE: dict[str, float] = {}
"""When the code after each ``durable_sleep_until`` run's sleep ran, by run id."""


class SleepOnce(na.Agent):
    """One durable sleep of ``input["seconds"]``; records when it woke."""

    name = "bench_sleep"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        assert isinstance(input, dict)
        await ctx.sleep(float(input["seconds"]))
        _WOKE[ctx.run_id] = time.time()
        return None


class AskOnce(na.Agent):
    """Waits for one answer."""

    name = "bench_ask"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        return await ctx.ask("?")


async def _start_all(rt: Any, agent: str, inputs: list[tuple[str, Any]]) -> list[str]:
    limiter = trio.CapacityLimiter(200)
    ids: list[str] = [""] * len(inputs)

    async def one(i: int) -> None:
        async with limiter:
            user, input = inputs[i]
            ids[i] = await rt.start_run(user, agent, input() if callable(input) else input)

    async with trio.open_nursery() as nursery:
        for i in range(len(inputs)):
            nursery.start_soon(one, i)
    return ids


async def _timers(runs: int, db: str) -> Row:
    config = na.RuntimeConfig(database_url=na.sqlite_url(db))
    lead = 5.0 + runs / 500  # time enough to start every run before the due second
    async with na.open_runtime(config, agents=[SleepOnce]) as rt:
        due = time.time() + lead
        users = max(1, runs // 10)
        left = lambda: {"seconds": due - time.time()}  # noqa: E731
        ids = await _start_all(rt, "bench_sleep", [(f"s{i % users}", left) for i in range(runs)])
        await _until(lambda: len(_WOKE) >= runs, due + 60 - time.time())
        woke = {r: _WOKE.pop(r) for r in ids if r in _WOKE}
    conn_rows = _sleeping_untils(db)
    if len(woke) < runs:
        raise BenchError(f"{runs - len(woke)} of {runs} sleeps did not wake within 60 s")
    errors = [woke[r] - conn_rows[r] for r in ids]
    untils = list(conn_rows.values())
    return {
        "case": "timers",
        "runs": runs,
        "seconds": max(woke.values()) - max(untils),
        "due_spread_s": max(untils) - min(untils),
        "p50_ms": percentile(errors, 50) * 1000,
        "p99_ms": percentile(errors, 99) * 1000,
        "max_ms": max(errors, key=abs) * 1000,
    }


def _sleeping_untils(db: str) -> dict[str, float]:
    import sqlite3

    conn = sqlite3.connect(db, timeout=30)
    try:
        rows = conn.execute("SELECT run_id, data FROM netra_events WHERE event = 'sleeping'")
        return {r: float(json.loads(d)["until"]) for r, d in rows}
    finally:
        conn.close()


async def _waiting(runs: int, db: str, watch: float, idle: float | None) -> Row:
    """``runs`` runs waiting for an answer; ``idle``: the users' ``idle_timeout``, and the
    measurement waits that long (+ 2 s) first (None: the default 60 s, measured at once)."""
    config = na.RuntimeConfig(database_url=na.sqlite_url(db))
    if idle is not None:
        config = attrs.evolve(config, idle_timeout=idle)
    users = max(1, runs // 10)
    count = "SELECT count(*) FROM netra_events WHERE event = 'input_requested'"
    async with na.open_runtime(config, agents=[AskOnce]) as rt:
        await _start_all(rt, "bench_ask", [("warm", None)] * 10)  # imports, caches, one user
        await _until(lambda: sqlite_counts(db, count)[0] >= 10, 60)
        await trio.sleep(1.0)
        gc.collect()
        baseline = rss_kib()
        idle_cpu = await _cpu_per_s(watch)
        await _start_all(rt, "bench_ask", [(f"w{i % users}", None) for i in range(runs)])
        if not await _until(lambda: sqlite_counts(db, count)[0] >= runs + 10, 600):
            raise BenchError("the waiting runs did not all ask within 600 s")
        await trio.sleep(1.0 if idle is None else idle + 2.0)
        gc.collect()
        loaded = rss_kib()
        active = sum(rt.is_active(f"w{u}") for u in range(users))
        cpu = await _cpu_per_s(watch)
    return {
        "case": "waiting runs" if idle is None else PASSIVATED,
        "runs": runs,
        "active_users": active,
        "kib_per_run": (loaded - baseline) / runs,
        "rss_mib": loaded / 1024,
        "cpu_per_s": cpu,
        "idle_cpu_per_s": idle_cpu,
        "extra_cpu_per_s": cpu - idle_cpu,
    }


async def _until(done: Callable[[], bool], within: float) -> bool:
    """Poll ``done`` every 50 ms for up to ``within`` seconds; whether it became true."""
    deadline = time.monotonic() + within
    while True:
        if done():
            return True
        if time.monotonic() > deadline:
            return False
        await trio.sleep(0.05)


async def _cpu_per_s(seconds: float) -> float:
    """This process's CPU seconds per second over the next ``seconds``."""
    cpu0, t0 = cpu_seconds(os.getpid()), time.monotonic()
    await trio.sleep(seconds)
    return (cpu_seconds(os.getpid()) - cpu0) / (time.monotonic() - t0)


@contextlib.contextmanager
def _sqlite_store(options: Options) -> Iterator[tuple[Path, StoreReader]]:
    """A scratch directory holding a fresh SQLite store."""
    with scratch_dir(options.directory) as tmp, database("sqlite", Path(tmp)) as store:
        yield Path(tmp), store


def _servers(options: Options, progress: Progress, sizes: list[int]) -> list[Row]:
    rows: list[Row] = []
    for runs in sizes:
        progress.step(f"lone server: kill -9 with {runs} live runs, restart")
        with _sqlite_store(options) as (tmp, store):
            got = asyncio.run(lone_restart(tmp, store, runs, LONE_TTL))
        case = f"lone server, {runs} runs"
        rows.append({"case": case, "runs": runs, "ttl_s": LONE_TTL, **got})
    progress.step("two servers: kill -9 the owner of a live run, the other takes it over")
    with _sqlite_store(options) as (tmp, store):
        got = asyncio.run(cluster_takeover(tmp, store, CLUSTER_TTL))
    rows.append({"case": "cluster takeover", "runs": 1, "ttl_s": CLUSTER_TTL, **got})
    return rows


COLUMNS = [
    Column(key="case", title="case"),
    Column(key="runs", title="runs"),
    Column(key="ttl_s", title="lease TTL s", fmt="{:g}"),
    Column(key="startup_s", title="start-up s", fmt="{:.2f}"),
    Column(key="seconds", title="all recovered / woken s", fmt="{:.2f}"),
    Column(key="due_spread_s", title="dues spread s", fmt="{:.2f}"),
    Column(key="p50_ms", title="wake err p50 ms", fmt="{:,.0f}"),
    Column(key="p99_ms", title="p99 ms", fmt="{:,.0f}"),
    Column(key="max_ms", title="max ms", fmt="{:,.0f}"),
    Column(key="active_users", title="users active"),
    Column(key="kib_per_run", title="KiB/run", fmt="{:.2f}"),
    Column(key="rss_mib", title="RSS MiB", fmt="{:,.0f}"),
    Column(key="idle_cpu_per_s", title="idle CPU s/s", fmt="{:.3f}"),
    Column(key="cpu_per_s", title="waiting CPU s/s", fmt="{:.3f}"),
]


def _find(rows: list[Row], case: str, key: str) -> float | None:
    for row in rows:
        if row["case"] == case:
            value: float = row[key]
            return value
    return None


def run(options: Options, progress: Progress) -> Report:
    """The scenario."""
    sizes = [100] if options.quick else [100, 1000]
    sleeps = 1000 if options.quick else 10_000
    waiting = 1000 if options.quick else 100_000
    rows = _servers(options, progress, sizes)
    with scratch_dir(options.directory) as tmp:
        progress.step(f"timers: {sleeps} ctx.sleep due in the same second")
        rows.append(run_trio(_timers, sleeps, os.path.join(tmp, "timers.db")))
    with scratch_dir(options.directory) as tmp:
        progress.step(f"waiting: {waiting} runs waiting for an answer")
        watch = 2.0 if options.quick else 10.0
        rows.append(run_trio(_waiting, waiting, os.path.join(tmp, "waiting.db"), watch, None))
    with scratch_dir(options.directory) as tmp:
        progress.step(f"waiting: {waiting} runs waiting for an answer, users idle 2 s")
        rows.append(run_trio(_waiting, waiting, os.path.join(tmp, "waiting.db"), watch, 2.0))
    rows = [{c.key: None for c in COLUMNS} | row for row in rows]  # every column in every row
    options = attrs.evolve(options, repeat=1)  # one measurement per case
    report = Report.of(TITLE, options, COLUMNS, [rows], key="case")
    timers = _find(rows, "timers", "max_ms")
    report.goals = [
        Goal.at_most(
            "a lone server restarted after kill -9: 100 live runs running again <= 2 s after "
            "start-up",
            _find(rows, "lone server, 100 runs", "seconds"),
            2.0,
            "s",
        ),
        Goal.at_most(
            f"1,000 live runs all running again <= lease TTL + 5 s (TTL {LONE_TTL:g} s)",
            _find(rows, "lone server, 1000 runs", "seconds"),
            LONE_TTL + 5,
            "s",
        ),
        Goal.at_most(
            f"cluster: kill -9 of a live run's owner to recovered <= TTL + 1 s (TTL "
            f"{CLUSTER_TTL:g} s)",
            _find(rows, "cluster takeover", "seconds"),
            CLUSTER_TTL + 1,
            "s",
        ),
        Goal.at_most(
            f"{sleeps:,} sleeps due in the same second all wake within 2 s",
            _find(rows, "timers", "seconds"),
            2.0,
            "s",
        ),
        Goal.at_most(
            "any single wake-up within ± 1 s",
            None if timers is None else abs(timers) / 1000,
            1.0,
            "s",
        ),
        *(
            goal
            for case, users in ((PASSIVATED, "users passivated"), ("waiting runs", "users active"))
            for goal in (
                Goal.at_most(
                    f"{waiting:,} runs waiting for an answer: <= 2 KiB of memory each ({users})",
                    _find(rows, case, "kib_per_run"),
                    2.0,
                    "KiB",
                ),
                Goal.at_most(
                    f"~0 CPU while they wait ({users}; CPU s/s beyond the idle runtime's, 0.01 "
                    "taken as ~0)",
                    _find(rows, case, "extra_cpu_per_s"),
                    0.01,
                ),
            )
        ),
    ]
    report.notes = [
        "lone server and cluster: `netra-actors serve` processes on one SQLite file, runs started "
        "by `say` over WebSockets, recovery read from the database (lone) or the following "
        "socket (cluster); the lone server's TTL is 10 s so that a recovery that waits for the "
        "lease to expire shows",
        "timers and waiting runs: one in-process runtime on a SQLite file; the waiting runs' "
        "memory includes their users' activations (10 runs per user) while they are active; "
        "with idle_timeout 2 s the users passivate (their runs wait as rows) and the figures are "
        "taken 4 s after the last run asked",
        "one measurement per case (--repeat does not apply)",
    ]
    return report
