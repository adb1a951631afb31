"""``bench_e2e``: the agent the e2e and cluster servers register besides the demo agents."""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import trio

import netra_actors as na


class BenchE2E(na.Agent):
    """Emits ``events`` ``bench_tick`` events carrying their emit time (``data.t``, epoch seconds).

    ``every`` events per unit of work; ``interval`` seconds between units (0: no pause). With
    ``interval``, the run first waits a random fraction of one interval, so that many paced runs
    started together spread their units evenly instead of committing in lockstep bursts. With
    ``stream``, the run also streams one assistant message: before each unit's commit it writes
    ``stream`` provisional tokens ``"<epoch seconds>;"`` (the time each was written), and the
    message commits with the run's last unit.
    """

    name = "bench_e2e"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        events: int = input["events"]
        every: int = input["every"]
        interval: float = input.get("interval", 0.0)
        text: str = input.get("text", "")
        tokens: int = input.get("stream", 0)
        next_at = trio.current_time()
        if interval > 0:
            next_at += random.uniform(0, interval)
            await trio.sleep_until(next_at)
        async with contextlib.AsyncExitStack() as stack:
            m = await stack.enter_async_context(ctx.message()) if tokens else None
            for i in range(1, events + 1):
                await ctx.emit("bench_tick", {"t": time.time(), "text": text})
                if i % every == 0:
                    if m is not None:
                        for _ in range(tokens):
                            await m.write(f"{time.time():.6f};")
                    await ctx.checkpoint()
                    if interval > 0:
                        next_at += interval
                        await trio.sleep_until(next_at)
        return {"events": events}


def paced_input(
    events_per_s: float, users: int, every: int, seconds: float, text: str, stream: int = 0
) -> dict[str, Any]:
    """A ``bench_e2e`` input that offers ``events_per_s`` over ``users`` runs for about
    ``seconds`` (whole units of ``every`` events, at least one); ``stream`` tokens per unit."""
    per_user = events_per_s / users
    events = max(every, int(per_user * seconds) // every * every)
    run = {"events": events, "every": every, "interval": every / per_user, "text": text}
    if stream:
        run["stream"] = stream
    return run
