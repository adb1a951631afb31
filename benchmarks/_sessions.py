"""``sessions``: many users with an open subscription each, in one process.

Each repeat runs in a fresh Python process (so RSS deltas are not flattered by memory a previous
measurement freed) and has two phases, each on its own SQLite file:

1. *Activation and memory* (default config, ``idle_timeout`` 60 s): ``users`` users are activated
   one after the other by ``runtime.subscribe(user)`` (which starts the user's supervisor, loads the
   user from the store and registers the socket mailbox); each call is timed. Every subscription
   gets a reader task parked in ``receive_batch`` (what a socket writer does). RSS is read from
   ``/proc/self/status`` (VmRSS) before and after, with a ``gc.collect()`` before each reading.
2. *Bulk activation and passivation* (``idle_timeout`` 5 s; 0.5 s with ``--quick``): the same
   number of users are activated concurrently (64 at a time), then every subscription is closed
   and the time until ``runtime.statistics().active_sessions`` reaches 0 is measured.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import trio

import netra_actors as na

from ._common import (
    BenchError,
    Column,
    Goal,
    Options,
    Progress,
    Report,
    Row,
    child_env,
    measure_repeats,
    median_rows,
    module_command,
    percentile,
    rss_kib,
)
from ._throughput import users_list

NAME = "sessions"
TITLE = "users with an open subscription each: activation time, RSS per session, passivation"
IDLE_TIMEOUT = 5.0
"""``idle_timeout`` of the passivation phase (``--quick``: 0.5 s).

