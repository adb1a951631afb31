"""Agents for the streaming, input and busy-policy tests: async agents and their threaded twins.

Every agent reads its options from a dict input; the test drives its pace through the run's
inbox (``send_to_run``) or its inputs (``send_input``), so nothing here depends on timing.
"""

from __future__ import annotations

import contextlib
from typing import Any

import netra_actors as na

FAST = na.policies.RestartPolicy(max_restarts=3, backoff_initial=0.01, backoff_max=0.05)
TEMPORARY = na.policies.RestartPolicy(restart="temporary")

#: Short heartbeat timeout: a run waiting in ``ask`` must keep heartbeating on its own.
ASK_BEAT = na.policies.LivenessPolicy(heartbeat_timeout=0.3, run_timeout=60)
#: Short deadline (and a short heartbeat timeout, which ``ask`` must not trip first).
ASK_DEADLINE = na.policies.LivenessPolicy(heartbeat_timeout=0.3, run_timeout=1.0)


def _opts(input: na.JSON) -> dict[str, Any]:
    return dict(input) if isinstance(input, dict) else {}


def _tokens(opts: dict[str, Any]) -> list[str]:
    return [str(t) for t in opts.get("tokens", ["Hel", "lo"])]


def _ask_prompts(opts: dict[str, Any]) -> list[str]:
    return [str(p) for p in opts.get("prompts", ["name?"])]


# -- async agents ----------------------------------------------------------------------------


class StreamText(na.Agent):
    """Streams ``messages`` messages of ``tokens`` each, one ``write`` per token.

    ``gate``: wait for one inbox message before each token. ``crash_times``: on its first
    attempts, raise inside the last message's block after streaming it (it never commits).
    Returns the committed message ids.
    """

    name = "stream_text"
    restart_policy = FAST

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        opts = _opts(input)
        tokens = _tokens(opts)
        messages = int(opts.get("messages", 1))
        crash_times = int(opts.get("crash_times", 0))
        ids: list[na.JSON] = []
        for n in range(messages):
            async with ctx.message() as m:
                for token in tokens:
                    if opts.get("gate"):
                        await ctx.receive()
                    await m.write(token)
                if n == messages - 1 and ctx.attempt <= crash_times:
                    raise RuntimeError(f"stream crash {ctx.attempt}")
            ids.append(m.message_id)
            if opts.get("think"):
                await ctx.think(f"after message {n}")
                await ctx.checkpoint()
        return ids


class MultiStream(na.Agent):
    """Opens ``count`` messages at once and writes ``rounds`` tokens to each, round-robin.

    Token ``r`` of message ``i`` is ``"<i>.<r>;"``. The messages commit in reverse order of
    opening (the exit stack unwinds). Returns the message ids, in order of opening.
    """

    name = "multi_stream"
    restart_policy = TEMPORARY

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        opts = _opts(input)
        count, rounds = int(opts.get("count", 3)), int(opts.get("rounds", 2))
        async with contextlib.AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(ctx.message()) for _ in range(count)]
            for r in range(rounds):
                for i, s in enumerate(streams):
                    await s.write(f"{i}.{r};")
        return [s.message_id for s in streams]


class TooLong(na.Agent):
    """Writes ``"12345"``, then ``"678901"`` (past a bound of 10), then ``"67890"``.

    ``catch``: the refused write's ``AgentError`` is caught and recorded as ``write_refused``
    (with the text the message holds then); otherwise it escapes and the attempt crashes.
    """

    name = "too_long"
    restart_policy = TEMPORARY

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        catch = bool(_opts(input).get("catch"))
        async with ctx.message() as m:
            await m.write("12345")
            try:
                await m.write("678901")
            except na.exceptions.AgentError as exc:
                if not catch:
                    raise
                await ctx.emit("write_refused", {"error": str(exc), "text": m.text})
            await m.write("67890")
        return m.text


CRASHED: set[str] = set()
"""Runs whose ``Asker`` crashed already (``crash_after``: once per run)."""


class Asker(na.Agent):
    """Asks each of ``prompts`` in turn; emits and checkpoints ``answered`` after each answer.

    ``schema``: passed with every question. ``gate``: wait for one inbox message before the first
    question (every attempt: inbox messages are not journaled). ``crash_after``: the first
    attempt that has committed that many answers raises (once per run). ``think``: stage a
    thought before each question (``ask`` commits it first). Returns the answers.
    Deterministic (what it commits does not depend on the attempt), so that every attempt
    replays what the earlier ones committed.
    """

    name = "asker"
    restart_policy = FAST

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        opts = _opts(input)
        schema: na.JSON = opts.get("schema")
        crash_after = int(opts.get("crash_after", 0))
        if opts.get("gate"):
            await ctx.receive()
        answers: list[na.JSON] = []
        for i, prompt in enumerate(_ask_prompts(opts)):
            if opts.get("think"):
                await ctx.think(f"about to ask {prompt}")
            answer = await ctx.ask(prompt, schema=schema)
            answers.append(answer)
            await ctx.emit("answered", {"i": i, "input": answer})
            await ctx.checkpoint()
            if i + 1 == crash_after and ctx.run_id not in CRASHED:
                CRASHED.add(ctx.run_id)
                raise RuntimeError("crash after an answer")
        return answers


