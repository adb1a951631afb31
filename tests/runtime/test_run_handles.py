"""A live run's handles made only when used (``_runs.py``): its inbox and its journal's items.

A run's inbox (``send_to_run`` / ``ctx.receive``) is a trio channel made by whichever comes first,
a message sent to the run or an attempt receiving; messages keep their order either way, and a
run that ended takes none. The units a run commits are folded into its journal only when it is
read: a new attempt replays exactly what an eager fold would have given it.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import netra_actors as na
from netra_actors._core._journal import Journal
from netra_actors._core._lifecycle import begin
from netra_actors._journal_events import fold_unit
from netra_actors._runs import Run
from netra_actors._values import StagedEvent
from netra_actors.testing import MemoryStore

GATE: list[trio.Event] = []
"""Set by the test when the gated agent may begin to receive."""


class GatedEcho(na.Agent):
    """Waits for the test's gate, then receives until ``stop``; returns what it received."""

    name = "gated_echo"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.think("waiting")
        await ctx.checkpoint()
        if input == "gated":
            await GATE[0].wait()
        got = []
        while (message := await ctx.receive()) != "stop":
            got.append(message)
        return got


class Crashy(na.Agent):
    """Commits two thoughts; the first attempt then crashes, the second completes."""

    name = "crashy_once"
    restart_policy = na.policies.RestartPolicy(max_restarts=2, backoff_initial=0.01)

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.think("one")
        await ctx.checkpoint()
        await ctx.think("two")
        await ctx.checkpoint()
        if ctx.attempt == 1:
            raise RuntimeError("boom")
        await ctx.think("three")
        return {"replaying_at_end": ctx.replaying}


async def _result(rt: na.Runtime, run_id: str) -> na.JSON:
    info = await rt.wait_run("alice", run_id)
    assert info.state is na.RunState.COMPLETED
    return info.result


async def test_messages_sent_before_the_first_receive_come_first_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    GATE[:] = [trio.Event()]
    async with na.open_runtime(agents=[GatedEcho], store=MemoryStore()) as rt:
        run_id = await rt.start_run("alice", "gated_echo", "gated")
        await trio.sleep(1)  # the agent waits at the gate: nothing has made the inbox yet
        await rt.send_to_run("alice", run_id, "a")  # makes it
        await rt.send_to_run("alice", run_id, "b")
        GATE[0].set()
        await trio.sleep(1)  # it received a and b, and waits in receive
        await rt.send_to_run("alice", run_id, "c")
        await rt.send_to_run("alice", run_id, "stop")
        assert await _result(rt, run_id) == ["a", "b", "c"]


async def test_a_receive_before_any_message_gets_the_messages_sent_later_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with na.open_runtime(agents=[GatedEcho], store=MemoryStore()) as rt:
        run_id = await rt.start_run("alice", "gated_echo", None)
        await trio.sleep(1)  # it waits in receive: that made the inbox
        for message in ("x", "y", "stop"):
            await rt.send_to_run("alice", run_id, message)
        assert await _result(rt, run_id) == ["x", "y"]


async def test_a_run_that_ended_takes_no_message(autojump_clock: trio.testing.MockClock) -> None:
    async with na.open_runtime(agents=[GatedEcho], store=MemoryStore()) as rt:
        run_id = await rt.start_run("alice", "gated_echo", None)
        await rt.send_to_run("alice", run_id, "stop")
        assert await _result(rt, run_id) == []
        with pytest.raises(na.exceptions.IllegalStateError):
            await rt.send_to_run("alice", run_id, "late")


def _run() -> Run:
    return Run(
        run_id="r1",
        life=begin(
            now=0.0,
            threaded=False,
            restart=na.policies.RestartPolicy(),
            liveness=na.policies.LivenessPolicy(),
        ).life,
        agent="a",
        agent_cls=na.Agent,
        input_json=None,
        created_at=0.0,
        inbox_size=4,
    )


async def test_the_inbox_is_made_on_first_use_and_keeps_order() -> None:
    run = _run()
    assert run._inbox is None  # nothing sent, nothing received: no channel
    run.inbox_sender().send_nowait(1)
    receiver = run.inbox_receiver()
    run.inbox_sender().send_nowait(2)
    assert [receiver.receive_nowait(), receiver.receive_nowait()] == [1, 2]


async def test_an_inbox_closed_before_it_was_made_is_closed_when_made() -> None:
    run = _run()
    run.close_inbox()
    assert run._inbox is None
    with pytest.raises(trio.EndOfChannel):
        await run.inbox_receiver().receive()
    with pytest.raises(trio.ClosedResourceError):
        run.inbox_sender().send_nowait("late")


async def test_an_open_inbox_closes_after_what_was_sent() -> None:
    run = _run()
    run.inbox_sender().send_nowait("kept")
    run.close_inbox()
    receiver = run.inbox_receiver()
    assert await receiver.receive() == "kept"
    with pytest.raises(trio.EndOfChannel):
        await receiver.receive()


def test_the_journal_folds_committed_units_when_read_as_an_eager_fold_would() -> None:
    units = [
        [StagedEvent("r1", "agent_thinking", '{"text":"a"}'), StagedEvent("r1", "run_state", "{}")],
        [StagedEvent("r1", "custom", '{"n":1}')],
        [StagedEvent("r1", "input_requested", '{"prompt":"?"}')],
    ]
    eager = Journal()
    run = _run()
    for events in units[:2]:
        fold_unit(eager, events)
        run.fold_later(events, None)
    assert run.journal.snapshot() == eager.snapshot()  # read: folded
    fold_unit(eager, units[2])
    run.fold_later(units[2], None)
    assert run.journal.snapshot() == eager.snapshot()
    run.journal = Journal()  # replaced (rebuilt from the store): nothing waits to be folded
    assert run.journal.snapshot() == ()


async def test_a_new_attempt_replays_the_units_committed_before_the_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with na.open_runtime(agents=[Crashy], store=MemoryStore()) as rt:
        sub = await rt.subscribe("alice", resume_from=0)
        run_id = await rt.start_run("alice", "crashy_once", None)
        assert await _result(rt, run_id) == {"replaying_at_end": False}
        thoughts = []
        while True:
            batch = await sub.receive_batch()
            thoughts += [e.data["text"] for e in batch if e.event == "agent_thinking"]
            if any(e.event == "run_state" and e.data["state"] == "completed" for e in batch):
                break
    assert thoughts == ["one", "two", "three"]  # one and two replayed, not committed again
