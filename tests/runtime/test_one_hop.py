"""One hop per unit (``_checkpoint.py``): a checkpoint runs in the agent's own task while its
supervisor is parked, and the invariants hold across it.

A store whose commit can be held open (:class:`GatedStore`) shows what happens *during* an
in-task commit: commands that arrive meanwhile wait and are handled after it, in order (1); a
subscription taken meanwhile resumes exactly at the seam (7); a commit that fails, a cancel and
a lost lease are carried out by the supervisor as before (4, 5). Each test would fail if the
in-task path stopped being taken, or if it let the supervisor act during the commit.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers import FAST_RESTART, assert_gapless, db_path, make_config, read_until_ended

import netra_actors as na
from netra_actors._uow import UnitOfWork
from netra_actors.testing import MemoryStore, guest_test


class HopTwice(na.Agent):
    """Commits ``a``, then ``b``, then waits for one message and returns it."""

    name = "hop_twice"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.think("a")
        await ctx.checkpoint()
        await ctx.think("b")
        await ctx.checkpoint()
        return await ctx.receive()


class HopQuick(na.Agent):
    """Commits one thought and returns."""

    name = "hop_quick"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.think("quick")
        await ctx.checkpoint()
        return "done"


class HopStore(MemoryStore):
    """A memory store that records which task committed each unit, and can hold the next unit
    with a thought in it open until :attr:`gate` is set."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate: trio.Event | None = None
        self.entered = trio.Event()
        self.thought_tasks: list[str] = []

    async def commit(self, user_id: str, base_seq: int, unit: UnitOfWork) -> list[na.Event]:
        if any(ev.event == "agent_thinking" for ev in unit.events):
            self.thought_tasks.append(trio.lowlevel.current_task().name)
            gate, self.gate = self.gate, None
            if gate is not None:
                self.entered.set()
                with trio.CancelScope(shield=True):
                    await gate.wait()
        return await super().commit(user_id, base_seq, unit)


def thoughts(events: list[na.Event]) -> list[str]:
    return [e.data["text"] for e in events if e.event == "agent_thinking"]


def in_agent_task(name: str) -> bool:
    return name.endswith("agent_child")


async def settle() -> None:
    """Let every task that can run, run (the clock jumps only when all are blocked)."""
    await trio.sleep(1.0)


async def cancel_during_the_first_commit(
    rt: na.Runtime, store: HopStore, gate: trio.Event
) -> list[na.Event]:
    """Start a ``hop_twice`` run of alice, cancel it while its first commit is held at the
    store's gate, then let the commit go; the run's whole stream."""
    sub = await rt.subscribe("alice", resume_from=0)
    run_id = await rt.start_run("alice", "hop_twice", None)
    await store.entered.wait()
    async with trio.open_nursery() as n:
        n.start_soon(rt.cancel_run, "alice", run_id)
        await settle()
        gate.set()
    return await read_until_ended(sub, [run_id])


async def test_checkpoints_commit_in_the_agents_own_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = HopStore()
    async with na.open_runtime(na.RuntimeConfig(), agents=[HopQuick], store=store) as rt:
        sub = await rt.subscribe("alice", resume_from=0)
        run_id = await rt.start_run("alice", "hop_quick", None)
        events = await read_until_ended(sub, [run_id])
    assert thoughts(events) == ["quick"]
    assert store.thought_tasks
    assert all(in_agent_task(t) for t in store.thought_tasks)
    assert_gapless(events)


