"""Console demo: the runtime on a SQLite file, a demo agent with a tool call, and a crashing agent
that recovers — printing the committed event stream as it is delivered.

Run it with ``./run demo`` or ``python examples/console_demo.py [--db PATH]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import trio

import netra_actors as na
from netra_actors.demo_agents import DEMO_AGENTS, demo_metadata


def describe(event: na.Event) -> str:
    """One line per event, as a user would like to read it."""
    d = event.data
    match event.event:
        case "run_state":
            extra = f" ({d['reason']})" if d.get("reason") else ""
            return f"state {d.get('previous') or '∅'} → {d['state']}{extra}"
        case "run_rolled_back":
            again = "will restart" if d["will_restart"] else "no restart"
            return f"ROLLED BACK attempt {d['attempt']} [{d['reason']}] {d['error']} — {again}"
        case "tool_executing":
            return f"tool {d['tool']}({d['args']}) …"
        case "tool_completed":
            outcome = d.get("result", d.get("error"))
            return f"tool {d['tool']} → {outcome}"
        case "message":
            return f"{d['role']}: {d['text']}"
        case "agent_thinking":
            return f"thinking: {d['text']}"
        case _:
            return f"{event.event} {dict(d)}"


async def main(db_path: str) -> None:
    config = na.RuntimeConfig(
        database_url=na.sqlite_url(db_path),
        restart=na.policies.RestartPolicy(max_restarts=3, backoff_initial=0.05),
    )
    async with na.open_runtime(config, agents=DEMO_AGENTS, metadata=[demo_metadata]) as runtime:
        head = (await runtime.get_runs("demo-user")).head_seq
        subscription = await runtime.subscribe("demo-user", resume_from=head)
        print(f"netra_actors console demo — store: {db_path} (user 'demo-user', head seq {head})")

        async def show() -> None:
            async for event in subscription:
                run = event.run_id[-6:] if event.run_id else "-"
                print(f"  #{event.seq:<4} run …{run}  {describe(event)}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(show)
            demo = await runtime.say("demo-user", "Add 2 and 40, please.")
            crashy = await runtime.start_run("demo-user", "crashy", {"crash_times": 2})
            for run_id in (demo, crashy):
                info = await runtime.wait_run("demo-user", run_id)
                print(
                    f"run …{run_id[-6:]} ({info.agent}) ended {info.state.value} "
                    f"after {info.attempt} attempt(s); result: {info.result}"
                )
            await trio.sleep(0.2)  # let the last events print
            nursery.cancel_scope.cancel()
        stats = runtime.statistics()
        print(
            f"committed {stats.store.events_committed} events in {stats.store.batches} group "
            f"commits; {stats.rollbacks} rollbacks, {stats.restarts} restarts"
        )


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", help="SQLite file (default: a fresh temporary file)")
    args = parser.parse_args(argv)
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="netra-demo-"), "demo.db")
    na.run(main, db)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