class AskerBeat(Asker):
    name = "asker_beat"
    liveness = ASK_BEAT


class AskerDeadline(Asker):
    name = "asker_deadline"
    liveness = ASK_DEADLINE


class Hold(na.Agent):
    """Commits ``held``, then (unless ``{"wait": false}``) waits for one inbox message."""

    name = "hold"
    restart_policy = FAST

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.emit("held", {"attempt": ctx.attempt})
        await ctx.checkpoint()
        if _opts(input).get("wait", True):
            await ctx.receive()
        return "released"


# -- threaded twins (same names, blocking code) ------------------------------------------------


class ThreadedStreamText(na.ThreadedAgent):
    name = "stream_text"
    restart_policy = FAST

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        opts = _opts(input)
        tokens = _tokens(opts)
        messages = int(opts.get("messages", 1))
        crash_times = int(opts.get("crash_times", 0))
        ids: list[na.JSON] = []
        for n in range(messages):
            with ctx.message() as m:
                for token in tokens:
                    if opts.get("gate"):
                        ctx.receive()
                    m.write(token)
                if n == messages - 1 and ctx.attempt <= crash_times:
                    raise RuntimeError(f"stream crash {ctx.attempt}")
            ids.append(m.message_id)
            if opts.get("think"):
                ctx.think(f"after message {n}")
                ctx.checkpoint()
        return ids


class ThreadedMultiStream(na.ThreadedAgent):
    name = "multi_stream"
    restart_policy = TEMPORARY

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        opts = _opts(input)
        count, rounds = int(opts.get("count", 3)), int(opts.get("rounds", 2))
        with contextlib.ExitStack() as stack:
            streams = [stack.enter_context(ctx.message()) for _ in range(count)]
            for r in range(rounds):
                for i, s in enumerate(streams):
                    s.write(f"{i}.{r};")
        return [s.message_id for s in streams]


class ThreadedTooLong(na.ThreadedAgent):
    name = "too_long"
    restart_policy = TEMPORARY

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        catch = bool(_opts(input).get("catch"))
        with ctx.message() as m:
            m.write("12345")
            try:
                m.write("678901")
            except na.exceptions.AgentError as exc:
                if not catch:
                    raise
                ctx.emit("write_refused", {"error": str(exc), "text": m.text})
            m.write("67890")
        return m.text


class ThreadedAsker(na.ThreadedAgent):
    name = "asker"
    restart_policy = FAST

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        opts = _opts(input)
        schema: na.JSON = opts.get("schema")
        crash_after = int(opts.get("crash_after", 0))
        if opts.get("gate"):
            ctx.receive()
        answers: list[na.JSON] = []
        for i, prompt in enumerate(_ask_prompts(opts)):
            if opts.get("think"):
                ctx.think(f"about to ask {prompt}")
            answer = ctx.ask(prompt, schema=schema)
            answers.append(answer)
            ctx.emit("answered", {"i": i, "input": answer})
            ctx.checkpoint()
            if i + 1 == crash_after and ctx.run_id not in CRASHED:
                CRASHED.add(ctx.run_id)
                raise RuntimeError("crash after an answer")
        return answers


class ThreadedAskerBeat(ThreadedAsker):
    name = "asker_beat"
    liveness = ASK_BEAT


class ThreadedAskerDeadline(ThreadedAsker):
    name = "asker_deadline"
    liveness = ASK_DEADLINE


class ThreadedHold(na.ThreadedAgent):
    name = "hold"
    restart_policy = FAST

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        ctx.emit("held", {"attempt": ctx.attempt})
        ctx.checkpoint()
        if _opts(input).get("wait", True):
            ctx.receive()
        return "released"


ASYNC_STREAMING: tuple[type[na.types.AgentBase], ...] = (
    StreamText,
    MultiStream,
    TooLong,
    Asker,
    AskerBeat,
    AskerDeadline,
    Hold,
)
THREADED_STREAMING: tuple[type[na.types.AgentBase], ...] = (
    ThreadedStreamText,
    ThreadedMultiStream,
    ThreadedTooLong,
    ThreadedAsker,
    ThreadedAskerBeat,
    ThreadedAskerDeadline,
    ThreadedHold,
)

#: Each test that takes ``kind`` runs with the async agents and with their threaded twins.
STREAMING_BY_KIND: dict[str, tuple[type[na.types.AgentBase], ...]] = {
    "async": ASYNC_STREAMING,
    "threaded": THREADED_STREAMING,
}
