"""``netra-actors serve`` with test-only runtime settings: run as ``python relserver.py serve …``.

Everything is the real command (``netra_actors._cli.main``: the same flags, gateway, runtime,
demo agents and SQLite store) except two things the CLI has no flag for:

* ``$NETRA_TEST_RUNTIME`` (a JSON object) overrides fields of the ``RuntimeConfig`` the command
  builds, e.g. ``{"idle_timeout": 2}`` so that the soak test sees sessions passivate, or
  ``{"busy_timeout": 1}``;
* one more agent, ``chatty``: ``{"steps": N}`` — N times: think, stage a ``demo_notes`` row,
  checkpoint, with no pause in between (a run that commits as fast as the store lets it, for
  cancellation racing a commit). Each committed unit holds exactly one ``step i`` event and one
  ``step i`` row, so a half-applied unit shows in the database.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from sqlalchemy import insert

import netra_actors._cli as cli
from netra_actors import Agent, AgentContext, RuntimeConfig
from netra_actors._values import JSON
from netra_actors.demo_agents import DEMO_AGENTS, notes


class ChattyAgent(Agent):
    """Commits one small unit after another, as fast as it can."""

    name = "chatty"

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        steps = 50
        if isinstance(input, dict) and isinstance(input.get("steps"), int):
            steps = max(0, min(int(input["steps"]), 100_000))
        for i in range(steps):
            await ctx.think(f"step {i}")
            await ctx.stage(
                insert(notes).values(
                    user_id=ctx.user_id, run_id=ctx.run_id, attempt=ctx.attempt, text=f"step {i}"
                )
            )
            await ctx.checkpoint()
        return {"steps": steps}


def main() -> int:
    overrides: dict[str, Any] = json.loads(os.environ.get("NETRA_TEST_RUNTIME") or "{}")

    def runtime_config(**kwargs: Any) -> RuntimeConfig:
        return RuntimeConfig(**{**kwargs, **overrides})

    setattr(cli, "RuntimeConfig", runtime_config)  # noqa: B010
    setattr(cli, "DEMO_AGENTS", (*DEMO_AGENTS, ChattyAgent))  # noqa: B010
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
