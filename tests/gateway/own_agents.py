"""Agents of "your own" for the tests of ``--agents`` (``tests/gateway/test_own_agents.py``):
loaded by name, ``tests.gateway.own_agents:AGENTS``, as a user's module would be."""

from __future__ import annotations

from netra_actors import JSON, Agent, AgentContext


class Greet(Agent):
    """Answers with a greeting."""

    name = "greet"
    description = "Greets whoever its input names."
    example_input = {"who": "world"}

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        who = input.get("who", "you") if isinstance(input, dict) else input
        text = f"Hello, {who}!"
        await ctx.say(text)
        return {"greeting": text}


class Shout(Agent):
    """Answers with its input in capitals."""

    name = "shout"

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        text = str(input).upper()
        await ctx.say(text)
        return text


AGENTS = [Greet, Shout]


def make_agents() -> list[type[Agent]]:
    """A callable that returns the list (``--agents tests.gateway.own_agents:make_agents``)."""
    return [Shout]


def broken_factory() -> list[type[Agent]]:
    raise RuntimeError("no agents today\nsecond line")


NOT_AGENTS = [int]
SAME_NAME = [Greet, Greet]
ONE_STRING = "greet"
GREET_ONLY = [Greet]
