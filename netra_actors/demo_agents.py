"""The agents of the example chat server (protocol v1, "Example server contract").

* ``demo`` (the default): thinks, calls a local tool, streams its answer (provisional deltas,
  a word every :data:`TOKEN_PAUSE` seconds, then one committed ``message``), completes.
* ``crashy``: ``{"crash_times": N}`` — stages events and rows, then raises, on each of its first N
  attempts; succeeds on attempt N+1. Demonstrates rollback and supervised restart. With
  ``"stream": true`` each attempt also streams part of a message before it raises (the rollback
  retracts it); the successful attempt streams its answer and commits it.
* ``slow``: ``{"seconds": S}`` — runs S seconds, heartbeating and thinking about once a second.
* ``ask``: asks the user a question (``input_requested``), waits for the answer (``send_input``)
  and answers with a message containing the answer's text.

They are ordinary agents: read them as examples of the agent API (``docs/agents.md``).
"""

from __future__ import annotations

import json
import math
import os
import re

import trio
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, insert

from ._agent import Agent
from ._context import AgentContext
from ._message_stream import MessageStream
from ._values import JSON

__all__ = ["DEMO_AGENTS", "demo_metadata"]

#: Tables the demo agents write to (created by the example server at start).
demo_metadata = MetaData()

notes = Table(
    "demo_notes",
    demo_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(128), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("text", String(2000), nullable=False),
    Column("value", Float, nullable=True),
)

_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")


