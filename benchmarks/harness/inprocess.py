"""A runtime measured in this process: scratch directories, ``na.run``, subscribers, row counts."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

import netra_actors as na

T = TypeVar("T")


def scratch_dir(directory: str | None) -> tempfile.TemporaryDirectory[str]:
    """A fresh directory for a measurement's files, in ``directory`` (``--dir``) or the temp
    directory; removed when the ``with`` block ends."""
    return tempfile.TemporaryDirectory(prefix="netra-bench-", dir=directory)


def run_trio(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``async_fn(*args)`` in trio as a guest of a fresh asyncio loop (as the runtime runs);
    Ctrl-C raises :class:`KeyboardInterrupt`."""
    result = na.run(async_fn, *args, handle_signals=False)
    if result is None:
        raise KeyboardInterrupt
    return result


async def subscribe_all(
    runtime: na.Runtime, user_ids: list[str], *, concurrency: int = 64
) -> list[na.types.Subscription]:
    """Activate every user and open one subscription each (bounded concurrency)."""
    subs: list[na.types.Subscription | None] = [None] * len(user_ids)
    limiter = trio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            subs[i] = await runtime.subscribe(user_ids[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(user_ids)):
            nursery.start_soon(one, i)
    return [s for s in subs if s is not None]


def sqlite_counts(db: str, sql: str, *params: Any) -> tuple[int, ...]:
    """The one row of the counting query ``sql`` on the SQLite file ``db``, as integers."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        row = conn.execute(sql, params).fetchone()
    finally:
        conn.close()
    return tuple(int(v or 0) for v in row)
