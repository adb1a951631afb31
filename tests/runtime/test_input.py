"""Input to a live run (protocol v1 "Input to a live run"): ``ctx.ask`` and ``send_input``.

Through the real store on a SQLite file, for async agents and their threaded twins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import (
    as_tuples,
    assert_legal_runs,
    make_config,
    read_until_ended,
    run_events,
    stored_events,
)
from streaming_agents import ASK_BEAT, STREAMING_BY_KIND

import netra_actors as na
from netra_actors.testing import guest_test

KINDS = pytest.mark.parametrize("kind", ["async", "threaded"])


def open_rt(config: na.RuntimeConfig, kind: str) -> Any:
    return na.open_runtime(config, agents=STREAMING_BY_KIND[kind])


async def read_until(
    sub: na.types.Subscription, seen: list[na.Event], name: str, count: int
) -> None:
    """Read into ``seen`` until it holds ``count`` events called ``name``."""
    with trio.fail_after(10):
        while sum(e.event == name for e in seen) < count:
            seen.extend(await sub.receive_batch())


def named(events: list[na.Event], name: str) -> list[na.Event]:
    return [e for e in events if e.event == name]


async def early_then_late(
    config: na.RuntimeConfig, kind: str, *, think: bool = False
) -> tuple[na.RunInfo, list[na.Event]]:
    """Run ``asker`` with prompts ``a?`` and ``b?``: ``early`` is sent while it waits at its
    gate, before it asks (it answers ``a?``), ``late`` after its question ``b?``. The run's info
    and its events."""
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        opts = {"prompts": ["a?", "b?"], "gate": True, "think": think}
        run_id = await rt.start_run("alice", "asker", opts)
        await rt.send_input("alice", run_id, "early")  # the agent waits at its gate
        await rt.send_to_run("alice", run_id, "go")
        seen: list[na.Event] = []
        await read_until(sub, seen, "input_requested", 1)
        await rt.send_input("alice", run_id, "late")
        await rt.send_to_run("alice", run_id, "go")  # the next attempt waits at its gate again
        seen.extend(await read_until_ended(sub, [run_id]))
        info = await rt.wait_run("alice", run_id)
    return info, run_events(seen, run_id)


@KINDS
@guest_test()
async def test_ask_commits_the_question_and_returns_each_input_in_order(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    schema = {"type": "string"}
    answers: list[na.JSON] = ["Ada", {"text": "blue"}, [1, 2, 3]]
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run(
            "alice", "asker", {"prompts": ["name?", "colour?", "numbers?"], "schema": schema}
        )
        seen: list[na.Event] = []
        for k, answer in enumerate(answers, start=1):
            await read_until(sub, seen, "input_requested", k)
            assert len(named(seen, "answered")) == k - 1  # it waits for the answer
            await rt.send_input("alice", run_id, answer)
        seen.extend(await read_until_ended(sub, [run_id]))
        info = await rt.wait_run("alice", run_id)

    assert info.state is na.RunState.COMPLETED
    assert info.result == answers
    events = run_events(seen, run_id)
    asked = [e.data for e in named(events, "input_requested")]
    assert asked == [
        {"prompt": "name?", "schema": schema},
        {"prompt": "colour?", "schema": schema},
        {"prompt": "numbers?", "schema": schema},
    ]
    names = [e.event for e in events if e.event in ("input_requested", "run_input", "answered")]
    assert names == ["input_requested", "run_input", "answered"] * 3  # question, input, answer
    assert [e.data["input"] for e in named(events, "run_input")] == answers
    assert [e.data["input"] for e in named(events, "answered")] == answers
    assert as_tuples(events) == [t for t in stored_events(config, "alice") if t[1] == run_id]
    assert_legal_runs(events)


@KINDS
@guest_test()
async def test_ask_without_schema_and_an_input_sent_before_the_ask(
    tmp_path: Path, kind: str
) -> None:
    """An input that arrived before the question is the answer: no ``input_requested``."""
    info, events = await early_then_late(make_config(tmp_path), kind)
    assert info.result == ["early", "late"]
    assert [e.data for e in named(events, "input_requested")] == [{"prompt": "b?"}]  # no schema
    names = [e.event for e in events if e.event in ("input_requested", "run_input", "answered")]
    assert names == ["run_input", "answered", "input_requested", "run_input", "answered"]


@KINDS
@guest_test()
async def test_what_was_staged_before_a_question_commits_before_it(
    tmp_path: Path, kind: str
) -> None:
    """A thought staged before ``ask`` is committed first, whether the question is asked or the
    answer was there already (an input sent early)."""
    config = make_config(tmp_path)
    info, events = await early_then_late(config, kind, think=True)
    assert info.result == ["early", "late"]
    steps = [
        e.data.get("text", e.event)
        for e in events
        if e.event in ("agent_thinking", "input_requested", "answered")
    ]
    assert steps == [
        "about to ask a?",
        "answered",
        "about to ask b?",
        "input_requested",
        "answered",
    ]
    assert as_tuples(events) == [t for t in stored_events(config, "alice") if t[1] == info.run_id]
    assert_legal_runs(events)


@KINDS
@guest_test()
async def test_a_restarted_attempt_gets_the_inputs_again_without_asking_again(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run(
            "alice", "asker", {"prompts": ["q1", "q2", "q3"], "crash_after": 1}
        )
        seen: list[na.Event] = []
        await read_until(sub, seen, "input_requested", 1)
        await rt.send_input("alice", run_id, "A")
        await read_until(sub, seen, "run_rolled_back", 1)  # it crashed after answering
        await read_until(sub, seen, "input_requested", 2)  # q2: q1 was not asked again
        await rt.send_input("alice", run_id, "B")
        await read_until(sub, seen, "input_requested", 3)
        await rt.send_input("alice", run_id, "C")
        seen.extend(await read_until_ended(sub, [run_id]))
        info = await rt.wait_run("alice", run_id)

    assert info.state is na.RunState.COMPLETED
    assert info.result == ["A", "B", "C"]
    events = run_events(seen, run_id)
    asked = named(events, "input_requested")
    assert [e.data["prompt"] for e in asked] == ["q1", "q2", "q3"]  # each asked once
    rollback = named(events, "run_rolled_back")
    assert [r.data["reason"] for r in rollback] == ["crash"]
    assert seen.index(asked[1]) > seen.index(rollback[0])
    # every attempt replayed what the earlier ones committed: each answer shows once
    assert [e.data["input"] for e in named(events, "answered")] == ["A", "B", "C"]
    assert [e.data["input"] for e in named(events, "run_input")] == ["A", "B", "C"]
    assert not [e for e in events if e.event.endswith("diverged")]
    assert_legal_runs(events)


@KINDS
@guest_test()
async def test_send_input_refusals_are_typed_and_change_nothing(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "asker", {"prompts": ["q"]})
        await read_until(sub, [], "input_requested", 1)
        await rt.send_input("alice", run_id, "x")
        assert (await rt.wait_run("alice", run_id)).state is na.RunState.COMPLETED
        live = await rt.start_run("alice", "asker", {"prompts": ["q"]})
        await read_until(sub, [], "input_requested", 1)  # it is waiting in ask
        head = (await rt.get_runs("alice")).head_seq
        with pytest.raises(na.exceptions.IllegalStateError):
            await rt.send_input("alice", run_id, "too late")
        with pytest.raises(na.exceptions.UnknownRunError) as theirs:
            await rt.send_input("mallory", live, "not yours")  # live, but not mallory's
        with pytest.raises(na.exceptions.UnknownRunError) as nobody:
            await rt.send_input("mallory", "r_does_not_exist", "x")
        with pytest.raises(na.exceptions.UnknownRunError):
            await rt.send_input("alice", "r_does_not_exist", "x")
        with pytest.raises(na.CommandError):
            await rt.send_input("alice", live, {1, 2})
        assert str(theirs.value) == str(nobody.value)
        assert (await rt.get_runs("alice")).head_seq == head
        assert (await rt.get_runs("mallory")).head_seq == 0
        await rt.cancel_run("alice", live)


@KINDS
@guest_test()
async def test_waiting_in_ask_is_not_a_missing_heartbeat(tmp_path: Path, kind: str) -> None:
    timeout = ASK_BEAT.heartbeat_timeout
    assert timeout is not None
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "asker_beat", {"prompts": ["still there?"]})
        seen: list[na.Event] = []
        await read_until(sub, seen, "input_requested", 1)
        await trio.sleep(timeout * 4)  # four heartbeat timeouts with no answer
        assert (await rt.get_run("alice", run_id)).state is na.RunState.RUNNING
        await rt.send_input("alice", run_id, "yes")
        seen.extend(await read_until_ended(sub, [run_id]))
        info = await rt.wait_run("alice", run_id)

    assert info.state is na.RunState.COMPLETED
    assert info.result == ["yes"]
    assert named(run_events(seen, run_id), "run_rolled_back") == []


@KINDS
@guest_test()
async def test_the_deadline_does_not_end_a_run_waiting_as_a_row(tmp_path: Path, kind: str) -> None:
    """Liveness does not apply while the run waits for its answer (it holds no attempt)."""
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "asker_deadline", {"prompts": ["later?"]})
        seen: list[na.Event] = []
        await read_until(sub, seen, "input_requested", 1)
        await trio.sleep(1.5)  # past the run_timeout (1 s)
        waiting = await rt.get_run("alice", run_id)
        assert waiting is not None
        assert (waiting.state, waiting.wait) == (na.RunState.RUNNING, "input")
        await rt.send_input("alice", run_id, "now")
        seen.extend(await read_until_ended(sub, [run_id]))
        info = await rt.wait_run("alice", run_id)

    assert info.state is na.RunState.COMPLETED
    assert info.result == ["now"]
    assert named(run_events(seen, run_id), "run_rolled_back") == []


@KINDS
@guest_test()
async def test_cancel_while_asking_rolls_back_once(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "asker", {"prompts": ["q"]})
        seen: list[na.Event] = []
        await read_until(sub, seen, "input_requested", 1)
        await rt.cancel_run("alice", run_id)
        seen.extend(await read_until_ended(sub, [run_id]))
        info = await rt.wait_run("alice", run_id)
        with pytest.raises(na.exceptions.IllegalStateError):
            await rt.send_input("alice", run_id, "after the end")
        await trio.sleep(0.1)  # nothing more arrives from the fenced attempt
        head = (await rt.get_runs("alice")).head_seq

    assert info.state is na.RunState.CANCELLED
    events = run_events(seen, run_id)
    rollbacks = [e.data for e in named(events, "run_rolled_back")]
    assert rollbacks == [
        {
            "reason": "cancelled",
            "error": "cancelled by the user",
            "attempt": 1,
            "will_restart": False,
        }
    ]
    assert events[-1].data == {"state": "cancelled", "previous": "running", "reason": "cancelled"}
    assert stored_events(config, "alice")[-1][0] == head == events[-1].seq
    assert_legal_runs(stored_events(config, "alice"))