def _tokens(text: str) -> list[str]:
    """``text`` cut into word-sized pieces (each keeps its trailing space), as a model streams."""
    pieces = re.findall(r"\S+\s*|\s+", text)
    return pieces if len(pieces) >= 2 else [text[: len(text) // 2], text[len(text) // 2 :]]


TOKEN_PAUSE = 0.04
"""Seconds between two streamed pieces: a model's pace (25 pieces a second), slow enough to watch
the answer arrive, quick enough that a demo run takes well under two seconds."""

TOKEN_PAUSE_ENV = "NETRA_DEMO_TOKEN_PAUSE"
"""An environment variable that sets another pace, in seconds (the test suite streams faster)."""


def token_pause() -> float:
    """Seconds between two streamed pieces: ``$NETRA_DEMO_TOKEN_PAUSE``, else :data:`TOKEN_PAUSE`."""
    value = os.environ.get(TOKEN_PAUSE_ENV, "")
    try:
        pause = float(value)
    except ValueError:
        return TOKEN_PAUSE
    return pause if 0 <= pause <= 10 else TOKEN_PAUSE


async def stream_pieces(m: MessageStream, text: str) -> None:
    """Write ``text`` to ``m`` a word at a time, pausing between words."""
    pause = token_pause()
    for n, piece in enumerate(_tokens(text)):
        if n:
            await trio.sleep(pause)
        await m.write(piece)


async def stream_message(ctx: AgentContext, text: str) -> None:
    """Stream ``text`` as an assistant message, a word at a time, then commit it."""
    async with ctx.message() as m:
        await stream_pieces(m, text)


def word_stats(text: str) -> dict[str, JSON]:
    """The demo's local tool: counts words and sums the numbers in a text."""
    numbers = [float(n) for n in _NUMBERS.findall(text)]
    return {
        "words": len(text.split()),
        "characters": len(text),
        "numbers": numbers,
        "sum": math.fsum(numbers),
    }


class DemoAgent(Agent):
    """Thinks, calls the ``word_stats`` tool, answers with a message, completes."""

    name = "demo"
    description = "Input is the text to read (any JSON value)."
    example_input = "Add 2 and 40, please."

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        text = input if isinstance(input, str) else str(input)
        await ctx.think(f"Reading your message ({len(text)} characters).")
        await ctx.checkpoint()
        stats = await ctx.tool("word_stats", word_stats, text=text)
        await ctx.think("Composing an answer from the tool's result.")
        answer = f"You wrote {stats['words']} word(s) and {stats['characters']} character(s)"
        if stats["numbers"]:
            answer += f"; the numbers in it add up to {stats['sum']:g}"
        await stream_message(ctx, answer + ".")  # commits what is staged, with the message
        # The row goes with the run's last unit (agent_completed, completing): a row exists
        # exactly for the attempts that completed.
        await ctx.stage(
            insert(notes).values(
                user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt, text=text[:2000]
            )
        )
        return {"answer": answer + ".", "stats": stats}


class CrashyAgent(Agent):
    """Crashes on its first ``crash_times`` attempts (after staging work), then succeeds.

    With ``"stream": true`` every attempt streams before it raises or answers.
    """

    name = "crashy"
    description = (
        "Crashes on its first crash_times attempts, then succeeds; each crash is rolled back "
        "(with stream, the text it streamed is retracted)."
    )
    example_input = {"crash_times": 2, "stream": True}

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        crash_times = 1
        stream = False
        if isinstance(input, dict):
            if isinstance(input.get("crash_times"), int):
                crash_times = max(0, input["crash_times"])
            stream = input.get("stream") is True
        await ctx.think(f"Attempt {ctx.attempt}: staging work.")
        row = insert(notes).values(
            user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt, text="staged"
        )
        if ctx.attempt <= crash_times or not stream:
            await ctx.stage(row)  # (a streamed answer stages its row after it, below)
        if ctx.attempt <= crash_times:
            if stream:  # left open by the exception: the rollback retracts it
                async with ctx.message() as m:
                    await stream_pieces(m, f"Attempt {ctx.attempt} is about to crash…")
                    raise RuntimeError(
                        f"crashy crashed on purpose mid-stream (attempt {ctx.attempt} of "
                        f"{crash_times})"
                    )
            raise RuntimeError(
                f"crashy crashed on purpose (attempt {ctx.attempt} of {crash_times})"
            )
        answer = f"Succeeded on attempt {ctx.attempt}."
        if stream:
            await stream_message(ctx, answer)  # commits the thinking with the message
            await ctx.stage(row)  # the row goes with the last unit, as without streaming
        else:
            await ctx.say(answer)
        return {"attempts": ctx.attempt}


class SlowAgent(Agent):
    """Runs ``seconds`` seconds, heartbeating and thinking about once per second."""

    name = "slow"
    description = "Thinks about once a second for the given seconds; try cancelling it."
    example_input = {"seconds": 5}

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        seconds = 5.0
        if isinstance(input, dict) and isinstance(input.get("seconds"), int | float):
            seconds = max(0.0, min(float(input["seconds"]), 3600.0))
        start = trio.current_time()
        tick = 0
        while (elapsed := trio.current_time() - start) < seconds:
            tick += 1
            await ctx.think(f"Working… {elapsed:.0f}s of {seconds:g}s")
            await ctx.checkpoint()
            await trio.sleep(min(1.0, seconds - elapsed))
        await ctx.say(f"Done after {seconds:g}s.")
        return {"seconds": seconds, "ticks": tick}


def input_text(value: JSON) -> str:
    """The text of an answer: a string, or the ``text`` of ``{"text": …}``, else its JSON."""
    if isinstance(value, str):
        return value
    text = value.get("text") if isinstance(value, dict) else None
    if isinstance(text, str):
        return text
    return json.dumps(value, ensure_ascii=False)


MAX_ANSWER_CHARS = 4000
"""``ask`` quotes at most this much of the answer."""


class AskAgent(Agent):
    """Asks the user a question, waits for the answer (``send_input``), answers with it.

    ``input``: the question to ask (a string or ``{"prompt": …}``); a default one otherwise.
    """

    name = "ask"
    description = "Asks you the question in its input and waits: answer in its card."
    example_input = "What should I answer?"

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        prompt = "What should I answer?"
        if isinstance(input, str) and input.strip():
            prompt = input
        elif isinstance(input, dict) and isinstance(input.get("prompt"), str):
            prompt = input["prompt"]
        answer = input_text(await ctx.ask(prompt))
        await ctx.think(f"Got an answer ({len(answer)} characters).")
        text = f"You answered: {answer[:MAX_ANSWER_CHARS]}"
        await stream_message(ctx, text)
        return {"prompt": prompt, "answer": answer}


class BrowserToolAgent(Agent):
    """Calls a tool of the client (an AG-UI frontend tool, ``ctx.client_tool``), waits for its
    result, answers with it.

    ``input``: ``{"tool": name, "args": {…}}``; else one of the tools the client offered
    (``ctx.client_tools()``, an AG-UI request's ``tools``): the one the message names, or the
    first; else the tool named by the message; ``get_time`` otherwise.
    """

    name = "browser"
    description = "Calls a tool of your AG-UI client (a frontend tool) and answers with its result."
    example_input = {"tool": "get_time", "args": {}}

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        tool: str = "get_time"
        args: dict[str, JSON] = {}
        offered = [t.name for t in await ctx.client_tools()]
        if isinstance(input, dict):
            tool = str(input.get("tool") or tool)
            args = input["args"] if isinstance(input.get("args"), dict) else {}
        elif offered:
            named = [name for name in offered if isinstance(input, str) and name in input]
            tool = (named or offered)[0]
        elif isinstance(input, str) and input.strip():
            tool = input.strip()
        result = input_text(await ctx.client_tool(tool, args))
        text = f"Your {tool} says: {result[:MAX_ANSWER_CHARS]}"
        await stream_message(ctx, text)
        return {"tool": tool, "result": result}


#: The agents the example server registers, default first.
DEMO_AGENTS: tuple[type[Agent], ...] = (
    DemoAgent,
    CrashyAgent,
    SlowAgent,
    AskAgent,
    BrowserToolAgent,
)
