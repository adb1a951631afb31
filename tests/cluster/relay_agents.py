"""Agents the relay tests serve (``--agents relay_agents:AGENTS``): the demo agents, plus one
that streams big pieces and one that holds its message open across a question."""

from __future__ import annotations

import netra_actors as na
from netra_actors.demo_agents import CrashyAgent, DemoAgent


class BigTextAgent(na.Agent):
    """Streams ``pieces`` pieces of ``size`` code points (two bytes each in UTF-8), then commits:
    every piece is bigger than one PostgreSQL notification."""

    name = "big_text"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        assert isinstance(input, dict)
        async with ctx.message() as m:
            for i in range(int(input["pieces"])):
                await m.write(chr(0xE0 + i % 16) * int(input["size"]))
        return None


class HoldAgent(na.Agent):
    """Streams a first part, asks (the message stays open), streams the answer, commits."""

    name = "hold"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        async with ctx.message() as m:
            await m.write("first part, ")
            await m.write("still first; ")
            answer = await ctx.ask("go on?")
            assert isinstance(answer, dict)
            await m.write("then " + str(answer.get("text")))
        return None


AGENTS = [DemoAgent, CrashyAgent, BigTextAgent, HoldAgent]
