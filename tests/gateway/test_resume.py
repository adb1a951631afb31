"""Exact resume over real sockets: replay then live with no gap or duplicate at the seam, and
across ``kill -9`` of the server process followed by a restart on the same SQLite file."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from gwkit import Client, Server, assert_gapless, event_is, run_async, seq_is


@run_async
async def test_resume_replays_exactly_then_continues_live(server: Server, user: str) -> None:
    live = await Client.open(server, user)
    first = await live.say("before the resume")
    await live.wait_run_end(first)
    head = live.events[-1]["seq"]
    # a slow run keeps committing while sockets resume from every point of the history
    slow = await live.start("slow", {"seconds": 3})
    resumed = [await Client.open(server, user, resume_from=k) for k in (0, 1, head // 2, head)]
    for client, k in zip(resumed, (0, 1, head // 2, head), strict=True):
        assert client.welcome is not None
        assert client.welcome["head_seq"] >= head
        await client.wait_run_end(slow)
        await live.wait_run_end(slow)
        end = live.events[-1]["seq"]
        await client.wait_for(seq_is(end))
        assert_gapless(client.events, start=k + 1)
        assert client.events == live.events[k:]


@run_async
async def test_resume_from_head_sends_only_new_events(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    run_id = await client.say("hello")
    await client.wait_run_end(run_id)
    head = client.events[-1]["seq"]
    again = await Client.open(server, user, resume_from=head)
    assert again.welcome is not None
    assert again.welcome["head_seq"] == head
    assert (await again.command({"type": "ping", "id": "p"}))["type"] == "pong"
    assert again.events == []
    # without resume_from, only events committed after welcome
    fresh = await Client.open(server, user)
    assert fresh.welcome is not None
    assert fresh.welcome["head_seq"] == head
    run_2 = await client.say("again")
    await fresh.wait_run_end(run_2)
    assert fresh.events[0]["seq"] == head + 1
    assert_gapless(fresh.events, start=head + 1)


def test_kill_9_restart_and_resume_lose_nothing(
    make_server: Callable[..., Server], user: str
) -> None:
    # The restarted server is a new node: it proves the killed one gone (its lock beside the
    # file) and takes the user over at once, resuming the runs that were live (issue 18).
    srv = make_server("--lease-ttl", "2")

    @run_async
    async def scenario() -> None:
        client = await Client.open(srv, user)
        done = await client.say("a finished run")
        await client.wait_run_end(done)
        slow_1 = await client.start("slow", {"seconds": 60})
        slow_2 = await client.start("slow", {"seconds": 60})
        for run_id in (slow_1, slow_2):
            await client.wait_for(event_is(run_id, "agent_thinking"))
        seen = len(client.events)
        last = client.events[-1]["seq"]
        srv.kill()
        await client.closed(within=10)
        # (events read after the kill were committed before it; they count as received)
        last = client.events[-1]["seq"]
        assert len(client.events) >= seen
        await asyncio.to_thread(srv.start)
        resumed = await Client.open(srv, user, resume_from=last)
        for run_id in (slow_1, slow_2):
            await resumed.wait_for(functools.partial(_recovered, run_id))
            await resumed.command({"type": "cancel_run", "run_id": run_id, "id": "c" + run_id})
            assert await resumed.wait_run_end(run_id) == "cancelled"
            rollbacks = [e for e in resumed.run_events(run_id) if e["event"] == "run_rolled_back"]
            assert [r["data"]["reason"] for r in rollbacks] == ["lost", "cancelled"]
            assert rollbacks[0]["data"]["will_restart"] is True
        assert_gapless(client.events + resumed.events)
        # a full replay equals what the two sockets saw together
        replay = await Client.open(srv, user, resume_from=0)
        end = resumed.events[-1]["seq"]
        await replay.wait_for(lambda e: e["seq"] == end)
        assert replay.events == client.events + resumed.events
        runs = await replay.command({"type": "get_runs", "id": "g"})
        states = {r["run_id"]: r["state"] for r in runs["runs"]}
        assert states == {done: "completed", slow_1: "cancelled", slow_2: "cancelled"}
        # and the server works on: a new run completes
        new = await resumed.say("after the crash")
        assert await resumed.wait_run_end(new) == "completed"

    scenario()


def _recovered(run_id: str, e: dict[str, Any]) -> bool:
    return bool(
        e["run_id"] == run_id
        and e["event"] == "run_state"
        and e["data"].get("reason") == "recovered"
    )
