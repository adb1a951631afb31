"""A threaded agent: blocking code (a sync "SDK", CPU work) under the same supervision.

``Summarizer`` calls a blocking function as a tool (fine: it runs in its own pykka thread), hands
CPU-bound work to a worker process with ``ctx.run_in_process``, and cooperates with cancellation
by checking ``ctx.cancelled``. A second run is cancelled while it blocks, to show the rollback.

Run it with ``python examples/threaded_agent.py [--db PATH]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time

import netra_actors as na


def slow_sdk_summarize(text: str, delay: float) -> str:
    """Stands in for a blocking SDK call (an HTTP client, a database driver …)."""
    time.sleep(delay)
    words = text.split()
    return " ".join(words[:6]) + (" …" if len(words) > 6 else "")


def fingerprint(text: str, rounds: int) -> str:
    """CPU-bound work: run it in a process so this thread does not hold the GIL."""
    digest = text.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


class Summarizer(na.ThreadedAgent):
    name = "summarizer"
    liveness = na.policies.LivenessPolicy(heartbeat_timeout=10.0, run_timeout=60.0)

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        text = str(input.get("text", "")) if isinstance(input, dict) else str(input)
        delay = float(input.get("delay", 0.2)) if isinstance(input, dict) else 0.2
        ctx.think(f"Summarizing {len(text.split())} words with a blocking SDK call.")
        summary = ctx.tool("summarize", slow_sdk_summarize, text=text, delay=delay)
        if ctx.cancelled:  # cooperative cancellation: stop doing work nobody wants
            return None
        ctx.think("Fingerprinting the text in a worker process.")
        digest = ctx.run_in_process(fingerprint, text, 20_000)
        ctx.say(f"Summary: {summary} (fingerprint {digest})")
        return {"summary": summary, "fingerprint": digest}


async def main(db_path: str) -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url(db_path), max_threads=4)
    async with na.open_runtime(config, agents=[Summarizer]) as runtime:
        text = "Actors own their state and talk only through messages, one at a time, in order."
        done = await runtime.start_run("reader", "summarizer", {"text": text, "delay": 0.2})
        info = await runtime.wait_run("reader", done)
        print(f"run 1: {info.state.value}, result {info.result}")

        slow = await runtime.start_run("reader", "summarizer", {"text": text, "delay": 2.0})
        subscription = await runtime.subscribe("reader", resume_from=0)
        async for event in subscription:  # wait until the blocking tool call has started
            if event.run_id == slow and event.event == "tool_executing":
                break
        await runtime.cancel_run("reader", slow)
        info = await runtime.wait_run("reader", slow)
        print(f"run 2: {info.state.value} while its thread was blocked in the SDK call")
        stats = runtime.statistics()
        print(f"threads still finishing their blocked call: {stats.threads_abandoned}")

        async for event in runtime.replay("reader"):
            if event.run_id == slow and event.event in ("run_rolled_back", "run_state"):
                print(f"  #{event.seq} {event.event} {dict(event.data)}")


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A threaded (pykka) agent with blocking code.")
    parser.add_argument("--db", help="SQLite file (default: a fresh temporary file)")
    args = parser.parse_args(argv)
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="netra-threaded-"), "threaded.db")
    na.run(main, db)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
