"""What ``say``/``start_run`` do while a run is live (protocol v1 ``if_busy``).

Through the real store on a SQLite file, for async agents and their threaded twins. The ``hold``
agent commits ``held`` and then waits for one inbox message, so the test decides when it ends.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import (
    assert_gapless,
    assert_legal_runs,
    db_path,
    make_config,
    run_events,
    stored_events,
)
from streaming_agents import STREAMING_BY_KIND

import netra_actors as na
from netra_actors.testing import guest_test

KINDS = pytest.mark.parametrize("kind", ["async", "threaded"])


def open_rt(config: na.RuntimeConfig, kind: str) -> Any:
    return na.open_runtime(config, agents=STREAMING_BY_KIND[kind])


class Watch:
    """Everything one subscription delivered, and waits on it."""

    def __init__(self, sub: na.types.Subscription) -> None:
        self.sub = sub
        self.events: list[na.Event] = []

    async def until(self, pred: Any, limit: float = 10) -> None:
        with trio.fail_after(limit):
            while not pred(self.events):
                self.events.extend(await self.sub.receive_batch())

    async def held(self, run_id: str) -> None:
        await self.until(lambda evs: any(e.run_id == run_id and e.event == "held" for e in evs))

    async def ended(self, *run_ids: str) -> None:
        def over(evs: list[na.Event]) -> bool:
            done = {
                e.run_id
                for e in evs
                if e.event == "run_state" and na.RunState(e.data["state"]).is_terminal
            }
            return done >= set(run_ids)

        await self.until(over, limit=20)

    def seq_of(self, run_id: str, event: str, state: str | None = None) -> int:
        return next(
            e.seq
            for e in self.events
            if e.run_id == run_id
            and e.event == event
            and (state is None or e.data.get("state") == state)
        )


async def state_of(rt: na.Runtime, user: str, run_id: str) -> tuple[str, str | None]:
    runs = {r.run_id: r for r in (await rt.get_runs(user)).runs}
    return runs[run_id].state.value, runs[run_id].reason


@KINDS
@guest_test()
async def test_parallel_is_the_default_and_starts_alongside(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    assert config.if_busy == "parallel"
    async with open_rt(config, kind) as rt:
        w = Watch(await rt.subscribe("alice"))
        first = await rt.start_run("alice", "hold")
        await w.held(first)
        second = await rt.say("alice", "hi", agent="hold")  # no if_busy: the default
        third = await rt.start_run("alice", "hold", if_busy="parallel")
        await w.held(second)
        await w.held(third)
        assert await state_of(rt, "alice", first) == ("running", None)  # all three at once
        for rid in (first, second, third):
            await rt.send_to_run("alice", rid, "stop")
        await w.ended(first, second, third)
    assert set(assert_legal_runs(w.events).values()) == {na.RunState.COMPLETED}


@KINDS
@guest_test()
async def test_reject_raises_busy_and_commits_nothing(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        w = Watch(await rt.subscribe("alice"))
        live = await rt.start_run("alice", "hold")
        await w.held(live)
        before = await rt.get_runs("alice")
        with pytest.raises(na.exceptions.BusyError) as said:
            await rt.say("alice", "hi", agent="hold", if_busy="reject")
        with pytest.raises(na.exceptions.BusyError):
            await rt.start_run("alice", "hold", if_busy="reject")
        assert said.value.code == "busy"
        assert isinstance(said.value, na.CommandError)
        after = await rt.get_runs("alice")
        assert after.head_seq == before.head_seq
        assert [r.run_id for r in after.runs] == [r.run_id for r in before.runs]
        await rt.send_to_run("alice", live, "stop")
        await w.ended(live)
        # nothing live: reject starts the run
        free = await rt.say("alice", "now", agent="hold", if_busy="reject")
        await w.held(free)
        await rt.send_to_run("alice", free, "stop")
        await w.ended(free)
    texts = [t[3].get("text") for t in stored_events(config, "alice") if t[2] == "message"]
    assert texts == ["now"]


@KINDS
@guest_test()
async def test_enqueue_waits_for_every_run_live_before_and_starts_one_at_a_time(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        w = Watch(await rt.subscribe("alice"))
        a1 = await rt.start_run("alice", "hold")
        a2 = await rt.start_run("alice", "hold")
        await w.held(a1)
        await w.held(a2)
        b = await rt.start_run("alice", "hold", if_busy="enqueue")
        c = await rt.say("alice", "third", agent="hold", if_busy="enqueue")
        assert await state_of(rt, "alice", b) == ("pending", "queued")
        assert await state_of(rt, "alice", c) == ("pending", "queued")

        await rt.send_to_run("alice", a1, "stop")
        await w.ended(a1)
        await trio.sleep(0.1)
        assert await state_of(rt, "alice", b) == ("pending", "queued")  # a2 is still live

        await rt.send_to_run("alice", a2, "stop")
        await w.ended(a2)
        await w.held(b)
        await trio.sleep(0.1)
        assert await state_of(rt, "alice", c) == ("pending", "queued")  # one at a time

        await rt.send_to_run("alice", b, "stop")
        await w.held(c)
        await rt.send_to_run("alice", c, "stop")
        await w.ended(b, c)

    ends = {r: w.seq_of(r, "run_state", "completed") for r in (a1, a2, b)}
    assert w.seq_of(b, "run_state", "starting") > max(ends[a1], ends[a2])
    assert w.seq_of(c, "run_state", "starting") > ends[b]
    for queued in (b, c):  # created pending, and nothing more until its turn
        mine = [e for e in run_events(w.events, queued) if e.event == "run_state"]
        assert mine[0].data == {"state": "pending", "previous": None}
        assert mine[1].data["state"] == "starting"
        assert mine[1].seq > w.seq_of(queued, "run_state", "pending") + 1
    assert set(assert_legal_runs(w.events).values()) == {na.RunState.COMPLETED}
    assert_gapless(w.events, start=w.events[0].seq)


@KINDS
@guest_test()
async def test_interrupt_cancels_live_and_queued_runs_then_starts(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        w = Watch(await rt.subscribe("alice"))
        running = await rt.start_run("alice", "hold")
        await w.held(running)
        queued = await rt.start_run("alice", "hold", if_busy="enqueue")
        new = await rt.say("alice", "stop that", agent="hold", if_busy="interrupt")
        await w.held(new)
        assert await state_of(rt, "alice", running) == ("cancelled", "cancelled")
        assert await state_of(rt, "alice", queued) == ("cancelled", "cancelled")
        await rt.send_to_run("alice", new, "stop")
        await w.ended(new)

    for rid, attempt, previous in ((running, 1, "running"), (queued, 0, "pending")):
        tail = [(e.event, e.data) for e in run_events(w.events, rid)][-2:]
        assert tail == [
            (
                "run_rolled_back",
                {
                    "reason": "cancelled",
                    "error": "interrupted",
                    "attempt": attempt,
                    "will_restart": False,
                },
            ),
            ("run_state", {"state": "cancelled", "previous": previous, "reason": "cancelled"}),
        ]
    cancelled = max(w.seq_of(r, "run_state", "cancelled") for r in (running, queued))
    new_events = run_events(w.events, new)
    assert new_events[0].seq > cancelled  # the interrupted runs ended first
    assert [e.data.get("role") for e in new_events if e.event == "message"] == ["user"]
    assert len([e for e in w.events if e.event == "run_rolled_back"]) == 2
    assert assert_legal_runs(w.events)[new] is na.RunState.COMPLETED


@KINDS
@guest_test()
async def test_say_commits_the_user_message_whatever_the_policy_except_reject(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        for policy in ("parallel", "enqueue", "interrupt", "reject"):
            user = f"user_{policy}"
            w = Watch(await rt.subscribe(user))
            live = await rt.start_run(user, "hold")
            await w.held(live)
            head = (await rt.get_runs(user)).head_seq
            if policy == "reject":
                with pytest.raises(na.exceptions.BusyError):
                    await rt.say(user, f"hello {policy}", agent="hold", if_busy=policy)
                assert (await rt.get_runs(user)).head_seq == head
                await rt.cancel_run(user, live)
                continue
            rid = await rt.say(user, f"hello {policy}", agent="hold", if_busy=policy)
            # committed at once: readable from the store before the run even started
            stored = [t for t in stored_events(config, user) if t[2] == "message"]
            assert len(stored) == 1
            _, msg_run, _, data = stored[0]
            assert msg_run == rid
            assert data["role"] == "user"
            assert data["text"] == f"hello {policy}"
            assert str(data["message_id"]).startswith("m_")
            for r in (await rt.get_runs(user)).runs:
                if r.state in (na.RunState.RUNNING, na.RunState.PENDING):
                    await rt.cancel_run(user, r.run_id)
    for policy in ("parallel", "enqueue", "interrupt", "reject"):
        assert_legal_runs(stored_events(config, f"user_{policy}"))
    assert not [t for t in stored_events(config, "user_reject") if t[2] == "message"]


@KINDS
@guest_test()
async def test_queued_runs_survive_a_restart_of_the_process_and_start_in_order(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        w = Watch(await rt.subscribe("alice"))
        running = await rt.start_run("alice", "hold")
        await w.held(running)
        queued = [
            await rt.start_run("alice", "hold", {"wait": False, "n": n}, if_busy="enqueue")
            for n in range(3)
        ]
        head = (await rt.get_runs("alice")).head_seq
    # the process stopped: the store has one run running and three queued
    with sqlite3.connect(db_path(config)) as conn:
        rows = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT run_id, state, reason FROM netra_runs WHERE user_id='alice'"
            )
        }
    assert rows[running] == ("running", None)
    assert [rows[q] for q in queued] == [("pending", "queued")] * 3

    async with open_rt(config, kind) as rt:
        w = Watch(await rt.subscribe("alice", resume_from=head))
        await w.until(
            lambda evs: any(e.run_id == running and e.event == "agent_started" for e in evs),
            limit=20,
        )
        await rt.send_to_run("alice", running, "go")  # the resumed attempt waits for it again
        await w.ended(running, *queued)
        infos = [await rt.wait_run("alice", q) for q in queued]

    resumed = [(e.event, e.data) for e in run_events(w.events, running)]
    assert resumed[:4] == [
        (
            "run_rolled_back",
            {
                "reason": "lost",
                "error": "the process running the attempt stopped",
                "attempt": 1,
                "will_restart": True,
            },
        ),
        ("run_state", {"state": "starting", "previous": "running", "reason": "recovered"}),
        ("agent_started", {"agent": "hold", "attempt": 2}),
        ("run_state", {"state": "running", "previous": "starting"}),
    ]
    assert [i.state for i in infos] == [na.RunState.COMPLETED] * 3  # never dead
    previous_end = w.seq_of(running, "run_state", "completed")
    for q in queued:  # in order, one at a time
        assert w.seq_of(q, "run_state", "starting") > previous_end
        previous_end = w.seq_of(q, "run_state", "completed")
    assert not [e for e in w.events if e.event == "run_rolled_back" and e.run_id in queued]
    assert_gapless(w.events, start=head + 1)
    assert_legal_runs(stored_events(config, "alice"))


@KINDS
@guest_test()
async def test_the_config_default_applies_unless_the_command_says(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path, if_busy="enqueue")
    async with open_rt(config, kind) as rt:
        w = Watch(await rt.subscribe("alice"))
        first = await rt.start_run("alice", "hold")  # nothing live: it starts
        await w.held(first)
        queued = await rt.say("alice", "later", agent="hold")  # the default: enqueue
        alongside = await rt.start_run("alice", "hold", if_busy="parallel")  # says otherwise
        await w.held(alongside)
        assert await state_of(rt, "alice", queued) == ("pending", "queued")
        await rt.send_to_run("alice", first, "stop")
        # it waits only for the runs live before it: not for one started after it
        await w.held(queued)
        assert await state_of(rt, "alice", alongside) == ("running", None)
        await rt.send_to_run("alice", alongside, "stop")
        await rt.send_to_run("alice", queued, "stop")
        await w.ended(first, alongside, queued)
    assert set(assert_legal_runs(w.events).values()) == {na.RunState.COMPLETED}


@KINDS
@guest_test()
async def test_a_bad_if_busy_is_a_command_error(tmp_path: Path, kind: str) -> None:
    with pytest.raises(na.exceptions.ConfigError):
        make_config(tmp_path, if_busy="sometimes")
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        w = Watch(await rt.subscribe("alice"))
        live = await rt.start_run("alice", "hold")
        await w.held(live)
        head = (await rt.get_runs("alice")).head_seq
        for bad in ("sometimes", "REJECT"):
            with pytest.raises(na.CommandError) as said:
                await rt.say("alice", "hi", agent="hold", if_busy=bad)
            assert said.value.code == "bad_request"
            assert not isinstance(said.value, na.exceptions.BusyError)
            with pytest.raises(na.CommandError):
                await rt.start_run("alice", "hold", if_busy=bad)
        assert (await rt.get_runs("alice")).head_seq == head
        await rt.send_to_run("alice", live, "stop")
        await w.ended(live)
