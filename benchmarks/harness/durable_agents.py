"""The agents of the durable-run scenarios (``chaos``, ``recovery``) and of their tests.

Every server process of those scenarios registers them besides the demo agents (see
:func:`serve`). Their outside effects go to a **side-effect log**: the file named by
``$NETRA_EFFECTS_LOG``, one JSON line per effect — ``{"key", "run", "step", "pid", "t"}`` with
the tool call's idempotency key — appended with one ``write`` on an ``O_APPEND`` descriptor, so
that lines of concurrent processes never mix and a ``kill -9`` never leaves half a line.

* ``durable_steps``: its input is a JSON object (or a ``say`` text holding one) ``{"tag",
  "steps", "pause"}``: ``steps`` times — think ``step i``, then a tool step ``effect`` that waits
  ``pause / 2``, appends its effect, waits ``pause / 2`` again (so a loss can hit a step before or
  after its effect) — then says ``done <tag>``.
* ``durable_ask``: asks ``"which?"``, makes one tool step ``effect`` (step 1) with the answer, and
  says ``answer <text>``.
* ``durable_sleep``: ``{"seconds"}`` — one ``ctx.sleep`` (durable: one committed event, no task
  while it sleeps), then says ``woke``; the run's result is the wall-clock time it woke.

They restart generously (``max_restarts`` 1,000 in 60 s): in a chaos run a run is lost many times,
and the protocol counts process losses against the restart policy.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import trio

import netra_actors as na
from netra_actors.exceptions import RunFailedError

EFFECTS_ENV = "NETRA_EFFECTS_LOG"
"""The environment variable naming the side-effect log of a server process."""

GENEROUS = na.policies.RestartPolicy(
    max_restarts=1000, window=60.0, backoff_initial=0.05, backoff_max=0.5
)


def append_effect(record: dict[str, Any]) -> None:
    """Append one effect to the side-effect log (one ``write``: atomic between processes)."""
    path = os.environ.get(EFFECTS_ENV)
    if not path:
        raise RuntimeError(f"${EFFECTS_ENV} is not set: no side-effect log")
    line = (json.dumps({**record, "pid": os.getpid(), "t": time.time()}) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def effect(run: str, step: int, pause: float, idempotency_key: str) -> dict[str, Any]:
    """The tool of both agents: half a pause, the effect, half a pause."""
    await trio.sleep(pause / 2)
    append_effect({"key": idempotency_key, "run": run, "step": step})
    await trio.sleep(pause / 2)
    return {"step": step, "key": idempotency_key}


def parse_input(input: na.JSON) -> dict[str, Any]:
    """The run's input as an object: a ``say`` text that holds a JSON object, or the object."""
    if isinstance(input, str):
        try:
            input = json.loads(input)
        except ValueError:
            return {}
    return dict(input) if isinstance(input, dict) else {}


class DurableSteps(na.Agent):
    """``steps`` tool steps, each with an outside effect; then one assistant message."""

    name = "durable_steps"
    restart_policy = GENEROUS

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        spec = parse_input(input)
        steps = int(spec.get("steps", 8))
        pause = float(spec.get("pause", 0.2))
        for i in range(1, steps + 1):
            await ctx.think(f"step {i}")
            await ctx.tool("effect", effect, run=ctx.run_id, step=i, pause=pause)
        await ctx.say(f"done {spec.get('tag', '')}")
        return {"steps": steps}


class DurableAsk(na.Agent):
    """Asks, makes one step with the answer, answers."""

    name = "durable_ask"
    restart_policy = GENEROUS

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        answer = await ctx.ask("which?")
        text = answer.get("text") if isinstance(answer, dict) else answer
        await ctx.tool("effect", effect, run=ctx.run_id, step=1, pause=0.05)
        await ctx.say(f"answer {text}")
        return {"answer": text}


class DurableSleep(na.Agent):
    """One durable sleep; its result is when it woke."""

    name = "durable_sleep"
    restart_policy = GENEROUS

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        seconds = float(parse_input(input).get("seconds", 1.0))
        sleep = getattr(ctx, "sleep", None)
        if sleep is None:  # before durable runs: ctx.sleep does not exist yet
            raise RunFailedError("ctx.sleep is not available in this version")
        await sleep(seconds)
        woke = time.time()
        await ctx.say("woke")
        return {"woke": woke}


AGENTS: Sequence[type[na.Agent]] = (DurableSteps, DurableAsk, DurableSleep)