async def test_commands_during_an_in_task_commit_wait_for_it_and_keep_their_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Invariant 1 across the hold: what arrives during the commit is handled after it, in the
    order it arrived; a subscription taken meanwhile resumes exactly at the seam (7)."""
    store = HopStore()
    store.gate = gate = trio.Event()
    async with na.open_runtime(na.RuntimeConfig(), agents=[HopTwice], store=store) as rt:
        first = await rt.subscribe("alice", resume_from=0)
        run_id = await rt.start_run("alice", "hop_twice", None)
        await store.entered.wait()  # "a" is being committed, in the agent's task
        assert in_agent_task(store.thought_tasks[0])
        answers: dict[str, Any] = {}
        late: list[na.types.Subscription] = []

        async def get_runs() -> None:
            answers["runs"] = (await rt.get_runs("alice")).head_seq

        async def answer(i: int) -> None:
            await rt.send_input("alice", run_id, i)
            answers[f"input {i}"] = True

        async def send() -> None:
            await rt.send_to_run("alice", run_id, "hello")
            answers["sent"] = True

        async def subscribe() -> None:
            late.append(await rt.subscribe("alice", resume_from=0))
            answers["subscribed"] = late[0].head_seq

        commands: list[Callable[[], Awaitable[None]]]
        commands = [get_runs, functools.partial(answer, 1), send, subscribe]
        commands.append(functools.partial(answer, 2))
        async with trio.open_nursery() as n:
            for command in commands:
                n.start_soon(command)
                await settle()
            assert answers == {}  # the supervisor waits for the agent's commit
            head_before = store._head("alice")
            gate.set()
        assert len(answers) == len(commands)
        assert answers["runs"] == head_before + 1  # handled after the commit of "a"
        events = await read_until_ended(first, [run_id])
        seam = answers["subscribed"]
        resumed: list[na.Event] = []
        with trio.fail_after(20):
            while not resumed or resumed[-1].seq < events[-1].seq:
                resumed.extend(await late[0].receive_batch())
        result = (await rt.wait_run("alice", run_id)).result
    # The inputs were committed after "a", in the order they were sent.
    inputs = [(e.seq, e.data["input"]) for e in events if e.event == "run_input"]
    assert [i for _, i in inputs] == [1, 2]
    a = next(e.seq for e in events if e.event == "agent_thinking")
    assert a < inputs[0][0] <= seam < inputs[1][0]
    assert thoughts(events) == ["a", "b"]
    assert result == "hello"
    assert_gapless(events)
    assert_gapless(resumed)  # replayed up to the seam, then live: no gap, no duplicate
    assert [e.seq for e in resumed] == [e.seq for e in events]
    assert any(e.seq > seam for e in resumed)


async def test_a_failed_in_task_commit_is_a_store_error_crash_handled_before_later_commands(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Invariant 4/5: the failed unit leaves nothing, one rollback names it, the run restarts;
    a cancel sent during the failing commit is carried out after the crash plan."""
    failed: list[int] = []

    def fail(user: str, unit: UnitOfWork) -> BaseException | None:
        if not failed and any(ev.event == "agent_thinking" for ev in unit.events):
            failed.append(1)
            return OSError("disk on fire")
        return None

    store = HopStore(fail_when=fail)
    store.gate = gate = trio.Event()
    config = na.RuntimeConfig(restart=FAST_RESTART)
    async with na.open_runtime(config, agents=[HopTwice], store=store) as rt:
        events = await cancel_during_the_first_commit(rt, store, gate)
    assert failed == [1]
    assert in_agent_task(store.thought_tasks[0])
    rollbacks = [e for e in events if e.event == "run_rolled_back"]
    assert rollbacks[0].data["reason"] == "store_error"
    states = [e.data["state"] for e in events if e.event == "run_state"]
    assert states[-1] == "cancelled"
    first_rollback = events.index(rollbacks[0])
    cancelled = next(i for i, e in enumerate(events) if e.data.get("state") == "cancelled")
    assert first_rollback < cancelled  # the crash plan came first, then the cancel
    assert "a" not in thoughts(events[:first_rollback])  # nothing of the failed unit
    assert_gapless(events)


async def test_a_cancel_during_an_in_task_commit_comes_after_it_and_commits_nothing_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = HopStore()
    store.gate = gate = trio.Event()
    async with na.open_runtime(na.RuntimeConfig(), agents=[HopTwice], store=store) as rt:
        events = await cancel_during_the_first_commit(rt, store, gate)
    # "a" was committed (the commit was under way) and delivered before the cancellation;
    # "b", staged after it, went to the supervisor behind the cancel and was fenced off.
    assert thoughts(events) == ["a"]
    a = next(i for i, e in enumerate(events) if e.event == "agent_thinking")
    cancelled = next(i for i, e in enumerate(events) if e.data.get("state") == "cancelled")
    assert a < cancelled
    assert [e.data["reason"] for e in events if e.event == "run_rolled_back"] == ["cancelled"]
    assert_gapless(events)


