"""Agents shared by the runtime tests."""

from __future__ import annotations

import time
from typing import Any

import trio
from sqlalchemy import Column, Integer, MetaData, String, Table, insert

import netra_actors as na

test_metadata = MetaData()

ledger = Table(
    "test_ledger",
    test_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(64), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("unique_key", String(64), nullable=True, unique=True),
)


class Steps(na.Agent):
    """Emits ``input["steps"]`` thinking events, checkpointing every ``input["every"]``."""

    name = "steps"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        steps = int(input.get("steps", 3)) if isinstance(input, dict) else 3
        every = int(input.get("every", 1)) if isinstance(input, dict) else 1
        for i in range(steps):
            await ctx.think(f"step {i}")
            if (i + 1) % every == 0:
                await ctx.checkpoint()
        await ctx.stage(
            insert(ledger).values(user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt)
        )
        return {"steps": steps}


class Crashy(na.Agent):
    """Stages an event and a row, then raises, on its first ``crash_times`` attempts."""

    name = "crashy"
    restart_policy = na.policies.RestartPolicy(
        max_restarts=3, backoff_initial=0.01, backoff_max=0.05
    )

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        crash_times = int(input["crash_times"]) if isinstance(input, dict) else 1
        await ctx.think(f"doomed attempt {ctx.attempt}")
        await ctx.stage(
            insert(ledger).values(user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt)
        )
        if ctx.attempt <= crash_times:
            raise RuntimeError(f"boom {ctx.attempt}")
        return {"attempt": ctx.attempt}


class Sleeper(na.Agent):
    """Checkpoints a thinking event, stages another, then sleeps (heartbeating if asked)."""

    name = "sleeper"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        beat = bool(input.get("beat")) if isinstance(input, dict) else False
        seconds = float(input.get("seconds", 3600)) if isinstance(input, dict) else 3600.0
        await ctx.think("committed before sleeping")
        await ctx.checkpoint()
        await ctx.think("staged, never committed")
        await ctx.stage(
            insert(ledger).values(user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt)
        )
        start = trio.current_time()
        while trio.current_time() - start < seconds:
            if beat:
                await ctx.heartbeat()
            await trio.sleep(0.05 if beat else seconds)
        return "woke"


class Conflict(na.Agent):
    """Stages a row with a unique key: two runs with the same key conflict at commit."""

    name = "conflict"
    restart_policy = na.policies.RestartPolicy(restart="temporary")

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        key = str(input["key"]) if isinstance(input, dict) else "k"
        await ctx.think(f"claiming {key}")
        await ctx.stage(
            insert(ledger).values(
                user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt, unique_key=key
            )
        )
        await ctx.checkpoint()
        return key


class Echo(na.Agent):
    """Emits one ``echo`` event per message it receives, until it receives ``"stop"``."""

    name = "echo"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        count = 0
        while (message := await ctx.receive()) != "stop":
            count += 1
            await ctx.emit("echo", {"message": message})
            await ctx.checkpoint()
        return count


# -- the same agents, written as threaded (pykka) agents: blocking code, sync context ---------


class ThreadedSteps(na.ThreadedAgent):
    name = "steps"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        steps = int(input.get("steps", 3)) if isinstance(input, dict) else 3
        every = int(input.get("every", 1)) if isinstance(input, dict) else 1
        for i in range(steps):
            ctx.think(f"step {i}")
            if (i + 1) % every == 0:
                ctx.checkpoint()
        ctx.stage(
            insert(ledger).values(user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt)
        )
        return {"steps": steps}


class ThreadedCrashy(na.ThreadedAgent):
    name = "crashy"
    restart_policy = Crashy.restart_policy

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        crash_times = int(input["crash_times"]) if isinstance(input, dict) else 1
        ctx.think(f"doomed attempt {ctx.attempt}")
        ctx.stage(
            insert(ledger).values(user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt)
        )
        if ctx.attempt <= crash_times:
            raise RuntimeError(f"boom {ctx.attempt}")
        return {"attempt": ctx.attempt}


class ThreadedSleeper(na.ThreadedAgent):
    """Blocking sleeps in small steps, stopping cooperatively when the attempt is over."""

    name = "sleeper"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        beat = bool(input.get("beat")) if isinstance(input, dict) else False
        seconds = float(input.get("seconds", 3600)) if isinstance(input, dict) else 3600.0
        ctx.think("committed before sleeping")
        ctx.checkpoint()
        ctx.think("staged, never committed")
        ctx.stage(
            insert(ledger).values(user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt)
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not ctx.cancelled:
            if beat:
                ctx.heartbeat()
            time.sleep(0.02)
        return "woke"


class ThreadedConflict(na.ThreadedAgent):
    name = "conflict"
    restart_policy = Conflict.restart_policy

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        key = str(input["key"]) if isinstance(input, dict) else "k"
        ctx.think(f"claiming {key}")
        ctx.stage(
            insert(ledger).values(
                user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt, unique_key=key
            )
        )
        ctx.checkpoint()
        return key


class ThreadedEcho(na.ThreadedAgent):
    name = "echo"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        count = 0
        while (message := ctx.receive()) != "stop":
            count += 1
            ctx.emit("echo", {"message": message})
            ctx.checkpoint()
        return count


class Mutator(na.Agent):
    """Changes what it emitted after emitting it (the committed event must not change)."""

    name = "mutator"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        d: dict[str, Any] = {"n": 1, "items": [1]}
        await ctx.emit("probe", d)
        d["n"] = 2
        d["items"].append(2)
        await ctx.checkpoint()
        d["n"] = 3
        return d


ALL_AGENTS: tuple[type[na.types.AgentBase], ...] = (Steps, Crashy, Sleeper, Conflict, Echo, Mutator)


class ThreadedMutator(na.ThreadedAgent):
    name = "mutator"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        d: dict[str, Any] = {"n": 1, "items": [1]}
        ctx.emit("probe", d)
        d["n"] = 2
        d["items"].append(2)
        ctx.checkpoint()
        d["n"] = 3
        return d


THREADED_AGENTS: tuple[type[na.types.AgentBase], ...] = (
    ThreadedSteps,
    ThreadedCrashy,
    ThreadedSleeper,
    ThreadedConflict,
    ThreadedEcho,
    ThreadedMutator,
)

#: The invariant suite runs once per agent kind.
AGENTS_BY_KIND: dict[str, tuple[type[na.types.AgentBase], ...]] = {
    "async": ALL_AGENTS,
    "threaded": THREADED_AGENTS,
}
