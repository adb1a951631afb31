"""Agents of the replay tests: they play a script of tool calls, and the test counts the calls.

The input is ``{"token": ..., "steps": [...], "diverge": {"attempt": a, "index": i} | None}``.
Each step is ``{"tool", "arg", "replay" (default true), "fail": [attempts], "inside":
[attempts], "after": [attempts]}``: in the listed attempts the tool raises (``fail``: recorded
as an error, which the agent catches), the attempt crashes inside the tool (``inside``: the tool
stages a row that breaks a unique key, so the commit of its ``tool_completed`` fails and the run
restarts), or the agent crashes right after the call (``after``). In the ``diverge`` attempt
(and after it too, with ``"onward": true``), step ``i`` is called with other arguments. Every real call of a tool is appended to
``CALLS[token]``, which the test owns; the agent returns the results it got.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from runtime_agents import ledger, test_metadata
from sqlalchemy import insert

import netra_actors as na

__all__ = ["CALLS", "REPLAY_AGENTS", "Call", "test_metadata"]

RESTART = na.policies.RestartPolicy(
    max_restarts=12, window=60, backoff_initial=0.001, backoff_max=0.005
)


class Call(NamedTuple):
    """One real call of a script's tool."""

    position: int
    attempt: int
    args: dict[str, Any]
    key: str
    """``na.idempotency_key()`` while it ran."""
    passed_key: str | None
    """What it got as its ``idempotency_key`` parameter."""


CALLS: dict[str, list[Call]] = {}


class Crash(Exception):
    """The agent crashes on purpose."""


def _args(input: dict[str, Any], index: int, attempt: int) -> dict[str, Any]:
    step = input["steps"][index]
    diverge = input.get("diverge")
    arg = step["arg"]
    onward = diverge is not None and diverge.get("onward", False)
    if (
        diverge
        and diverge["index"] == index
        and (diverge["attempt"] == attempt or (onward and attempt > diverge["attempt"]))
    ):
        arg = {"changed": arg}
    return {"arg": arg, "i": index}


def _record(token: str, attempt: int, key: str | None, kwargs: dict[str, Any]) -> Any:
    """What every tool does: note the call, then return a result with a tuple in it."""
    index = kwargs["i"]
    CALLS.setdefault(token, []).append(
        Call(index, attempt, dict(kwargs), na.idempotency_key(), key)
    )
    return {"i": index, "arg": kwargs["arg"], "pair": (index, attempt)}


def _dup_row(ctx: Any, token: str) -> Any:
    return insert(ledger).values(
        user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt, unique_key=token
    )


class ReplayScript(na.Agent):
    name = "replay_script"
    restart_policy = RESTART

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        token: str = input["token"]
        attempt = ctx.attempt
        steps: list[dict[str, Any]] = input["steps"]
        if attempt == 1 and any(s.get("inside") for s in steps):
            await ctx.stage(_dup_row(ctx, token))  # the row an "inside" crash collides with
            await ctx.checkpoint()
        results: list[Any] = []
        for index, step in enumerate(steps):
            inside = attempt in step.get("inside", ())
            fails = attempt in step.get("fail", ())

            async def tool(
                idempotency_key: str, inside: bool = inside, fails: bool = fails, **kwargs: Any
            ) -> Any:
                result = _record(token, attempt, idempotency_key, kwargs)
                if inside:
                    await ctx.stage(_dup_row(ctx, token))
                if fails:
                    raise ValueError(f"step {kwargs['i']} fails in attempt {attempt}")
                return result

            try:
                results.append(
                    await ctx.tool(
                        step["tool"],
                        tool,
                        replay=step.get("replay", True),
                        **_args(input, index, attempt),
                    )
                )
            except na.ToolError as exc:
                results.append({"error": exc.error})
            if attempt in step.get("after", ()):
                raise Crash(f"after step {index}")
        return {"results": results, "attempt": attempt}


class ThreadedReplayScript(na.ThreadedAgent):
    name = "replay_script"
    restart_policy = RESTART

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        token: str = input["token"]
        attempt = ctx.attempt
        steps: list[dict[str, Any]] = input["steps"]
        if attempt == 1 and any(s.get("inside") for s in steps):
            ctx.stage(_dup_row(ctx, token))
            ctx.checkpoint()
        results: list[Any] = []
        for index, step in enumerate(steps):
            inside = attempt in step.get("inside", ())
            fails = attempt in step.get("fail", ())

            def tool(
                *, idempotency_key: str, inside: bool = inside, fails: bool = fails, **kwargs: Any
            ) -> Any:
                result = _record(token, attempt, idempotency_key, kwargs)
                if inside:
                    ctx.stage(_dup_row(ctx, token))
                if fails:
                    raise ValueError(f"step {kwargs['i']} fails in attempt {attempt}")
                return result

            try:
                results.append(
                    ctx.tool(
                        step["tool"],
                        tool,
                        replay=step.get("replay", True),
                        **_args(input, index, attempt),
                    )
                )
            except na.ToolError as exc:
                results.append({"error": exc.error})
            if attempt in step.get("after", ()):
                raise Crash(f"after step {index}")
        return {"results": results, "attempt": attempt}


class KeyProbe(na.Agent):
    """Calls a tool without an ``idempotency_key`` parameter, and reads the key outside one."""

    name = "key_probe"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        try:
            na.idempotency_key()
        except na.exceptions.AgentError as exc:
            outside = str(exc)
        else:
            outside = ""
        key = await ctx.tool("probe", lambda: na.idempotency_key())
        live = await ctx.tool("probe", lambda: na.idempotency_key(), replay=False)
        try:
            await ctx.tool("probe", lambda: 1, replay="no")  # type: ignore[arg-type]
        except TypeError as exc:
            reserved = str(exc)
        else:
            reserved = ""
        return {"outside": outside, "key": key, "live": live, "reserved": reserved}


class ThreadedKeyProbe(na.ThreadedAgent):
    name = "key_probe"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        try:
            na.idempotency_key()
        except na.exceptions.AgentError as exc:
            outside = str(exc)
        else:
            outside = ""
        key = ctx.tool("probe", lambda: na.idempotency_key())
        live = ctx.tool("probe", lambda: na.idempotency_key(), replay=False)
        try:
            ctx.tool("probe", lambda: 1, replay="no")  # type: ignore[arg-type]
        except TypeError as exc:
            reserved = str(exc)
        else:
            reserved = ""
        return {"outside": outside, "key": key, "live": live, "reserved": reserved}


REPLAY_AGENTS: dict[str, tuple[type[na.types.AgentBase], ...]] = {
    "async": (ReplayScript, KeyProbe),
    "threaded": (ThreadedReplayScript, ThreadedKeyProbe),
}
