"""Inside a client process: the job, WebSockets that say ``hello``, the frames they read.

A client process (see :mod:`.clients`) reads its job with :func:`read_job`, opens its sockets with
:func:`open_all` and :func:`say_hello`, waits for the word with :func:`wait_for_go`, starts its
runs with :func:`start_run` and reads each socket with :func:`frames`; it ends with
:func:`print_result`. ``websockets`` (a dev-only package) is imported only where a socket opens.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

T = TypeVar("T")

TERMINAL = frozenset({"completed", "failed", "timeout", "dead", "cancelled"})
"""The run states after which a run's stream ends."""
MAX_SAMPLES = 50_000
"""Latency samples a client reports at the most (:func:`.stats.thin`)."""


class ServerError(Exception):
    """The server answered with an ``error`` frame (the text names it)."""


def read_job() -> dict[str, Any]:
    """The job: one JSON line on stdin."""
    job: dict[str, Any] = json.loads(sys.stdin.readline())
    return job


async def open_all(
    specs: Sequence[T], open_one: Callable[[T], Awaitable[ClientConnection]], limit: int = 64
) -> list[ClientConnection]:
    """``open_one(spec)`` for every spec, at most ``limit`` handshakes at a time, in order."""
    gate = asyncio.Semaphore(limit)

    async def one(spec: T) -> ClientConnection:
        async with gate:
            return await open_one(spec)

    return list(await asyncio.gather(*(one(s) for s in specs)))


async def say_hello(
    url: str, hello: dict[str, Any], open_timeout: float
) -> tuple[ClientConnection, dict[str, Any]]:
    """A socket to ``url`` that said ``hello`` (``type`` and ``protocol`` added) and got its
    ``welcome`` (returned with it)."""
    from websockets.asyncio.client import connect

    ws = await connect(url, max_size=2**24, open_timeout=open_timeout, ping_interval=None)
    await ws.send(json.dumps({"type": "hello", "protocol": 1, **hello}))
    welcome: dict[str, Any] = orjson.loads(await ws.recv())
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"expected welcome, got {welcome}")
    return ws, welcome


async def wait_for_go() -> bool:
    """Say ``ready``; True once the ``go`` line arrives (False: stop)."""
    print("ready", flush=True)
    line: str = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip() == "go"


async def start_run(ws: ClientConnection, agent: str, run_input: Any) -> None:
    """Start one run of ``agent`` on the socket (command id ``b``)."""
    await ws.send(json.dumps({"type": "start_run", "id": "b", "agent": agent, "input": run_input}))


async def frames(
    ws: ClientConnection,
) -> AsyncIterator[tuple[float, dict[str, Any], Sequence[Any]]]:
    """(receive time, message, its events) of every frame until the socket closes: the events
    of an ``event`` or ``batch`` frame, none for other frames; :class:`ServerError` at an
    ``error`` frame."""
    async for raw in ws:
        now = time.time()
        msg = orjson.loads(raw)
        kind = msg["type"]
        if kind == "event":
            yield now, msg, (msg,)
        elif kind == "batch":
            yield now, msg, msg["events"]
        elif kind == "error":
            raise ServerError(f"server error: {msg}")
        else:
            yield now, msg, ()


def print_result(result: dict[str, Any]) -> None:
    """The client's result: one JSON line on stdout."""
    print(json.dumps(result), flush=True)


async def run_job(
    open_one: Callable[[str, str], Awaitable[ClientConnection]],
    session: Callable[[ClientConnection, Any], Awaitable[None]],
) -> tuple[float, int] | None:
    """A client process's job ``{"url", "tokens", "input"}``: ``open_one(url, token)`` for every
    token, ``ready``, then at ``go`` ``session(ws, input)`` on every socket at once. (The start
    time, the number of sockets); None if told to stop instead."""
    job = read_job()
    sockets = await open_all(job["tokens"], lambda t: open_one(job["url"], t))
    if not await wait_for_go():
        return None
    start = time.time()
    await asyncio.gather(*(session(ws, job["input"]) for ws in sockets))
    return start, len(sockets)
