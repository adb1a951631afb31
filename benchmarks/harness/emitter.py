"""The ``throughput`` workload: N users, one run each of an agent emitting thinking events.

The ``throughput`` scenario reports it; ``peers`` measures it as its ``netra`` design next to the
same workload built other ways. Every event goes agent → supervisor → unit of work → group commit
on a real SQLite file (WAL) → the user's socket mailbox → an in-process subscriber that reads
every event, checks that ``seq`` is gapless, and counts it. The subscriber is a push sink
(:meth:`Subscription.push_to`: called in the delivering task, no reader task woken per unit) with
a reader task behind it for whatever it leaves to the buffer; ``NETRA_BENCH_SUBSCRIBER=reader``
measures reader tasks alone (``receive_batch``, as before push existed). :func:`run_emitter` measures one
configuration and checks it against the file: delivered == committed == rows in the file.
"""

from __future__ import annotations

import os
import time
from typing import Any

import attrs
import trio
import trio.lowlevel

import netra_actors as na

from .inprocess import run_trio, scratch_dir, sqlite_counts, subscribe_all
from .machine import GcTimer
from .progress import Progress
from .report import BenchError, Options, Row
from .stats import rate

TEXT = "x" * 60
"""The ``agent_thinking`` text: a short line, like streamed reasoning."""
RUNTIME_EVENTS_PER_RUN = 7
"""pending, starting, agent_started, running, agent_completed, completing, completed."""


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


def workloads(options: Options, full: list[int], quick: list[int]) -> list[Workload]:
    """The workload for every N of ``--users`` (default ``full``, ``quick`` with ``--quick``)."""
    return [
        Workload(
            users=n, events=options.events or events_per_user(n, options.quick), every=options.every
        )
        for n in options.users(full, quick)
    ]


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


PUSH = os.environ.get("NETRA_BENCH_SUBSCRIBER", "push") != "reader"
"""Whether the subscribers are push sinks (the default) or reader tasks alone."""


class Checker:
    """One user's subscriber: checks that ``seq`` is gapless and counts every event."""

    def __init__(self, sub: na.types.Subscription, tally: Tally) -> None:
        self.user_id = sub.user_id
        self.expect = sub.head_seq + 1
        self.tally = tally

    def __call__(self, events: list[Any]) -> bool:
        expect = self.expect
        for ev in events:
            if ev.seq != expect:
                self.tally.errors.append(f"{self.user_id}: got seq {ev.seq}, expected {expect}")
                expect = ev.seq
            expect += 1
        self.expect = expect
        self.tally.add(len(events))
        return True


async def consume(sub: na.types.Subscription, tally: Tally, batch: int) -> None:
    """Read every event of ``sub`` (pushed, or read by this task); check that ``seq`` is
    gapless; count."""
    check = Checker(sub, tally)
    if PUSH:
        sub.push_to(check)
    try:
        while True:
            check(await sub.receive_batch(batch))
    except na.SubscriptionClosedError as exc:
        if exc.reason not in ("closed", "shutdown"):
            tally.errors.append(f"{sub.user_id}: subscription closed: {exc.reason}")


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
                started, cpu_started = time.perf_counter(), time.process_time()
                async with trio.open_nursery() as nursery:
                    for user_id in user_ids:
                        nursery.start_soon(one_run, user_id)
                runs_done = time.perf_counter()
                after = runtime.statistics().store
                committed = after.events_committed - before.events_committed
                tally.expect(committed)
                with trio.move_on_after(60):
                    await tally.reached.wait()
                finished, cpu = time.perf_counter(), time.process_time() - cpu_started
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
        "cpu_us_per_event": cpu / committed * 1e6 if committed else 0.0,
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
    total, thinking = sqlite_counts(
        db, "SELECT COUNT(*), SUM(event = 'agent_thinking') FROM netra_events"
    )
    return total, thinking


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


def run_emitter(w: Workload, progress: Progress, directory: str | None) -> Row:
    """One measurement in a fresh asyncio loop + trio guest, on a fresh SQLite file."""
    with scratch_dir(directory) as tmp:
        db = os.path.join(tmp, "throughput.db")
        row = run_trio(_measure, w, db, progress, f"{w.users} users")
        return verify(row, db)
