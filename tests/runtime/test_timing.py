"""Heartbeats, deadlines, backoff and passivation on trio's virtual clock.

These run the real supervisor on :class:`netra_actors.testing.MemoryStore` (pure trio), so
``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock`` fixture) makes every
duration exact: the assertions name virtual times, not ranges.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import netra_actors as na
from netra_actors.testing import MemoryStore, collect_until

BACKOFF = na.policies.RestartPolicy(
    max_restarts=3, window=1000, backoff_initial=1.0, backoff_factor=2.0
)


def config(**changes: Any) -> na.RuntimeConfig:
    base: dict[str, Any] = {"restart": BACKOFF, "idle_timeout": 600.0}
    base.update(changes)
    return na.RuntimeConfig(**base)


def ended(run_id: str) -> Any:
    def check(events: list[na.Event]) -> bool:
        return any(
            e.run_id == run_id
            and e.event == "run_state"
            and na.RunState(e.data["state"]).is_terminal
            for e in events
        )

    return check


starts: list[float] = []


class CrashTwice(na.Agent):
    name = "crash_twice"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        starts.append(trio.current_time())
        if ctx.attempt <= 2:
            raise RuntimeError("boom")
        return "ok"


class CrashAlways(na.Agent):
    name = "crash_always"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        starts.append(trio.current_time())
        raise RuntimeError("boom")


class Silent(na.Agent):
    """Never heartbeats."""

    name = "silent"
    liveness = na.policies.LivenessPolicy(heartbeat_timeout=30.0, run_timeout=1000.0)

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await trio.sleep_forever()


class Beating(na.Agent):
    """Heartbeats every 10 s, forever: only the deadline can stop it."""

    name = "beating"
    liveness = na.policies.LivenessPolicy(heartbeat_timeout=30.0, run_timeout=100.0)

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        while True:
            await ctx.heartbeat()
            await trio.sleep(10)


class BeatsThenStops(na.Agent):
    """Heartbeats at 10, 20, 30 s, then goes quiet: dead 30 s after the last beat."""

    name = "beats_then_stops"
    liveness = na.policies.LivenessPolicy(heartbeat_timeout=30.0, run_timeout=1000.0)

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        for _ in range(3):
            await trio.sleep(10)
            await ctx.heartbeat()
        await trio.sleep_forever()


AGENTS = [CrashTwice, CrashAlways, Silent, Beating, BeatsThenStops]


async def test_backoff_delays_are_exact(autojump_clock: trio.testing.MockClock) -> None:
    starts.clear()
    async with na.open_runtime(config(), agents=AGENTS, store=MemoryStore()) as rt:
        t0 = trio.current_time()
        run_id = await rt.start_run("alice", "crash_twice", None)
        info = await rt.wait_run("alice", run_id)
    assert info.state is na.RunState.COMPLETED
    assert [t - t0 for t in starts] == [0.0, 1.0, 3.0]  # backoff 1 s, then 2 s


async def test_intensity_exceeded_fails_after_exact_backoffs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts.clear()
    store = MemoryStore()
    async with na.open_runtime(config(), agents=AGENTS, store=store) as rt:
        t0 = trio.current_time()
        run_id = await rt.start_run("alice", "crash_always", None)
        info = await rt.wait_run("alice", run_id)
        ended_at = trio.current_time() - t0
    assert info.state is na.RunState.FAILED
    assert [t - t0 for t in starts] == [0.0, 1.0, 3.0, 7.0]
    assert ended_at == 7.0
    rollbacks = [e.data for e in store.events["alice"] if e.event == "run_rolled_back"]
    assert [r["will_restart"] for r in rollbacks] == [True, True, True, False]


async def test_no_heartbeat_means_dead_at_exactly_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with na.open_runtime(config(), agents=AGENTS, store=MemoryStore()) as rt:
        t0 = trio.current_time()
        silent = await rt.start_run("alice", "silent", None)
        quiet = await rt.start_run("alice", "beats_then_stops", None)
        info = await rt.wait_run("alice", silent)
        assert trio.current_time() - t0 == 30.0
        assert info.state is na.RunState.DEAD
        info = await rt.wait_run("alice", quiet)
        assert trio.current_time() - t0 == 60.0  # last beat at 30 s + 30 s
        assert info.state is na.RunState.DEAD


async def test_deadline_means_timeout_even_while_heartbeating(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with na.open_runtime(config(), agents=AGENTS, store=store) as rt:
        t0 = trio.current_time()
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "beating", None)
        info = await rt.wait_run("alice", run_id)
        assert trio.current_time() - t0 == 100.0
        with trio.fail_after(1):
            events = await collect_until(sub, ended(run_id))
    assert info.state is na.RunState.TIMEOUT
    tail = [(e.event, e.data.get("reason")) for e in events[-2:]]
    assert tail == [("run_rolled_back", "timeout"), ("run_state", "timeout")]


async def test_idle_user_is_passivated_after_idle_timeout_and_rebuilt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    events: list[tuple[str, float]] = []

    def tracer(user: str, what: str, detail: Any) -> None:
        if what in ("activated", "passivated"):
            events.append((what, trio.current_time()))

    async with na.open_runtime(
        config(idle_timeout=60.0), agents=AGENTS, store=store, tracer=tracer
    ) as rt:
        t0 = trio.current_time()
        run_id = await rt.start_run("alice", "crash_twice", None)
        await rt.wait_run("alice", run_id)
        done_at = trio.current_time()
        await trio.sleep(59)
        assert rt.is_active("alice")
        await trio.sleep(2)
        assert not rt.is_active("alice")
        head = store.events["alice"][-1].seq
        snapshot = await rt.get_runs("alice")  # re-activates from the store
        assert snapshot.head_seq == head
    assert [w for w, _ in events] == ["activated", "passivated", "activated"]
    assert events[1][1] - done_at == pytest.approx(60.0)
    assert events[0][1] == t0


async def test_a_user_with_an_open_subscription_is_not_passivated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with na.open_runtime(config(idle_timeout=10.0), agents=AGENTS, store=MemoryStore()) as rt:
        sub = await rt.subscribe("alice")
        await trio.sleep(100)
        assert rt.is_active("alice")
        sub.close()
        await trio.sleep(11)
        assert not rt.is_active("alice")


async def test_store_failure_during_checkpoint_is_a_store_error_rollback(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failing commit rolls back only that unit; the run restarts and completes."""

    class TwoSteps(na.Agent):
        name = "two_steps"

        async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
            await ctx.think(f"attempt {ctx.attempt}")
            await ctx.checkpoint()
            return "ok"

    failed = False

    def fail_first_thinking(user: str, unit: Any) -> BaseException | None:
        nonlocal failed
        if not failed and any(e.event == "agent_thinking" for e in unit.events):
            failed = True
            return OSError("disk full")
        return None

    store = MemoryStore(fail_when=fail_first_thinking)
    async with na.open_runtime(config(), agents=[TwoSteps], store=store) as rt:
        run_id = await rt.start_run("alice", "two_steps", None)
        info = await rt.wait_run("alice", run_id)
    assert info.state is na.RunState.COMPLETED
    events = store.events["alice"]
    rollbacks = [e.data for e in events if e.event == "run_rolled_back"]
    assert len(rollbacks) == 1
    assert rollbacks[0]["reason"] == "store_error"
    assert "disk full" in rollbacks[0]["error"]
    assert [e.data["text"] for e in events if e.event == "agent_thinking"] == ["attempt 2"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_full_mailbox_is_a_typed_error_not_a_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcomes: list[str] = []
    async with na.open_runtime(config(mailbox_size=2), agents=AGENTS, store=MemoryStore()) as rt:

        async def ask() -> None:
            try:
                await rt.get_runs("alice")
                outcomes.append("ok")
            except na.exceptions.MailboxFullError as exc:
                assert exc.code == "rate_limited"
                outcomes.append("full")

        async with trio.open_nursery() as n:
            for _ in range(20):
                n.start_soon(ask)
    assert "full" in outcomes
    assert "ok" in outcomes


class ThinksSlowly(na.Agent):
    """Stages a thought every 2 s for 30 s, checkpointing only at the end."""

    name = "thinks_slowly"
    liveness = na.policies.LivenessPolicy(heartbeat_timeout=10.0, run_timeout=1000.0)

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        for i in range(15):
            await ctx.think(f"thought {i}")
            await trio.sleep(2)
        await ctx.checkpoint()
        return "done"


class WaitsForTheUser(na.Agent):
    """Waits in receive() far longer than the heartbeat timeout."""

    name = "waits_for_the_user"
    liveness = na.policies.LivenessPolicy(heartbeat_timeout=30.0, run_timeout=1000.0)

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        return await ctx.receive()


async def test_staging_alone_keeps_a_run_alive(autojump_clock: trio.testing.MockClock) -> None:
    async with na.open_runtime(config(), agents=[ThinksSlowly], store=MemoryStore()) as rt:
        run_id = await rt.start_run("alice", "thinks_slowly", None)
        info = await rt.wait_run("alice", run_id)
    assert info.state is na.RunState.COMPLETED


async def test_waiting_for_a_message_is_not_death(autojump_clock: trio.testing.MockClock) -> None:
    async with na.open_runtime(config(), agents=[WaitsForTheUser], store=MemoryStore()) as rt:
        run_id = await rt.start_run("alice", "waits_for_the_user", None)
        await trio.sleep(300)  # ten heartbeat timeouts
        await rt.send_to_run("alice", run_id, "hello")
        info = await rt.wait_run("alice", run_id)
    assert info.state is na.RunState.COMPLETED
    assert info.result == "hello"
