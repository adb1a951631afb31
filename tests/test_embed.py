"""Embedding the runtime in a plain asyncio application, as FastAPI/Starlette/aiohttp would."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import netra_actors as na
from netra_actors.demo_agents import DEMO_AGENTS, demo_metadata


def test_an_asyncio_host_runs_agents_and_keeps_its_own_loop_responsive(tmp_path: Path) -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "embed.db"))
    ticks: list[float] = []

    async def host() -> tuple[na.RunInfo, list[na.Event], int]:
        loop = asyncio.get_running_loop()

        async def ticker() -> None:  # the host's own work keeps running meanwhile
            while True:
                ticks.append(loop.time())
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        async with na.embed(config, agents=DEMO_AGENTS, metadata=[demo_metadata]) as rt:
            sub = await rt.subscribe("alice", resume_from=0)
            run_id = await rt.say("alice", "2 plus 3")
            info = await rt.wait_run("alice", run_id)
            events: list[na.Event] = []
            async for event in sub:
                events.append(event)
                if event.event == "run_state" and event.data["state"] == "completed":
                    break
            sub.close()
            before = len(ticks)
            slow = await rt.start_run("alice", "slow", {"seconds": 0.3})
            assert (await rt.wait_run("alice", slow)).state is na.RunState.COMPLETED
            ticked_during_slow_run = len(ticks) - before
            stats = await rt.statistics()
        tick_task.cancel()
        assert ticked_during_slow_run >= 10  # the host loop kept running its own work
        return info, events, stats.store.events_committed

    info, events, committed = asyncio.run(host())
    assert info.state is na.RunState.COMPLETED
    assert info.result is not None
    assert "5" in info.result["answer"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert committed >= len(events)
    assert {"tool_executing", "tool_completed", "agent_completed"} <= {e.event for e in events}
    with sqlite3.connect(tmp_path / "embed.db") as conn:  # closed cleanly: everything on disk
        assert conn.execute("SELECT count(*) FROM netra_events").fetchone()[0] == committed


def test_embedding_errors_cross_back_as_the_same_exceptions(tmp_path: Path) -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "embed.db"))

    async def host() -> None:
        async with na.embed(config, agents=DEMO_AGENTS, metadata=[demo_metadata]) as rt:
            with pytest.raises(na.exceptions.UnknownAgentError):
                await rt.start_run("alice", "no_such_agent", None)
            with pytest.raises(na.exceptions.UnknownRunError):
                await rt.cancel_run("alice", "r_nope")

    asyncio.run(host())


def test_a_runtime_that_cannot_start_raises_in_the_host(tmp_path: Path) -> None:
    (tmp_path / "not_a_dir").write_text("x")
    config = na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "not_a_dir" / "x.db"))

    async def host() -> None:
        async with na.embed(config):
            pass

    with pytest.raises(na.exceptions.StoreError):
        asyncio.run(host())


def test_after_embed_exits_calls_fail_fast_instead_of_hanging(tmp_path: Path) -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "embed.db"))

    async def host() -> None:
        async with na.embed(config, agents=DEMO_AGENTS, metadata=[demo_metadata]) as rt:
            run_id = await rt.say("alice", "hi")
            await rt.wait_run("alice", run_id)
            replayed = [e.seq async for e in rt.replay("alice")]
            assert replayed == list(range(1, len(replayed) + 1))
            assert (await rt.get_run("alice", run_id)) is not None
            assert (await rt.get_runs("alice", limit=1)).runs[0].run_id == run_id
            await rt.check()
            async with await rt.subscribe("alice", resume_from=0, capacity=100) as sub:
                assert (await sub.receive_batch(1))[0].seq == 1
            slow = await rt.start_run("alice", "slow", {"seconds": 30})
            pending = asyncio.ensure_future(rt.wait_run("alice", slow))
            await asyncio.sleep(0.05)
        # the call in flight when the runtime stopped gets a clear error, not trio.Cancelled
        with pytest.raises(na.exceptions.RuntimeClosedError):
            await asyncio.wait_for(pending, 5)
        with pytest.raises(na.exceptions.RuntimeClosedError):
            await asyncio.wait_for(rt.get_runs("alice"), 5)

    asyncio.run(host())


async def working(rt: na.EmbeddedRuntime, user_id: str, run_id: str) -> None:
    """Wait until the ``slow`` run has committed its first thought (it is running)."""
    async with await rt.subscribe(user_id, resume_from=0) as sub:
        async for event in sub:
            if event.run_id == run_id and event.event == "agent_thinking":
                return


def test_drain_lets_live_runs_finish_and_takes_no_new_users(tmp_path: Path) -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "embed.db"))

    async def host() -> tuple[na.RunInfo | None, float]:
        loop = asyncio.get_running_loop()
        async with na.embed(config, agents=DEMO_AGENTS, metadata=[demo_metadata]) as rt:
            slow = await rt.start_run("alice", "slow", {"seconds": 0.5})
            await working(rt, "alice", slow)
            start = loop.time()
            await rt.drain(10)
            took = loop.time() - start
            with pytest.raises(na.exceptions.RuntimeClosedError, match="shutting down"):
                await rt.start_run("bob", "demo", "hi")
            info = await rt.get_run("alice", slow)
        return info, took

    info, took = asyncio.run(host())
    assert info is not None
    assert info.state is na.RunState.COMPLETED  # it finished: it was not cancelled
    assert took < 5  # drain returned when the last run ended, not at its timeout


def test_drain_hands_runs_still_live_at_its_timeout_over(tmp_path: Path) -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "embed.db"))

    async def host() -> na.RunInfo | None:
        async with na.embed(config, agents=DEMO_AGENTS, metadata=[demo_metadata]) as rt:
            slow = await rt.start_run("alice", "slow", {"seconds": 30})
            await working(rt, "alice", slow)
            await asyncio.wait_for(rt.drain(0.2), 10)
            return await rt.get_run("alice", slow)

    info = asyncio.run(host())
    assert info is not None
    # durable runs: no run ends because its node drains; the next owner resumes it
    assert info.state is na.RunState.RUNNING, info
    assert info.reason is None
