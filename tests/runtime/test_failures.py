"""Failures around the supervisor itself: a store that stays down, limits, and query scoping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing
from helpers import make_config
from runtime_agents import ALL_AGENTS, test_metadata

import netra_actors as na
from netra_actors._store import SqlStore
from netra_actors._uow import UnitOfWork
from netra_actors.testing import MemoryStore, guest_test


class Chatty(na.Agent):
    name = "chatty"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        for i in range(int(input) if isinstance(input, int) else 5):
            await ctx.think(f"{i}")
        await ctx.checkpoint()
        return "ok"


class Waits(na.Agent):
    name = "waits"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.think("started")
        await ctx.checkpoint()
        await trio.sleep_forever()


async def test_a_store_that_stays_down_fails_the_session_not_the_runtime(
    autojump_clock: trio.testing.MockClock,
) -> None:
    down = False

    def fail(user: str, unit: UnitOfWork) -> BaseException | None:
        return OSError("database unreachable") if down and user == "alice" else None

    store = MemoryStore(fail_when=fail)
    config = na.RuntimeConfig(idle_timeout=600)
    async with na.open_runtime(config, agents=[Waits, Chatty], store=store) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "waits", None)
        with trio.fail_after(5):
            while "started" not in [e.data.get("text") for e in await sub.receive_batch()]:
                pass
        down = True
        waiter_error: list[BaseException] = []

        async def wait_for_it() -> None:
            try:
                await rt.wait_run("alice", run_id)
            except na.exceptions.RuntimeClosedError as exc:
                waiter_error.append(exc)

        async with trio.open_nursery() as n:
            n.start_soon(wait_for_it)
            await trio.lowlevel.checkpoint()
            with pytest.raises(na.exceptions.StoreError):
                await rt.cancel_run("alice", run_id)  # the rollback notice cannot be committed
        # the waiter was answered (not left hanging) when the supervisor stopped
        assert len(waiter_error) == 1
        with trio.fail_after(0.001), pytest.raises(na.SubscriptionClosedError) as closed:
            await sub.receive_batch()  # at once: the supervisor stopped when the commit failed
        assert closed.value.reason == "session_failed"
        assert not rt.is_active("alice")
        # everyone else is served meanwhile
        other = await rt.start_run("bob", "chatty", 3)
        assert (await rt.wait_run("bob", other)).state is na.RunState.COMPLETED
        # the store comes back: the next use re-activates alice and recovers the run
        down = False
        info = await rt.wait_run("alice", run_id)
    assert info.state is na.RunState.DEAD
    alice = store.events["alice"]
    assert [e.seq for e in alice] == list(range(1, len(alice) + 1))
    assert [e.event for e in alice[-2:]] == ["run_rolled_back", "run_state"]


async def test_staging_past_the_limit_is_a_typed_error_and_a_rollback(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    config = na.RuntimeConfig(
        max_staged_events=10, restart=na.policies.RestartPolicy(restart="temporary")
    )
    async with na.open_runtime(config, agents=[Chatty], store=store) as rt:
        run_id = await rt.start_run("alice", "chatty", 50)
        info = await rt.wait_run("alice", run_id)
    assert info.state is na.RunState.FAILED
    rollback = next(e.data for e in store.events["alice"] if e.event == "run_rolled_back")
    assert rollback["error"].startswith("AgentError")
    assert "checkpoint" in rollback["error"]
    assert not any(e.event == "agent_thinking" for e in store.events["alice"])


_SCOPED = re.compile(r"\buser_id\b\s*(=|IN\b)", re.IGNORECASE)


@guest_test()
async def test_every_store_query_on_user_data_is_scoped_by_user(tmp_path: Path) -> None:
    """Invariant 8: no statement reads or writes netra's tables without naming the user."""
    config = make_config(tmp_path, idle_timeout=0.2)
    store = await SqlStore.open(config, extra_metadata=[test_metadata])
    statements: list[str] = []
    store.statement_hook = statements.append
    try:
        async with na.open_runtime(config, agents=ALL_AGENTS, store=store) as rt:
            sub = await rt.subscribe("alice", resume_from=0)
            runs = [
                await rt.start_run("alice", "steps", {"steps": 3}),
                await rt.start_run("alice", "crashy", {"crash_times": 1}),
                await rt.start_run("alice", "sleeper", None),
            ]
            await rt.wait_run("alice", runs[0])
            await rt.wait_run("alice", runs[1])
            await rt.cancel_run("alice", runs[2])
            with pytest.raises(na.exceptions.UnknownRunError):
                await rt.cancel_run("bob", runs[0])
            await rt.get_runs("alice")
            await rt.get_run("bob", runs[0])
            replayed = [e async for e in rt.replay("alice")]
            assert replayed
            sub.close()
            resumed = await rt.subscribe("alice", resume_from=0)
            assert (await resumed.receive_batch())[0].seq == 1
    finally:
        await store.aclose()
    ours = [
        s
        for s in statements
        if re.search(r"\bnetra_(events|runs)\b", s)
        and not s.lstrip().upper().startswith(("CREATE", "PRAGMA"))
    ]
    assert len(ours) > 10
    inserts = [s for s in ours if s.lstrip().upper().startswith("INSERT")]
    others = [s for s in ours if s not in inserts]
    assert others, "expected reads and updates"
    unscoped = [s for s in others if not _SCOPED.search(s)]
    assert not unscoped, f"statements not scoped by user: {unscoped}"
    assert all("user_id" in s for s in inserts)


def test_the_scoping_check_would_catch_an_unscoped_query() -> None:
    assert not _SCOPED.search("SELECT seq FROM netra_events WHERE seq > ? ORDER BY seq")
    assert _SCOPED.search("SELECT seq FROM netra_events WHERE netra_events.user_id = ?")


async def test_messages_queued_behind_a_crash_are_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Commands still in the mailbox when the supervisor stops get an error, never silence."""
    down = False

    def fail(user: str, unit: UnitOfWork) -> BaseException | None:
        return OSError("database unreachable") if down else None

    store = MemoryStore(fail_when=fail)
    async with na.open_runtime(na.RuntimeConfig(), agents=[Waits], store=store) as rt:
        run_id = await rt.start_run("alice", "waits", None)
        down = True
        outcomes: list[str] = []

        async def command(i: int) -> None:
            try:
                await rt.get_runs("alice") if i else await rt.cancel_run("alice", run_id)
                outcomes.append("ok")
            except (na.exceptions.StoreError, na.exceptions.RuntimeClosedError) as exc:
                outcomes.append(type(exc).__name__)

        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                for i in range(5):  # the cancel crashes the supervisor; the rest are queued
                    n.start_soon(command, i)
    assert len(outcomes) == 5  # every caller was answered; none was left hanging
    assert set(outcomes) <= {"ok", "StoreError", "RuntimeClosedError"}
    assert "RuntimeClosedError" in outcomes
