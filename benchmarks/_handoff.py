"""``handoff``: the thread → trio hand-off that threaded agents pay for every operation.

Everything runs as the runtime runs: trio as a guest of an asyncio loop (:func:`netra_actors.run`),
callers in ``pykka.ThreadingActor`` threads. Latencies are timed in the calling thread with
``time.perf_counter`` around each call, one call after the other:

* ``from_thread.run``: ``trio.from_thread.run(noop)``: the bare round trip that
  ``ThreadedContext`` makes for each operation;
* ``ctx.heartbeat()``: a real :class:`~netra_actors.ThreadedAgent` in a real runtime (the round
  trip plus putting a message in its supervisor's mailbox);
* ``ctx.checkpoint()``: the same agent committing one staged event (round trip + supervisor +
  group commit on a SQLite file + delivery): the latency an agent sees for a durable step. Issue
  9's goal: p50 <= 0.3 ms in an otherwise idle runtime (the ``idle`` row);
* ``await ctx.checkpoint()`` of an async :class:`~netra_actors.Agent` (trio task, no thread
  hand-off), for comparison: supervisor + group commit alone.

Each is measured with the machine otherwise idle, and again while another Python thread runs a
CPU-bound loop (it holds the GIL for up to ``sys.getswitchinterval()`` at a time). Throughput:
one-way ``TrioToken.run_sync_soon`` messages from one thread, and ``from_thread.run`` round trips
from 8 threads at once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import trio

import netra_actors as na

from .harness.inprocess import run_trio, scratch_dir
from .harness.progress import Progress, measure_repeats
from .harness.report import Column, Goal, Options, Report, Row
from .harness.stats import percentile, rate

TITLE = "thread -> trio hand-off from pykka threads: latency (idle / CPU-bound thread), throughput"

_RESULTS: dict[str, list[float]] = {}
"""Latencies recorded by :class:`HandoffAgent` threads, by key (read back in trio)."""


async def _noop() -> None:
    return None


@contextlib.contextmanager
def cpu_bound_thread(active: bool) -> Iterator[None]:
    """While active: another Python thread spins in a pure-Python loop (holding the GIL)."""
    if not active:
        yield
        return
    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            for _ in range(1000):
                n += 1

    thread = threading.Thread(target=spin, name="bench-cpu-bound", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class _Caller(pykka.ThreadingActor):
    """Runs a function in its own (pykka) thread and returns the result."""

    use_daemon_thread = True

    def on_receive(self, message: Any) -> Any:
        fn, args = message
        return fn(*args)


async def in_pykka_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh pykka actor thread; wait for it without blocking trio."""
    ref = _Caller.start()
    try:
        future = ref.ask((fn, args), block=False)
        return await trio.to_thread.run_sync(future.get)
    finally:
        await trio.to_thread.run_sync(ref.stop)