Not lower: every supervisor with nothing to do wakes once per ``idle_timeout`` to check whether it
may passivate, so 10,000 sessions at 0.5 s cost 20,000 wake-ups/s (measured: it saturates the
event loop, activations then queue for the store past its pool timeout and fail)."""
QUICK_IDLE_TIMEOUT = 0.5
BULK_CONCURRENCY = 64


async def _reader(sub: na.Subscription, received: list[int]) -> None:
    try:
        while True:
            received[0] += len(await sub.receive_batch())
    except na.SubscriptionClosedError:
        pass


async def _activation(users: int, db: str) -> Row:
    config = na.RuntimeConfig(database_url=na.sqlite_url(db))
    received = [0]
    async with na.open_runtime(config) as runtime, trio.open_nursery() as readers:
        warm = await runtime.subscribe("warmup")  # first use: engine, pool, code paths
        readers.start_soon(_reader, warm, received)
        await trio.sleep(0.05)
        gc.collect()
        rss_before = rss_kib()
        latencies = []
        subs = []
        for u in range(users):
            t0 = time.perf_counter()
            sub = await runtime.subscribe(f"user{u:05d}")
            latencies.append(time.perf_counter() - t0)
            subs.append(sub)
            readers.start_soon(_reader, sub, received)
        await trio.sleep(0.05)
        gc.collect()
        rss_after = rss_kib()
        stats = runtime.statistics()
        if stats.active_sessions != users + 1 or stats.subscriptions != users + 1:
            raise BenchError(
                f"expected {users + 1} active sessions and subscriptions, got "
                f"{stats.active_sessions} and {stats.subscriptions}"
            )
        readers.cancel_scope.cancel()
    return {
        "activation_median_us": percentile(latencies, 50) * 1e6,
        "activation_p99_us": percentile(latencies, 99) * 1e6,
        "activation_max_us": max(latencies) * 1e6,
        "rss_per_session_kib": (rss_after - rss_before) / users,
        "rss_total_mib": rss_after / 1024,
    }


async def _passivation(users: int, db: str, idle_timeout: float) -> Row:
    config = na.RuntimeConfig(database_url=na.sqlite_url(db), idle_timeout=idle_timeout)
    received = [0]
    subs: list[na.Subscription] = []
    async with na.open_runtime(config) as runtime, trio.open_nursery() as readers:
        limiter = trio.CapacityLimiter(BULK_CONCURRENCY)

        async def activate(user_id: str) -> None:
            async with limiter:
                sub = await runtime.subscribe(user_id)
            subs.append(sub)
            readers.start_soon(_reader, sub, received)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for u in range(users):
                nursery.start_soon(activate, f"user{u:05d}")
        bulk = time.perf_counter() - t0
        active = runtime.statistics().active_sessions
        if active != users:
            raise BenchError(f"bulk activation: {active} of {users} sessions active")
        for sub in subs:
            sub.close()
        t1 = time.perf_counter()
        with trio.move_on_after(30 + 4 * idle_timeout):
            while runtime.statistics().active_sessions:  # noqa: ASYNC110 - polls a gauge
                await trio.sleep(0.05)
        passivated = time.perf_counter() - t1
        left = runtime.statistics().active_sessions
        if left:
            raise BenchError(f"passivation: {left} of {users} sessions still active after 30 s")
        readers.cancel_scope.cancel()
    return {
        "bulk_activation_us": bulk / users * 1e6,
        "bulk_activations_per_s": users / bulk if bulk else 0.0,
        "passivation_s": passivated,
    }


def child(users: int, idle_timeout: float, directory: str | None) -> Row:
    """One repeat, in this (fresh) process."""
    with tempfile.TemporaryDirectory(prefix="netra-bench-", dir=directory) as tmp:
        row: Row = {"users": users}
        a = na.run(_activation, users, os.path.join(tmp, "a.db"), handle_signals=False)
        b = na.run(
            _passivation, users, os.path.join(tmp, "b.db"), idle_timeout, handle_signals=False
        )
        if a is None or b is None:
            raise KeyboardInterrupt
        row.update(a)
        row.update(b)
        row["idle_timeout_s"] = idle_timeout
        row["verified"] = True
        return row


def run_once(users: int, idle_timeout: float, directory: str | None) -> Row:
    """Run :func:`child` in a fresh interpreter and return its row."""
    cmd = module_command("benchmarks._sessions", str(users), str(idle_timeout))
    if directory:
        cmd.append(directory)
    try:
        proc = subprocess.run(
            cmd, env=child_env(), capture_output=True, text=True, timeout=1800, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"sessions with {users} users did not finish within 30 minutes") from None
    if proc.returncode != 0:
        raise BenchError(
            f"sessions child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    result: Row = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


COLUMNS = [
    Column(key="users", title="users"),
    Column(key="activation_median_us", title="activation median us"),
    Column(key="activation_p99_us", title="activation p99 us"),
    Column(key="bulk_activation_us", title="bulk activation us/session", fmt="{:,.1f}"),
    Column(key="rss_per_session_kib", title="RSS KiB/session", fmt="{:,.1f}"),
    Column(key="passivation_s", title="all passivated after s", fmt="{:.2f}"),
    Column(key="idle_timeout_s", title="idle_timeout s", fmt="{:.1f}"),
    Column(key="verified", title="verified"),
]


def run(options: Options, progress: Progress) -> Report:
    """The scenario: ``--users`` (default 10,000; 300 with ``--quick``)."""
    users = users_list(options, [10_000], [300])
    directory: str | None = options.extra.get("dir")
    idle_timeout = QUICK_IDLE_TIMEOUT if options.quick else IDLE_TIMEOUT
    runs = measure_repeats(
        options,
        progress,
        users,
        lambda n, _i: run_once(n, idle_timeout, directory),
        label=lambda n: f"{n} users",
    )
    rows = median_rows(runs, "users")
    main_row = max(rows, key=lambda r: r["users"])
    kib = main_row["rss_per_session_kib"]
    return Report(
        scenario=NAME,
        title=TITLE,
        options=options,
        columns=COLUMNS,
        rows=rows,
        runs=runs,
        goals=[
            Goal(
                text="<= 50 KB per session",
                measured=kib * 1.024,
                target=50,
                higher_is_better=False,
                unit=" KB",
            ),
            Goal(
                text="activation median <= 100 us",
                measured=main_row["activation_median_us"],
                target=100,
                higher_is_better=False,
                unit=" us",
            ),
        ],
        notes=[
            "activation = one runtime.subscribe() call on a new user, timed one after the other "
            "(supervisor start + store read of the user's head seq and live runs + registering "
            f"the socket mailbox); bulk = the same for all users at once ({BULK_CONCURRENCY} in "
            "flight), wall time / users",
            "RSS per session: VmRSS delta / users with a reader task parked on each "
            "subscription; each repeat in a fresh process",
            "passivation: time from closing every subscription until active_sessions == 0 "
            f"with idle_timeout={idle_timeout:g} s (a supervisor notices on its next idle check, "
            "so up to idle_timeout after the close)",
        ],
    )


def _main(argv: list[str]) -> int:
    users = int(argv[0])
    idle_timeout = float(argv[1])
    directory = argv[2] if len(argv) > 2 else None
    row = child(users, idle_timeout, directory)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