async def test_the_session_passivates_after_a_run_that_ended_in_its_agents_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The final unit commits in the agent's task: the supervisor is woken to look at its
    deadlines again (without it, it would stay parked with no passivation timer)."""
    passivated, ended = trio.Event(), trio.Event()

    def tracer(user: str, what: str, detail: Any) -> None:
        if what == "passivated":
            passivated.set()
        elif what == "run_ended":
            ended.set()

    store = HopStore()
    config = na.RuntimeConfig(idle_timeout=5.0)
    async with na.open_runtime(config, agents=[HopQuick], store=store, tracer=tracer) as rt:
        await rt.start_run("alice", "hop_quick", None)  # no socket, nobody waits: no message
        with trio.fail_after(60):
            await ended.wait()
            at = trio.current_time()
            await passivated.wait()
        # After idle_timeout, not at the next deadline the run had (its heartbeat's).
        assert trio.current_time() - at <= 5.0 + 0.5
        assert not rt.is_active("alice")
    assert in_agent_task(store.thought_tasks[-1])


class HopFenced(na.Agent):
    """Commits ``a``, waits until the test took its lease away, then tries to commit ``b``."""

    name = "hop_fenced"
    ready = trio.Event()
    go = trio.Event()
    seen: list[str] = []

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.think("a")
        await ctx.checkpoint()
        HopFenced.ready.set()
        await HopFenced.go.wait()
        await ctx.think("b")
        try:
            await ctx.checkpoint()
        except BaseException as exc:
            HopFenced.seen.append(type(exc).__name__)
            raise
        HopFenced.seen.append("committed")
        return None


@guest_test()
async def test_a_lost_lease_during_an_in_task_commit_commits_nothing_and_unwinds_the_owner(
    tmp_path: Path,
) -> None:
    """Fencing: the in-task commit is refused by the lease check; the supervisor (not the
    agent) ends this node's part of the session, and nothing of the unit is in the file."""
    HopFenced.ready, HopFenced.go, HopFenced.seen = trio.Event(), trio.Event(), []
    config = make_config(tmp_path)
    async with na.open_runtime(config, agents=[HopFenced]) as rt:
        await rt.start_run("alice", "hop_fenced", None)
        with trio.fail_after(10):
            await HopFenced.ready.wait()
        with sqlite3.connect(db_path(config)) as conn:  # another node takes the user over
            # (a live node: its row in netra_nodes, which its leases last as long as)
            conn.execute(
                "INSERT INTO netra_nodes (node, expires_at) VALUES ('thief', "
                "(julianday('now') - 2440587.5) * 86400.0 + 3600)"
            )
            changed = conn.execute(
                "UPDATE netra_leases SET node = 'thief', epoch = epoch + 1, "
                "expires_at = expires_at + 3600 WHERE user_id = 'alice'"
            ).rowcount
        assert changed == 1
        HopFenced.go.set()
        with trio.fail_after(10):
            while rt.statistics().fenced_units == 0 or rt.statistics().owned_users:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert rt.statistics().followed_users == 1  # the owner unwound: this node follows
    assert HopFenced.seen == ["RunFencedError"]
    with sqlite3.connect(db_path(config)) as conn:
        texts = [
            r[0]
            for r in conn.execute(
                "SELECT json_extract(data, '$.text') FROM netra_events "
                "WHERE user_id = 'alice' AND event = 'agent_thinking' ORDER BY seq"
            )
        ]
    assert texts == ["a"]


@pytest.mark.parametrize("runs", [3])
async def test_parallel_runs_of_one_user_interleave_gaplessly_through_the_hold(
    autojump_clock: trio.testing.MockClock, runs: int
) -> None:
    """Several agents of one user checkpoint at once: whichever finds the supervisor parked
    takes the hold, the others go through the mailbox; every unit commits once, in one
    gapless order (which path each takes depends on the schedule: not asserted)."""
    store = HopStore()
    async with na.open_runtime(na.RuntimeConfig(), agents=[HopTwice], store=store) as rt:
        sub = await rt.subscribe("alice", resume_from=0)
        run_ids = [await rt.start_run("alice", "hop_twice", None) for _ in range(runs)]
        for run_id in run_ids:
            await rt.send_to_run("alice", run_id, run_id)
        events = await read_until_ended(sub, run_ids)
        infos = [await rt.wait_run("alice", r) for r in run_ids]
    assert [i.result for i in infos] == run_ids
    assert sorted(thoughts(events)) == sorted(["a", "b"] * runs)
    assert_gapless(events)
