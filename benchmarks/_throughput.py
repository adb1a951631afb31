"""``throughput``: committed-and-delivered events per second through the whole runtime.

N users, one run each of an agent that emits ``events`` ``agent_thinking`` events with a
checkpoint every ``every`` events (a unit of work = the events between two checkpoints). Every
event goes agent → supervisor → unit of work → group commit on a real SQLite file (WAL) →
the user's socket mailbox → an in-process subscriber that reads every event, checks that ``seq``
is gapless, and counts it.

Measured from the first ``start_run`` to the moment the subscribers have read every committed
event. Afterwards the SQLite file is opened with plain ``sqlite3`` and its rows are counted: the
run fails loudly unless delivered == committed == rows in the file and every run completed.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
from typing import Any

import attrs
import trio
import trio.lowlevel

import netra_actors as na

from ._common import BenchError, Column, GcTimer, Goal, Options, Progress, Report, Row, rate

NAME = "throughput"
TITLE = "committed-and-delivered events/s through supervisor, group commit, socket mailboxes"
TEXT = "x" * 60
"""The ``agent_thinking`` text: a short line, like streamed reasoning."""
RUNTIME_EVENTS_PER_RUN = 7
"""pending, starting, agent_started, running, agent_completed, completing, completed."""
GOAL_1000 = 110_000
"""Issue 9: >= 110k events/s at 1,000 users (0.8x the minimal safe design)."""
STRETCH_1000 = 150_000
GOAL_1 = 30_000
GOAL_FLAT = 0.9


@attrs.frozen(kw_only=True)
class Workload:
    """One configuration of the workload."""

    users: int
    events: int
    """``agent_thinking`` events per run (one run per user)."""
    every: int = 10
    """Events per unit of work (checkpoint interval)."""
    batch: int = 256
    """``receive_batch`` size of the subscribers (the gateway's default)."""


def events_per_user(users: int, quick: bool) -> int:
    """Enough events that every configuration runs for a measurable time."""
    if quick:
        return max(20, 2_000 // users)
    return max(100, 20_000 // users)


class BenchEmitter(na.Agent):
    """Emits ``input['events']`` thinking events, checkpointing every ``input['every']``."""

    name = "bench_emit"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        events: int = input["events"]
        every: int = input["every"]
        text: str = input["text"]
        for i in range(1, events + 1):
            await ctx.think(text)
            if i % every == 0:
                await ctx.checkpoint()
        return {"events": events}


class Tally:
    """What the subscribers read, and any ordering error they saw."""

    def __init__(self) -> None:
        self.delivered = 0
        self.errors: list[str] = []
        self.target: int | None = None
        self.reached = trio.Event()

    def add(self, n: int) -> None:
        self.delivered += n
        if self.target is not None and self.delivered >= self.target:
            self.reached.set()

    def expect(self, target: int) -> None:
        """From now on, :attr:`reached` is set once ``target`` events were read."""
        self.target = target
        self.add(0)


async def consume(sub: na.Subscription, tally: Tally, batch: int) -> None:
    """Read every event of ``sub``; check that ``seq`` is gapless; count."""
    expect = sub.head_seq + 1
    try:
        while True:
            events = await sub.receive_batch(batch)
            for ev in events:
                if ev.seq != expect:
                    tally.errors.append(f"{sub.user_id}: got seq {ev.seq}, expected {expect}")
                    expect = ev.seq
                expect += 1
            tally.add(len(events))
    except na.SubscriptionClosedError as exc:
        if exc.reason not in ("closed", "shutdown"):
            tally.errors.append(f"{sub.user_id}: subscription closed: {exc.reason}")


async def subscribe_all(
    runtime: na.Runtime, user_ids: list[str], *, concurrency: int = 64
) -> list[na.Subscription]:
    """Activate every user and open one subscription each (bounded concurrency)."""
    subs: list[na.Subscription | None] = [None] * len(user_ids)
    limiter = trio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            subs[i] = await runtime.subscribe(user_ids[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(user_ids)):
            nursery.start_soon(one, i)
    return [s for s in subs if s is not None]


async def ticker(progress: Progress, label: str, tally: Tally, total: int) -> None:
    """Redraw the progress bar until cancelled."""
    while True:
        progress.bar(label, tally.delivered, total)
        await trio.sleep(0.2)


async def _measure(w: Workload, db: str, progress: Progress, label: str) -> Row:
    config = na.RuntimeConfig(
        database_url=na.sqlite_url(db),
        subscriber_buffer=max(4096, 2 * (w.events + RUNTIME_EVENTS_PER_RUN)),
        max_staged_events=max(10_000, w.every + 1),
    )
    user_ids = [f"user{u:05d}" for u in range(w.users)]
    expected = w.users * (w.events + RUNTIME_EVENTS_PER_RUN)
    run_input = {"events": w.events, "every": w.every, "text": TEXT}
    tally = Tally()
    states: list[str] = []
    async with na.open_runtime(config, agents=[BenchEmitter]) as runtime:
        subs = await subscribe_all(runtime, user_ids)

        async def one_run(user_id: str) -> None:
            run_id = await runtime.start_run(user_id, BenchEmitter.name, run_input)
            info = await runtime.wait_run(user_id, run_id)
            states.append(info.state.value)

        async with trio.open_nursery() as readers:
            for sub in subs:
                readers.start_soon(consume, sub, tally, w.batch)
            readers.start_soon(ticker, progress, label, tally, expected)
            await trio.lowlevel.checkpoint()
            before = runtime.statistics().store
            with GcTimer() as gc_timer:
                started = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for user_id in user_ids:
                        nursery.start_soon(one_run, user_id)
                runs_done = time.perf_counter()
                after = runtime.statistics().store
                committed = after.events_committed - before.events_committed
                tally.expect(committed)
                with trio.move_on_after(60):
                    await tally.reached.wait()
                finished = time.perf_counter()
            readers.cancel_scope.cancel()
        progress.done()
        stats = runtime.statistics()
    seconds = finished - started
    units = after.units_committed - before.units_committed
    batches = after.batches - before.batches
    return {
        "users": w.users,
        "events_per_user": w.events,
        "every": w.every,
        "committed": committed,
        "delivered": tally.delivered,
        "expected": expected,
        "seconds": seconds,
        "events_per_s": rate(committed, seconds),
        "delivered_per_s": rate(tally.delivered, seconds),
        "units_per_s": rate(units, seconds),
        "group_commits": batches,
        "units_per_commit": units / batches if batches else 0.0,
        "drain_ms": (finished - runs_done) * 1000,
        "gc_share": gc_timer.total / seconds if seconds > 0 else 0.0,
        "gc_full_collections": gc_timer.collections[2],
        "runs_completed": sum(1 for s in states if s == "completed"),
        "subscriber_errors": len(tally.errors),
        "first_error": tally.errors[0] if tally.errors else "",
        "rollbacks": stats.rollbacks,
    }


def count_rows(db: str) -> tuple[int, int]:
    """(all event rows, ``agent_thinking`` rows) in the file, read with plain ``sqlite3``."""
    with sqlite3.connect(db) as conn:
        total = conn.execute("SELECT COUNT(*) FROM netra_events").fetchone()[0]
        thinking = conn.execute(
            "SELECT COUNT(*) FROM netra_events WHERE event = 'agent_thinking'"
        ).fetchone()[0]
    conn.close()
    return int(total), int(thinking)


def verify(row: Row, db: str) -> Row:
    """Check the run against the file; raise :class:`BenchError` on any mismatch."""
    rows, thinking = count_rows(db)
    row["rows_in_file"] = rows
    problems = []
    if row["delivered"] != row["committed"]:
        problems.append(f"delivered {row['delivered']} != committed {row['committed']}")
    if rows != row["committed"]:
        problems.append(f"rows in the SQLite file {rows} != committed {row['committed']}")
    if thinking != row["users"] * row["events_per_user"]:
        problems.append(
            f"agent_thinking rows {thinking} != {row['users']} users x {row['events_per_user']}"
        )
    if row["runs_completed"] != row["users"]:
        problems.append(f"only {row['runs_completed']} of {row['users']} runs completed")
    if row["subscriber_errors"]:
        problems.append(f"subscribers saw {row['subscriber_errors']} errors: {row['first_error']}")
    if row["rollbacks"]:
        problems.append(f"{row['rollbacks']} rollbacks")
    if problems:
        raise BenchError(f"throughput with {row['users']} users: " + "; ".join(problems))
    row["verified"] = True
    return row


def run_once(w: Workload, progress: Progress, *, directory: str | None = None) -> Row:
    """One measurement in a fresh asyncio loop + trio guest, on a fresh SQLite file."""
    with tempfile.TemporaryDirectory(prefix="netra-bench-", dir=directory) as tmp:
        db = os.path.join(tmp, "throughput.db")
        label = f"{w.users} users"
        row = na.run(_measure, w, db, progress, label, handle_signals=False)
        if row is None:
            raise KeyboardInterrupt
        return verify(row, db)


def users_list(options: Options, default_full: list[int], default_quick: list[int]) -> list[int]:
    """``--users`` if given, else the scenario's defaults."""
    given: list[int] | None = options.extra.get("users")
    if given:
        return given
    return default_quick if options.quick else default_full


COLUMNS = [
    Column(key="users", title="users"),
    Column(key="events_per_user", title="events/run"),
    Column(key="committed", title="events committed"),
    Column(key="delivered", title="delivered"),
    Column(key="events_per_s", title="events/s"),
    Column(key="units_per_s", title="units/s"),
    Column(key="units_per_commit", title="units/commit", fmt="{:,.1f}"),
    Column(key="seconds", title="seconds", fmt="{:.2f}"),
    Column(key="gc_share", title="in GC", fmt="{:.0%}"),
    Column(key="verified", title="verified"),
]


def run(options: Options, progress: Progress) -> Report:
    """The scenario: every N in ``--users``, ``--repeat`` times, medians reported."""
    from ._common import measure_repeats, median_rows

    users = users_list(options, [1, 100, 1000, 10_000], [1, 100, 1000])
    every: int = options.extra.get("every") or 10
    fixed: int | None = options.extra.get("events")
    directory: str | None = options.extra.get("dir")
    workloads = [
        Workload(users=n, events=fixed or events_per_user(n, options.quick), every=every)
        for n in users
    ]
    runs = measure_repeats(
        options,
        progress,
        workloads,
        lambda w, _i: run_once(w, progress, directory=directory),
        label=lambda w: f"{w.users} users x {w.events} events",
    )
    rows = median_rows(runs, "users")
    at_1000 = _at(rows, 1000)
    flat = scaling_ratio(runs, 10_000, 1000)
    report = Report(
        scenario=NAME,
        title=TITLE,
        options=options,
        columns=COLUMNS,
        rows=rows,
        runs=runs,
        goals=[
            Goal(
                text=f">= {GOAL_1000:,} committed-and-delivered events/s at 1,000 users",
                measured=at_1000,
                target=GOAL_1000,
                unit=" events/s",
            ),
            Goal(
                text=f"stretch: >= {STRETCH_1000:,} events/s at 1,000 users",
                measured=at_1000,
                target=STRETCH_1000,
                unit=" events/s",
            ),
            Goal(
                text=f">= {GOAL_1:,} events/s for 1 user",
                measured=_at(rows, 1),
                target=GOAL_1,
                unit=" events/s",
            ),
            Goal(
                text=f"10,000 users >= {GOAL_FLAT:g}x the rate of 1,000 users (flat in N)",
                measured=flat,
                target=GOAL_FLAT,
                unit="x",
            ),
        ],
        notes=[
            f"one run per user; {every} events per unit of work; each run also commits "
            f"{RUNTIME_EVENTS_PER_RUN} runtime events (run states, agent_started/completed), "
            "counted in 'events committed'",
            "subscribers: one per user, receive_batch(256) like the gateway; each event's seq "
            "checked; rows counted afterwards in the SQLite file with sqlite3",
            "in GC: share of the wall time spent in Python's garbage collector (gc.callbacks)",
            "10,000 vs 1,000 users: median over the repeats of the ratio within each repeat",
        ],
    )
    return report


def _at(rows: list[Row], users: int) -> float | None:
    return next((r["events_per_s"] for r in rows if r["users"] == users), None)


def scaling_ratio(runs: list[list[Row]], many: int, few: int) -> float | None:
    """Median over the repeats of events/s at ``many`` users / at ``few`` users (same repeat)."""
    ratios = []
    for rows in runs:
        a, b = _at(rows, many), _at(rows, few)
        if a is not None and b:
            ratios.append(a / b)
    return statistics.median(ratios) if ratios else None


def describe_workload(w: Workload) -> dict[str, Any]:
    """The workload as JSON."""
    return attrs.asdict(w)
