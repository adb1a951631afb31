"""The ``recovery`` scenario's server cases: ``serve`` processes killed with live runs.

* :func:`lone_restart`: one server on a SQLite file with ``runs`` live ``durable_steps`` runs is
  killed (``kill -9``) and started again; the seconds from the new process's first healthy
  ``/healthz`` (it is listening; polled every 50 ms) until the last of the runs' ``run_state``
  ``recovered`` was committed (its ``ts``, the server's clock: negative when every run was
  recovered before the server listened).
* :func:`cluster_takeover`: two servers on one SQLite file; the owner of a user with a live run is
  killed while a socket on the other server follows the user; the seconds from the kill until
  that socket receives the run's ``run_state`` ``recovered``.

Runs are started over real WebSockets (the wire's ``say``) and the recovery is read from the
database directly (:class:`.durable_cluster.StoreReader`), or from the following socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from .durable_cluster import SECRET, Node, StoreReader
from .report import BenchError

LONG_RUN = {"steps": 10_000, "pause": 30.0}
"""A ``durable_steps`` input that keeps its run live (one tool step per 30 s) for the measurement."""

COUNT_STATE = (
    "SELECT count(DISTINCT run_id) FROM netra_events WHERE event = 'run_state' AND data LIKE '%{}%'"
)


def token(user: str) -> str:
    from netra_actors.gateway import mint_token

    return str(mint_token(SECRET.encode(), user, 24 * 3600.0, now=time.time()))


async def _connect(node: Node, user: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(node.url, open_timeout=10, max_queue=None)
    await ws.send(json.dumps({"type": "hello", "protocol": 1, "token": token(user)}))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
    if welcome.get("type") != "welcome":
        raise BenchError(f"no welcome: {welcome}")
    return ws


async def _start_runs(node: Node, user: str, runs: int) -> None:
    """``runs`` live runs of ``user``, each ``say`` acknowledged (its start committed)."""
    ws = await _connect(node, user)
    try:
        for i in range(runs):
            text = json.dumps({**LONG_RUN, "tag": f"{user}-{i}"})
            frame = {"type": "say", "id": f"c{i}", "text": text, "agent": "durable_steps"}
            await ws.send(json.dumps(frame))
        acked = 0
        while acked < runs:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if frame.get("type") == "ack":
                acked += 1
            elif frame.get("type") == "error":
                raise BenchError(f"say refused: {frame}")
    finally:
        await ws.close()


async def _count(store: StoreReader, state: str) -> int:
    ((n,),) = await store.fetch(COUNT_STATE.format(state))
    return int(n)


async def _until_count(store: StoreReader, state: str, want: int, within: float) -> float:
    """Poll the database every 20 ms until ``want`` runs committed ``state``; when (monotonic)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await _count(store, state) >= want:
            return time.monotonic()
        await asyncio.sleep(0.02)
    have = await _count(store, state)
    raise BenchError(f"{have} of {want} runs reached {state!r} within {within:.0f} s")


async def lone_restart(
    directory: Path, store: StoreReader, runs: int, ttl: float
) -> dict[str, Any]:
    """Kill -9 a lone server with ``runs`` live runs, restart it, time the recovery."""
    node = Node(directory, store, "lone", ttl=ttl, effects=directory / "effects.log")
    users = max(1, runs // 10)
    try:
        await asyncio.to_thread(node.start)
        for u in range(users):
            await _start_runs(node, f"u{u}", runs // users + (1 if u < runs % users else 0))
        await _until_count(store, "running", runs, within=120)
        await asyncio.to_thread(node.kill)
        spawned = time.time()
        await asyncio.to_thread(node.start)
        listening = time.time()
        await _until_count(store, "recovered", runs, within=ttl + 120)
        ((last,),) = await store.fetch(
            COUNT_STATE.replace("count(DISTINCT run_id)", "max(ts)").format("recovered")
        )
    finally:
        await asyncio.to_thread(node.stop)
    return {"seconds": float(last) - listening, "startup_s": listening - spawned}


async def cluster_takeover(directory: Path, store: StoreReader, ttl: float) -> dict[str, Any]:
    """Kill -9 the owner of a user with a live run; time until the follower's socket sees it
    ``recovered``."""
    effects = directory / "effects.log"
    owner = Node(directory, store, "a", ttl=ttl, effects=effects)
    other = Node(directory, store, "b", ttl=ttl, effects=effects)
    try:
        await asyncio.to_thread(owner.start)
        await asyncio.to_thread(other.start)
        await _start_runs(owner, "taken", 1)
        await _until_count(store, "running", 1, within=60)
        follower = await _connect(other, "taken")
        try:
            await asyncio.sleep(0.5)  # the follower is caught up with the owner's events
            await asyncio.to_thread(owner.kill)
            killed = time.monotonic()
            seen = await _recovered_on(follower, within=ttl + 60)
        finally:
            await follower.close()
    finally:
        await asyncio.to_thread(owner.stop)
        await asyncio.to_thread(other.stop)
    return {"seconds": seen - killed}


async def _recovered_on(ws: Any, within: float) -> float:
    """When (monotonic) ``ws`` receives a ``run_state`` ``recovered``."""
    async with asyncio.timeout(within):
        while True:
            frame = json.loads(await ws.recv())
            kind = frame.get("type")
            events = (
                [frame] if kind == "event" else frame.get("events", []) if kind == "batch" else []
            )
            for e in events:
                if e.get("event") == "run_state" and "recovered" in json.dumps(e.get("data")):
                    return time.monotonic()
