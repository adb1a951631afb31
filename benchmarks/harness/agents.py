"""``bench_e2e``: the agent the e2e and cluster servers register besides the demo agents."""

from __future__ import annotations

import random
import time
from typing import Any

import trio

import netra_actors as na


class BenchE2E(na.Agent):
    """Emits ``events`` ``bench_tick`` events carrying their emit time (``data.t``, epoch seconds).

    ``every`` events per unit of work; ``interval`` seconds between units (0: no pause). With
    ``interval``, the run first waits a random fraction of one interval, so that many paced runs
    started together spread their units evenly instead of committing in lockstep bursts.
    """

    name = "bench_e2e"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        events: int = input["events"]
        every: int = input["every"]
        interval: float = input.get("interval", 0.0)
        text: str = input.get("text", "")
        next_at = trio.current_time()
        if interval > 0:
            next_at += random.uniform(0, interval)
            await trio.sleep_until(next_at)
        for i in range(1, events + 1):
            await ctx.emit("bench_tick", {"t": time.time(), "text": text})
            if i % every == 0:
                await ctx.checkpoint()
                if interval > 0:
                    next_at += interval
                    await trio.sleep_until(next_at)
        return {"events": events}


def paced_input(
    events_per_s: float, users: int, every: int, seconds: float, text: str
) -> dict[str, Any]:
    """A ``bench_e2e`` input that offers ``events_per_s`` over ``users`` runs for about
    ``seconds`` (whole units of ``every`` events, at least one)."""
    per_user = events_per_s / users
    events = max(every, int(per_user * seconds) // every * every)
    return {"events": events, "every": every, "interval": every / per_user, "text": text}
