"""``netra-actors serve`` plus one test-only agent: run as ``python streamserver.py serve …``.

Everything is the real command (``netra_actors._cli.main``: the same flags, gateway, runtime,
demo agents and SQLite store) with one more agent, ``drip``, for tests that need a message that
is *still streaming* at a moment the test picks:

* ``drip``: ``{"parts": ["Hel", "lo"]}`` — opens a message, writes each part, then asks
  (``input_requested``, prompt ``"more?"``) *with the message still open*; the answer's text is
  written as the last part and the message is committed. So while the run waits for its
  ``send_input``, the user's partial message is exactly the parts, deterministically.
"""

from __future__ import annotations

import sys

import netra_actors._cli as cli
from netra_actors import Agent, AgentContext
from netra_actors._values import JSON
from netra_actors.demo_agents import DEMO_AGENTS, input_text


class DripAgent(Agent):
    """Streams its parts, waits for an answer with the message open, then finishes it."""

    name = "drip"

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        parts = ["Hel", "lo"]
        if isinstance(input, dict) and isinstance(input.get("parts"), list):
            parts = [str(p) for p in input["parts"]]
        async with ctx.message() as m:
            for part in parts:
                await m.write(part)
            await m.write(input_text(await ctx.ask("more?")))
        return {"text": m.text}


def main() -> int:
    setattr(cli, "DEMO_AGENTS", (*DEMO_AGENTS, DripAgent))  # noqa: B010
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
