"""Two nodes on one SQLite file answer forwarded commands by hints, not by polling
(``_cluster_hints.py``): real runtimes, real datagrams on ``127.0.0.1``, a real SQLite file.

Both nodes read the inbox and the replies only every ``cluster_safety_poll`` (30 s here) unless a
hint wakes them: the commands answered within 10 s can only have gone by the hints (the posting
node's ``inbox`` hint to the owner, the owner's ``reply`` hint back)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import trio

import netra_actors as na
from netra_actors._store import SqlStore
from netra_actors.testing import guest_test

SAFETY = 30.0
WITHIN = 10.0


class Waits(na.Agent):
    """Waits for a message sent to the run, then answers with it."""

    name = "waits"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        return await ctx.receive()


class Echo(na.Agent):
    name = "echo"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        return input


def config(db: Path, node: str) -> na.RuntimeConfig:
    return na.RuntimeConfig(
        database_url=na.sqlite_url(db), node_id=node, cluster_safety_poll=SAFETY
    )


async def announced(directory: Path, n: int) -> None:
    """Until ``n`` nodes announced their relay's port beside the file."""
    with trio.fail_after(WITHIN):
        while len([p for p in os.listdir(directory) if not p.startswith(".")]) < n:  # noqa: ASYNC110
            await trio.sleep(0.01)


@guest_test()
async def test_commands_through_another_node_are_answered_well_before_the_safety_poll(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hints.db"
    agents = [Waits, Echo]
    async with na.open_runtime(config(db, "a"), agents=agents) as a:
        user = "hinted-user"
        waiting = await a.start_run(user, "waits")  # node a owns the user from now on
        async with na.open_runtime(config(db, "b"), agents=agents) as b:
            await announced(Path(f"{db}.relay"), 2)
            started = trio.current_time()
            with trio.fail_after(WITHIN):
                await b.send_to_run(user, waiting, "through b")  # forwarded to a
                echoed = await b.start_run(user, "echo", "hello")  # its answer: the run id
                assert (await a.wait_run(user, waiting)).state == na.RunState.COMPLETED
                assert (await a.wait_run(user, echoed)).state == na.RunState.COMPLETED
            assert trio.current_time() - started < SAFETY
            ca, cb = a._deps.cluster, b._deps.cluster
            assert ca.hints is not None
            assert cb.hints is not None
            assert cb.hints.sent >= 2
            assert ca.hints.sent >= 2
            assert ca.hints.refused == cb.hints.refused == 0
            assert cb.pending == 0
            sa, sb = a.statistics(), b.statistics()  # what /metrics shows
            assert (sa.hints_sent, sb.hints_sent) == (ca.hints.sent, cb.hints.sent)
            assert sa.relay_refused == sb.relay_refused == sa.relay_dropped == 0


@guest_test()
async def test_a_follower_that_takes_over_reads_its_own_forwarded_command_at_once(
    tmp_path: Path,
) -> None:
    """The owner is gone once the command was forwarded (a store that holds the user's lease
    stops renewing it): the command waits in the inbox until the follower takes the lease, and
    its new owner reads the inbox then (``_roles.py``), not at the next safety poll."""
    db = tmp_path / "takeover.db"
    user = "taken-over"
    gone = await SqlStore.open(
        na.RuntimeConfig(database_url=na.sqlite_url(db), node_id="gone", lease_ttl=2.0)
    )
    try:
        assert await gone.acquire(user) is not None
        async with na.open_runtime(config(db, "b"), agents=[Echo]) as b:
            started = trio.current_time()
            with trio.fail_after(WITHIN):
                async with trio.open_nursery() as nursery:
                    runs: list[str] = []

                    async def start() -> None:
                        runs.append(await b.start_run(user, "echo", "hello"))

                    nursery.start_soon(start)
                    while b.statistics().forwarded_pending == 0:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    gone._leases.next_renewal = math.inf  # as if paused: its lease expires
                assert (await b.wait_run(user, runs[0])).state == na.RunState.COMPLETED
            assert trio.current_time() - started < SAFETY
            assert b.statistics().forwarded_pending == 0
    finally:
        await gone.aclose()


class Streams(na.Agent):
    """Streams one message in two pieces; the message commits with the run's end."""

    name = "streams"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        async with ctx.message() as m:
            await m.write("the first piece, ")
            await m.write("the last piece")
        return None


@guest_test()
async def test_a_message_commits_after_its_last_deltas_left_by_the_relay(tmp_path: Path) -> None:
    """The owner's commit of a streamed message waits for the relay to send its deltas, so the
    other nodes never get the commit first (a delta after its message's commit is dropped
    there): here a relay 0.3 s slower than the commit."""
    db = tmp_path / "order.db"
    async with na.open_runtime(config(db, "a"), agents=[Streams]) as a:
        relay = a._deps.cluster.relay
        assert relay is not None
        left: list[float] = []

        async def slow_send(payloads: list[str]) -> None:
            await trio.sleep(0.3)
            left.append(time.time())

        relay.send = slow_send  # type: ignore[method-assign]
        user = "streaming-user"
        sub = await a.subscribe(user)
        run_id = await a.start_run(user, "streams")
        assert (await a.wait_run(user, run_id)).state == na.RunState.COMPLETED
        committed = [e for e in await a.read_events(user, 0, 100) if e.event == "message"]
        assert len(committed) == 1
        assert left  # the deltas left by the relay …
        assert left[-1] <= committed[0].ts  # … before the message was handed to the writer
        sub.close()
