"""``retention``: live chat while retention erases a million old events (issue 19's goal).

A SQLite file is loaded once with ``--events`` events (default 1,000,000; ``--quick``: 10,000)
of old chat turns of ``--users`` users (default 1,000; ``--quick``: 20), 10 threads each, as the
runtime commits them (:mod:`benchmarks.harness.conversations`); then every timestamp in it
(events, runs, thread summaries) is moved 30 days back. Each phase runs on a copy of that file:

* ``without retention``: the same users chat live, in a thread ``live`` of their own: each says
  one message every ``PACE`` seconds (random start offsets, a ``bench_chat`` run answers it);
* ``with retention``: the same load on a runtime with ``RuntimeConfig.retention_days = 7`` (its
  default ``retention_batch`` and ``retention_pause``): its background sweep erases the old
  threads while the users chat;
* ``with retention, no pause``: the same with ``retention_pause = 0``, the worst case for live
  traffic (retention as fast as it goes).

Measured per phase: the latency of every ``say`` (it returns once the user's message and the
run's start are committed: a live commit, as a client sees it), the durations of the store's
group commits, and afterwards the events erased. Phases alternate in order between repeats.

Goal: live commit p99 with retention <= 2x without it (both retention phases are held to it). Retention is configured through
``RuntimeConfig.retention_days``; a runtime without that field cannot erase, and the phase with
retention are then reported as not measured (with the reason).
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import time
from typing import Any

import attrs
import trio

import netra_actors as na

from .harness.conversations import ChatBenchAgent, UserPlan, capture_turn, load, spread
from .harness.inprocess import run_trio, scratch_dir
from .harness.progress import Progress, alternate
from .harness.report import BenchError, Column, Goal, Options, Report, Row
from .harness.stats import percentile

TITLE = "live chat commits while retention erases 1,000,000 old events"
AGE_DAYS = 30
RETENTION_DAYS = 7
PACE = 5.0
"""Seconds between two messages of one live user (``--quick``: :data:`QUICK_PACE`)."""
QUICK_PACE = 0.5
GOAL_RATIO = 2.0
WITHOUT = "without retention"
WITH = "with retention"
EAGER = "with retention, no pause"
PHASES: dict[str, dict[str, Any]] = {
    WITHOUT: {},
    WITH: {"retention_days": RETENTION_DAYS},
    EAGER: {"retention_days": RETENTION_DAYS, "retention_pause": 0.0},
}
"""The runtime's retention settings of each phase (the others: RuntimeConfig's defaults)."""
AGED = {
    "netra_events": ("ts",),
    "netra_runs": ("created_at", "updated_at"),
    "netra_threads": ("created_ts", "last_ts"),
}


def retention_missing() -> str | None:
    """Why this runtime cannot run retention (None: it can)."""
    if "retention_days" not in attrs.fields_dict(na.RuntimeConfig):
        return "this revision's RuntimeConfig has no retention_days (retention not built yet)"
    return None


async def _load(url: str, events: int, users: int, progress: Progress) -> tuple[int, int]:
    """Load the old turns; how many events and threads."""
    turn = await capture_turn()
    turns = events // len(turn)
    plans = [
        UserPlan(f"user{u:04d}", spread(turns * (u + 1) // users - turns * u // users, 10))
        for u in range(users)
    ]
    async with na.open_runtime(na.RuntimeConfig(database_url=url)) as rt:
        total = turns * len(turn)
        loaded = await load(rt.store, turn, plans, tick=lambda n: progress.bar("loading", n, total))
    progress.done()
    return loaded.events, len({(p.user_id, t) for p in plans for t in p.threads})


def age(db: str, days: float) -> None:
    """Move every timestamp of the file ``days`` back, and checkpoint it into one file."""
    shift = days * 86400
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for table, columns in AGED.items():
            sets = ", ".join(f"{c} = {c} - ?" for c in columns)
            conn.execute(f"UPDATE {table} SET {sets}", [shift] * len(columns))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def _chat(
    url: str, users: int, seconds: float, pace: float, phase: str, old_threads: int
) -> Row:
    """The live load for ``seconds``: every user says one message every ``pace`` seconds; and
    when retention (if on) had erased all ``old_threads``."""
    config = na.RuntimeConfig(database_url=url, **PHASES[phase])
    latencies: list[tuple[float, float]] = []
    """(when the say started, in trio time; how long it took) of every say()."""
    failures: list[str] = []
    async with na.open_runtime(config, agents=[ChatBenchAgent]) as rt:

        async def user(u: int) -> None:
            user_id = f"user{u:04d}"
            next_at = trio.current_time() + random.uniform(0, pace)
            n = 0
            while True:
                await trio.sleep_until(next_at)
                started, at = time.perf_counter(), trio.current_time()
                try:
                    await rt.say(user_id, f"live message {n}", thread="live", if_busy="enqueue")
                except na.NetraError as exc:
                    failures.append(f"{user_id}: {exc}")
                    return
                latencies.append((at, time.perf_counter() - started))
                n += 1
                next_at += pace

        swept: list[float] = []

        async def watch(started: float) -> None:
            retention = rt.retention
            while True:  # polled: the sweep has no event to wait on, only its counter
                if retention is None or retention.threads_erased >= old_threads:
                    break
                await trio.sleep(0.1)
            swept.append(trio.current_time() - started)

        begun = trio.current_time()
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, begun)
                for u in range(users):
                    nursery.start_soon(user, u)
        stats = rt.store.statistics()
        sweep_s = swept[0] if swept and rt.retention is not None else None
    if failures:
        raise BenchError(f"{len(failures)} say() failed, e.g. {failures[0]}")
    commit = stats.commit_seconds
    # With retention: the says that started while it was still erasing.
    during = [d for at, d in latencies if sweep_s is None or at - begun < sweep_s]
    return {
        "says": len(during),
        "say_p50_ms": percentile(during, 50) * 1000,
        "say_p99_ms": percentile(during, 99) * 1000,
        "commit_p99_ms": (commit.quantile(0.99) or 0.0) * 1000,
        "group_commits": stats.batches,
        "sweep_s": sweep_s,
    }


def _erased(db: str) -> int:
    conn = sqlite3.connect(db)
    try:
        (n,) = conn.execute("SELECT count(*) FROM netra_events WHERE event = 'erased'").fetchone()
    finally:
        conn.close()
    return int(n)


def _phase(
    template: str, tmp: str, users: int, seconds: float, pace: float, phase: str, threads: int
) -> Row:
    db = os.path.join(tmp, "phase.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    shutil.copyfile(template, db)
    row = run_trio(_chat, na.sqlite_url(db), users, seconds, pace, phase, threads)
    return {
        "case": phase,
        "phase": phase,
        "users": users,
        "seconds": seconds,
        **row,
        "erased": _erased(db),
    }


COLUMNS = [
    Column(key="phase", title="phase"),
    Column(key="users", title="live users"),
    Column(key="says", title="say() calls timed"),
    Column(key="say_p50_ms", title="say p50 ms", fmt="{:,.2f}"),
    Column(key="say_p99_ms", title="say p99 ms", fmt="{:,.2f}"),
    Column(key="commit_p99_ms", title="group commit p99 ms", fmt="{:,.2f}"),
    Column(key="group_commits", title="group commits"),
    Column(key="p99_vs_without", title="p99 x without", fmt="{:.2f}"),
    Column(key="erased", title="events erased"),
    Column(key="erased_share", title="share erased", fmt="{:.0%}"),
    Column(key="sweep_s", title="all erased after s", fmt="{:,.1f}"),
    Column(key="erased_per_s", title="erased/s"),
]


def run(options: Options, progress: Progress) -> Report:
    """The scenario."""
    quick = options.quick
    events = options.events or (10_000 if quick else 1_000_000)
    users = options.users([1000], [20])[0]
    seconds = 1.5 if quick else 60.0
    pace = QUICK_PACE if quick else PACE
    missing = retention_missing()
    phases = [WITHOUT] if missing else list(PHASES)
    runs: list[list[Row]] = []
    with scratch_dir(options.directory) as tmp:
        template = os.path.join(tmp, "old.db")
        progress.step(f"retention: loading {events:,} old events of {users:,} users")
        loaded, threads = run_trio(_load, na.sqlite_url(template), events, users, progress)
        age(template, AGE_DAYS)
        for i in range(options.repeat):
            rows = []
            for phase in alternate(phases, i):
                progress.step(f"retention {phase}: run {i + 1}/{options.repeat}")
                rows.append(_phase(template, tmp, users, seconds, pace, phase, threads))
            runs.append(sorted(rows, key=lambda r: phases.index(r["phase"])))
    report = Report.of(TITLE, options, COLUMNS, runs, "case")
    by = {r["phase"]: r for r in report.rows}
    base = by[WITHOUT]["say_p99_ms"]
    for row in report.rows:
        row["p99_vs_without"] = row["say_p99_ms"] / base if base else None
        row["erased_per_s"] = row["erased"] / (row["sweep_s"] or row["seconds"])
        row["erased_share"] = row["erased"] / loaded
    report.goals = [
        Goal.at_most(
            f"live commit (say) p99 {phase} erasing old events <= {GOAL_RATIO:g}x the same "
            "load without it",
            by[phase]["p99_vs_without"] if phase in by else None,
            GOAL_RATIO,
            "x",
        )
        for phase in (WITH, EAGER)
    ]
    report.notes = [
        f"{loaded:,} events loaded through the store's group commit (a real turn replayed), "
        f"in {threads:,} threads, then aged {AGE_DAYS} days; retention_days={RETENTION_DAYS} "
        "makes all of them old",
        "with retention, only the say() calls that started before the sweep had erased every "
        "old thread are timed (all of them if it had not finished); "
        "erased/s: the events erased over the time the sweep took to erase every old thread "
        "(its threads_erased counter), or over the phase if it had not finished ('-')",
        f"{WITH!r}: RuntimeConfig(retention_days={RETENTION_DAYS}) with its default batch and "
        f"pause; {EAGER!r}: retention_pause=0 (retention as fast as it goes: the worst case "
        "for live traffic)",
        f"each phase: {users:,} users each say() one message every {pace:g} s in thread "
        f"'live' for {seconds:g} s, on a fresh copy of the loaded file",
    ]
    if missing:
        report.notes.append(f"the phases with retention were NOT measured: {missing}")
    return report
