"""Explicit failure, and the bounds that keep one user from exhausting the process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import netra_actors as na
from netra_actors._store import SqlStore
from netra_actors.testing import MemoryStore, guest_test


class GivesUp(na.Agent):
    name = "gives_up"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.think("checking the request")  # staged, then rolled back
        raise na.exceptions.RunFailedError("the request names an unknown city")


class ThreadedGivesUp(na.ThreadedAgent):
    name = "threaded_gives_up"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        ctx.think("checking the request")
        raise na.exceptions.RunFailedError("the request names an unknown city")


class Big(na.Agent):
    name = "big"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        try:
            await ctx.emit("blob", {"x": "y" * 2000})
        except ValueError as exc:
            return str(exc)
        return "accepted"


class Idle(na.Agent):
    name = "idle"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        return await ctx.receive()


def cfg(**changes: Any) -> na.RuntimeConfig:
    return na.RuntimeConfig(**changes)


@pytest.mark.parametrize("agent", ["gives_up", "threaded_gives_up"])
@guest_test()
async def test_run_failed_error_ends_the_run_without_restart(tmp_path: Path, agent: str) -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "x.db"))
    async with na.open_runtime(config, agents=[GivesUp, ThreadedGivesUp]) as rt:
        run_id = await rt.start_run("alice", agent, None)
        info = await rt.wait_run("alice", run_id)
        events = [e async for e in rt.replay("alice")]
    assert info.state is na.RunState.FAILED
    assert info.attempt == 1
    rollbacks = [e.data for e in events if e.event == "run_rolled_back"]
    assert len(rollbacks) == 1
    assert rollbacks[0]["reason"] == "error"
    assert rollbacks[0]["will_restart"] is False
    assert "unknown city" in rollbacks[0]["error"]
    assert not any(e.event == "agent_thinking" for e in events)


async def test_event_and_input_sizes_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with na.open_runtime(cfg(max_event_bytes=1000), agents=[Big], store=MemoryStore()) as rt:
        info = await rt.wait_run("alice", await rt.start_run("alice", "big", None))
        assert "more than the limit of 1000" in str(info.result)
        with pytest.raises(na.exceptions.TooLargeError) as exc:
            await rt.start_run("alice", "big", "z" * 2000)
        assert exc.value.code == "too_large"


async def test_live_runs_per_user_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    config = cfg(max_live_runs_per_user=3)
    async with na.open_runtime(config, agents=[Idle], store=MemoryStore()) as rt:
        ids = [await rt.start_run("alice", "idle", None) for _ in range(3)]
        with pytest.raises(na.exceptions.MailboxFullError, match="live runs"):
            await rt.start_run("alice", "idle", None)
        await rt.start_run("bob", "idle", None)  # other users are not affected
        await rt.send_to_run("alice", ids[0], "done")
        await rt.wait_run("alice", ids[0])
        await rt.start_run("alice", "idle", None)  # room again


async def test_active_sessions_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with na.open_runtime(cfg(max_sessions=2, idle_timeout=10), store=MemoryStore()) as rt:
        await rt.get_runs("a")
        await rt.get_runs("b")
        with pytest.raises(na.exceptions.MailboxFullError, match="active users"):
            await rt.get_runs("c")
        await trio.sleep(11)  # a and b passivate
        await rt.get_runs("c")


async def test_waiters_per_run_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with na.open_runtime(
        cfg(max_waiters_per_run=2), agents=[Idle], store=MemoryStore()
    ) as rt:
        run_id = await rt.start_run("alice", "idle", None)
        outcomes: list[str] = []

        async def wait() -> None:
            try:
                await rt.wait_run("alice", run_id)
                outcomes.append("ended")
            except na.exceptions.MailboxFullError:
                outcomes.append("refused")

        async with trio.open_nursery() as n:
            for _ in range(3):
                n.start_soon(wait)
            await trio.sleep(1)
            await rt.send_to_run("alice", run_id, "done")
    assert sorted(outcomes) == ["ended", "ended", "refused"]


@guest_test()
async def test_sqlite_durability_is_configurable(tmp_path: Path) -> None:
    for level, code in (("NORMAL", 1), ("FULL", 2)):
        config = na.RuntimeConfig(
            database_url=na.sqlite_url(tmp_path / f"{level}.db"), sqlite_synchronous=level
        )
        store = await SqlStore.open(config)
        try:
            value = await store.run_in_reader(
                lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]
            )
        finally:
            await store.aclose()
        assert value == code
    with pytest.raises(na.exceptions.ConfigError):
        na.RuntimeConfig(sqlite_synchronous="OFF")


async def test_gc_threshold_is_applied_while_open_and_restored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    import gc

    before = gc.get_threshold()
    async with na.open_runtime(cfg(gc_threshold=(12_345, 11, 12)), store=MemoryStore()):
        assert gc.get_threshold() == (12_345, 11, 12)
    assert gc.get_threshold() == before
    async with na.open_runtime(cfg(gc_threshold=None), store=MemoryStore()):
        assert gc.get_threshold() == before
    with pytest.raises(na.exceptions.ConfigError):
        cfg(gc_threshold=(1, 2))
