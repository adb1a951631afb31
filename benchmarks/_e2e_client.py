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
import time
from typing import TYPE_CHECKING, Any

from .harness import wsclient
from .harness.stats import thin

if TYPE_CHECKING:  # websockets is a dev-only package: imported where a socket is opened
    from websockets.asyncio.client import ClientConnection


class Result:
    def __init__(self) -> None:
        self.events = 0
        self.ticks = 0
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.completed = 0
        self.start = 0.0
        self.end = 0.0


async def _session(ws: ClientConnection, run_input: dict[str, Any], result: Result) -> None:
    await wsclient.start_run(ws, "bench_e2e", run_input)
    expect = 1
    latencies = result.latencies
    try:
        async for now, _msg, events in wsclient.frames(ws):
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
                elif name == "run_state" and ev["data"]["state"] in wsclient.TERMINAL:
                    done = True
                    if ev["data"]["state"] == "completed":
                        result.completed += 1
            result.events += len(events)
            if done:
                result.end = max(result.end, time.time())
                await ws.close()
                return
    except wsclient.ServerError as exc:
        result.errors.append(str(exc))
        return
    result.errors.append(f"socket closed early: {ws.close_code} {ws.close_reason}")


async def _open(url: str, token: str) -> ClientConnection:
    ws, _welcome = await wsclient.say_hello(url, {"token": token}, open_timeout=60)
    return ws


async def _main() -> None:
    result = Result()
    ran = await wsclient.run_job(_open, lambda ws, run_input: _session(ws, run_input, result))
    if ran is None:
        return
    result.start, sockets = ran
    wsclient.print_result(
        {
            "sockets": sockets,
            "events": result.events,
            "ticks": result.ticks,
            "completed": result.completed,
            "errors": result.errors[:5],
            "error_count": len(result.errors),
            "start": result.start,
            "end": result.end,
            "latencies": thin(result.latencies, wsclient.MAX_SAMPLES),
        }
    )


if __name__ == "__main__":
    asyncio.run(_main())
