"""Agents for the durable-runs tests (``test_durable.py``), async and threaded twins.

They are deterministic (what they commit does not depend on the attempt), as a durable agent
must be; the tools count their calls in :data:`CALLS` (owned by the tests).
"""

from __future__ import annotations

import time
from collections import Counter

import netra_actors as na

CALLS: Counter[str] = Counter()
"""Real calls of each tool, by ``"<run_id>:<tool>"``."""
CRASHED: set[str] = set()
"""Runs whose agent crashed on purpose already (once per run)."""
FAST = na.policies.RestartPolicy(max_restarts=5, backoff_initial=0.0)


def _lookup(run_id: str, city: str) -> dict[str, str]:
    CALLS[f"{run_id}:lookup"] += 1
    return {"city": city, "weather": "sunny"}


def _crash_once(ctx: na.AgentContext | na.ThreadedContext, input: na.JSON) -> None:
    if isinstance(input, dict) and input.get("crash") and ctx.run_id not in CRASHED:
        CRASHED.add(ctx.run_id)
        raise RuntimeError("crash after committing everything")


class Story(na.Agent):
    """Thinks, says, streams a message, calls a tool, emits: then (once) crashes."""

    name = "story"
    restart_policy = FAST

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.think("planning")
        await ctx.say("hello")
        async with ctx.message() as m:
            for part in ("streamed ", "text"):
                await m.write(part)
        found = await ctx.tool("lookup", _lookup, run_id=ctx.run_id, city="Oslo")
        await ctx.emit("found", {"found": found})
        await ctx.checkpoint()
        _crash_once(ctx, input)
        return found


class ThreadedStory(na.ThreadedAgent):
    name = "story"
    restart_policy = FAST

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        ctx.think("planning")
        ctx.say("hello")
        with ctx.message() as m:
            for part in ("streamed ", "text"):
                m.write(part)
        found = ctx.tool("lookup", _lookup, run_id=ctx.run_id, city="Oslo")
        ctx.emit("found", {"found": found})
        ctx.checkpoint()
        _crash_once(ctx, input)
        return found


class Changing(na.Agent):
    """Emits what its attempt number says (not deterministic on purpose), then crashes once."""

    name = "changing"
    restart_policy = FAST

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.emit("same", {"n": 1})
        await ctx.emit("which", {"attempt": ctx.attempt})
        await ctx.emit("after", {"n": 2})
        await ctx.checkpoint()
        _crash_once(ctx, {"crash": True})
        return "done"


class ThreadedChanging(na.ThreadedAgent):
    name = "changing"
    restart_policy = FAST

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        ctx.emit("same", {"n": 1})
        ctx.emit("which", {"attempt": ctx.attempt})
        ctx.emit("after", {"n": 2})
        ctx.checkpoint()
        _crash_once(ctx, {"crash": True})
        return "done"


class Question(na.Agent):
    """Asks which city; answers with what the tool found there."""

    name = "question"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.say("Let me check.")
        city = await ctx.ask("Which city should I check?")
        found = await ctx.tool("lookup", _lookup, run_id=ctx.run_id, city=str(city))
        await ctx.say(f"{found['city']}: {found['weather']}")
        return found


class ThreadedQuestion(na.ThreadedAgent):
    name = "question"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        ctx.say("Let me check.")
        city = ctx.ask("Which city should I check?")
        found = ctx.tool("lookup", _lookup, run_id=ctx.run_id, city=str(city))
        ctx.say(f"{found['city']}: {found['weather']}")
        return found


class Nap(na.Agent):
    """Sleeps durably for ``input["seconds"]``, then says when it woke."""

    name = "nap"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.say("going to sleep")
        await ctx.sleep(float(input["seconds"]))
        return {"woke": time.time()}


class ThreadedNap(na.ThreadedAgent):
    name = "nap"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        ctx.say("going to sleep")
        ctx.sleep(float(input["seconds"]))
        return {"woke": time.time()}


class Hold(na.Agent):
    """Says it holds, then waits for one inbox message (not durable: its attempt runs)."""

    name = "hold"
    restart_policy = FAST

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.say("holding")
        await ctx.checkpoint()
        return await ctx.receive()


class ThreadedHold(na.ThreadedAgent):
    name = "hold"
    restart_policy = FAST

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        ctx.say("holding")
        ctx.checkpoint()
        return ctx.receive()


DURABLE_AGENTS: dict[str, list[type[na.types.AgentBase]]] = {
    "async": [Story, Changing, Question, Nap, Hold],
    "threaded": [ThreadedStory, ThreadedChanging, ThreadedQuestion, ThreadedNap, ThreadedHold],
}