def _timed_from_thread(token: trio.lowlevel.TrioToken, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        trio.from_thread.run(_noop, trio_token=token)
        out.append(time.perf_counter() - t0)
    return out


def _one_way(token: trio.lowlevel.TrioToken, n: int, seen: list[int]) -> float:
    def bump() -> None:
        seen[0] += 1

    t0 = time.perf_counter()
    for _ in range(n):
        token.run_sync_soon(bump)
    trio.from_thread.run_sync(lambda: None, trio_token=token)  # FIFO: all ran before this
    return time.perf_counter() - t0


class HandoffAgent(na.ThreadedAgent):
    """Times its own ``heartbeat`` and ``checkpoint`` calls (``input``: ops and a result key)."""

    name = "bench_handoff"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        ops: int = input["ops"]
        beats, checkpoints = [], []
        for _ in range(ops):
            t0 = time.perf_counter()
            ctx.heartbeat()
            beats.append(time.perf_counter() - t0)
        for _ in range(max(1, ops // 4)):
            ctx.think("x")
            t0 = time.perf_counter()
            ctx.checkpoint()
            checkpoints.append(time.perf_counter() - t0)
        _RESULTS[input["key"] + ":heartbeat"] = beats
        _RESULTS[input["key"] + ":checkpoint"] = checkpoints
        return None


class AsyncCheckpointAgent(na.Agent):
    """An async agent timing its own ``await ctx.checkpoint()`` of one staged event."""

    name = "bench_async_checkpoint"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        samples = []
        for _ in range(input["ops"]):
            await ctx.think("x")
            t0 = time.perf_counter()
            await ctx.checkpoint()
            samples.append(time.perf_counter() - t0)
        _RESULTS[input["key"] + ":async"] = samples
        return None


CHECKPOINT = "ctx.checkpoint() (1 event)"
ASYNC_CHECKPOINT = "async agent: await ctx.checkpoint() (1 event)"
GOAL_CHECKPOINT_US = 300.0


def _latency_row(op: str, cond: str, samples: list[float]) -> Row:
    return {
        "case": f"{op} | {cond}",
        "operation": op,
        "condition": cond,
        "samples": len(samples),
        "p50_us": percentile(samples, 50) * 1e6,
        "p99_us": percentile(samples, 99) * 1e6,
        "max_us": max(samples) * 1e6,
        "per_s": rate(len(samples), sum(samples)),
    }


async def _measure(
    ops_idle: int, ops_busy: int, one_way: int, db: str, progress: Progress
) -> list[Row]:
    token = trio.lowlevel.current_trio_token()
    rows: list[Row] = []
    config = na.RuntimeConfig(database_url=na.sqlite_url(db))
    conditions = (("idle", False, ops_idle), ("CPU-bound thread", True, ops_busy))
    async with na.open_runtime(config, agents=[HandoffAgent, AsyncCheckpointAgent]) as runtime:
        for cond, busy, ops in conditions:
            progress.bar("hand-off", len(rows), 8)
            with cpu_bound_thread(busy):
                samples = await in_pykka_thread(_timed_from_thread, token, ops)
                rows.append(_latency_row("from_thread.run", cond, samples))
                key = f"{cond}-{time.monotonic_ns()}"
                run_id = await runtime.start_run(
                    "handoff", HandoffAgent.name, {"ops": ops, "key": key}
                )
                info = await runtime.wait_run("handoff", run_id)
                if info.state is not na.RunState.COMPLETED:
                    raise na.NetraError(f"the hand-off agent ended {info.state.value}")
                rows.append(_latency_row("ctx.heartbeat()", cond, _RESULTS.pop(key + ":heartbeat")))
                rows.append(_latency_row(CHECKPOINT, cond, _RESULTS.pop(key + ":checkpoint")))
                run_id = await runtime.start_run(
                    "handoff-async",
                    AsyncCheckpointAgent.name,
                    {"ops": max(1, ops // 4), "key": key},
                )
                info = await runtime.wait_run("handoff-async", run_id)
                if info.state is not na.RunState.COMPLETED:
                    raise na.NetraError(f"the async checkpoint agent ended {info.state.value}")
                rows.append(_latency_row(ASYNC_CHECKPOINT, cond, _RESULTS.pop(key + ":async")))
        progress.done()
        # one-way messages from one thread
        seen = [0]
        seconds = await in_pykka_thread(_one_way, token, one_way, seen)
        rows.append(
            {
                "case": "run_sync_soon one-way | idle",
                "operation": "run_sync_soon one-way",
                "condition": "idle",
                "samples": seen[0],
                "p50_us": None,
                "p99_us": None,
                "per_s": rate(seen[0], seconds),
            }
        )
        # round trips from 8 threads at once
        threads = 8
        each = max(1, ops_idle // threads)
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(threads):
                nursery.start_soon(in_pykka_thread, _timed_from_thread, token, each)
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "case": "from_thread.run x8 threads | idle",
                "operation": "from_thread.run, 8 threads",
                "condition": "idle",
                "samples": each * threads,
                "p50_us": None,
                "p99_us": None,
                "per_s": rate(each * threads, seconds),
            }
        )
    return rows


def run_once(
    ops_idle: int, ops_busy: int, one_way: int, progress: Progress, directory: str | None
) -> list[Row]:
    """One repeat of every measurement."""
    with scratch_dir(directory) as tmp:
        db = os.path.join(tmp, "handoff.db")
        return run_trio(_measure, ops_idle, ops_busy, one_way, db, progress)


COLUMNS = [
    Column(key="operation", title="operation"),
    Column(key="condition", title="while"),
    Column(key="samples", title="calls"),
    Column(key="p50_us", title="p50 us", fmt="{:,.1f}"),
    Column(key="p99_us", title="p99 us", fmt="{:,.1f}"),
    Column(key="per_s", title="calls/s"),
]


def run(options: Options, progress: Progress) -> Report:
    """The scenario."""
    if options.quick:
        ops_idle, ops_busy, one_way = 500, 40, 20_000
    else:
        ops_idle, ops_busy, one_way = 5_000, 400, 200_000
    per_repeat = measure_repeats(
        options,
        progress,
        [None],
        lambda _c: run_once(ops_idle, ops_busy, one_way, progress, options.directory),
        label=lambda _c: "hand-off",
    )
    report = Report.of(TITLE, options, COLUMNS, [r[0] for r in per_repeat], "case")
    idle_checkpoint = next((r for r in report.rows if r["case"] == f"{CHECKPOINT} | idle"), None)
    report.goals = [
        Goal.at_most(
            f"ctx.checkpoint() p50 <= {GOAL_CHECKPOINT_US / 1000:g} ms in an idle runtime",
            idle_checkpoint["p50_us"] / 1000 if idle_checkpoint else None,
            GOAL_CHECKPOINT_US / 1000,
            " ms",
        )
    ]
    report.notes = [
        "callers are pykka ThreadingActor threads; trio runs as a guest of asyncio (as in the "
        "runtime); latencies timed in the calling thread, calls one after the other",
        f"CPU-bound thread: a pure-Python loop in another thread; sys.getswitchinterval() = "
        f"{sys.getswitchinterval() * 1000:g} ms",
        "ctx.checkpoint() includes a group commit on a SQLite file: it is the latency of a "
        "durable step, not only the hand-off; the async agent's row is the same step "
        "without the thread hand-off",
    ]
    return report
