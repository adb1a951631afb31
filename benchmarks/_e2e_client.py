"""A client process of the ``e2e`` scenario (``python -m benchmarks._e2e_client``).

It reads one JSON job line on stdin: ``{"url", "tokens": [...], "input": {...}}``. It opens one
WebSocket per token with the ``websockets`` library and says ``hello`` (protocol v1), prints
``ready``, waits for a ``go`` line, then on every socket starts one ``bench_e2e`` run and reads
every event until that run's terminal ``run_state``. Each event's ``seq`` must follow the previous
one; each ``bench_tick`` gives one emit→client latency (receive time - ``data.t``). Finally it
prints one JSON line: counts, errors, first start and last end (epoch seconds) and the latencies
(at most ``MAX_SAMPLES``, evenly strided).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # websockets is a dev-only package: imported where a socket is opened
    from websockets.asyncio.client import ClientConnection

MAX_SAMPLES = 50_000
TERMINAL = frozenset({"completed", "failed", "timeout", "dead", "cancelled"})


class Result:
    def __init__(self) -> None:
        self.events = 0
        self.ticks = 0
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.completed = 0
        self.start = 0.0
        self.end = 0.0


async def _open(url: str, token: str, limit: asyncio.Semaphore) -> ClientConnection:
    from websockets.asyncio.client import connect

    async with limit:
        ws = await connect(url, max_size=2**24, open_timeout=60, ping_interval=None)
        await ws.send(json.dumps({"type": "hello", "protocol": 1, "token": token}))
        welcome = orjson.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"expected welcome, got {welcome}")
        return ws


async def _session(ws: ClientConnection, run_input: dict[str, Any], result: Result) -> None:
    await ws.send(
        json.dumps({"type": "start_run", "id": "b", "agent": "bench_e2e", "input": run_input})
    )
    expect = 1
    latencies = result.latencies
    async for raw in ws:
        now = time.time()
        msg = orjson.loads(raw)
        kind = msg["type"]
        if kind == "event":
            events = (msg,)
        elif kind == "batch":
            events = msg["events"]
        elif kind == "error":
            result.errors.append(f"server error: {msg}")
            return
        else:
            continue
        done = False
        for ev in events:
            if ev["seq"] != expect:
                result.errors.append(f"seq {ev['seq']}, expected {expect}")
                expect = ev["seq"]
            expect += 1
            name = ev["event"]
            if name == "bench_tick":
                latencies.append(now - ev["data"]["t"])
                result.ticks += 1
            elif name == "run_state" and ev["data"]["state"] in TERMINAL:
                done = True
                if ev["data"]["state"] == "completed":
                    result.completed += 1
        result.events += len(events)
        if done:
            result.end = max(result.end, time.time())
            await ws.close()
            return
    result.errors.append(f"socket closed early: {ws.close_code} {ws.close_reason}")


async def _main() -> None:
    job = json.loads(sys.stdin.readline())
    limit = asyncio.Semaphore(64)
    sockets = await asyncio.gather(*(_open(job["url"], t, limit) for t in job["tokens"]))
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        return
    result = Result()
    result.start = time.time()
    await asyncio.gather(*(_session(ws, job["input"], result) for ws in sockets))
    lat = result.latencies
    if len(lat) > MAX_SAMPLES:
        step = len(lat) / MAX_SAMPLES
        lat = [lat[int(i * step)] for i in range(MAX_SAMPLES)]
    print(
        json.dumps(
            {
                "sockets": len(sockets),
                "events": result.events,
                "ticks": result.ticks,
                "completed": result.completed,
                "errors": result.errors[:5],
                "error_count": len(result.errors),
                "start": result.start,
                "end": result.end,
                "latencies": lat,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(_main())
