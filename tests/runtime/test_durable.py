"""Durable runs (protocol v1, "Durable runs: what a client sees"; architecture brief §8).

Through the real store on a SQLite file, for async agents and their threaded twins:

* a new attempt is fed the run's journal: what an earlier attempt committed (thoughts, messages,
  streamed messages, tool calls, events) shows once in the stream, however many attempts;
* an attempt that does something else is recorded once (a divergence) and goes on live;
* runs left by a lost process are resumed by the next runtime on the file: a running one is
  rolled back ``lost`` and restarted (``recovered``); one waiting for an answer keeps waiting,
  and the answer resumes it; a durable sleep wakes at its time;
* a drain hands the runs over to another runtime on the same file;
* a run scheduled with ``start_at`` starts at that time (± 1 s); a waiting run holds no attempt
  and its session may passivate;
* many timers of one user due together each wake once, in due order (one unit when they are
  all due as the user is taken).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from durable_agents import CALLS, DURABLE_AGENTS
from helpers import (
    assert_legal_runs,
    db_path,
    make_config,
    read_until_ended,
    run_events,
    stored_events,
)

import netra_actors as na
from netra_actors.testing import guest_test

KINDS = pytest.mark.parametrize("kind", ["async", "threaded"])
USER = "alice"


def open_rt(config: na.RuntimeConfig, kind: str) -> Any:
    return na.open_runtime(config, agents=DURABLE_AGENTS[kind])


def names(events: list[na.Event]) -> list[str]:
    return [e.event for e in events]


async def read_until(sub: na.types.Subscription, seen: list[na.Event], pred: Any) -> None:
    with trio.fail_after(15):
        while not pred(seen):
            seen.extend(await sub.receive_batch())


def of_run(config: na.RuntimeConfig, run_id: str) -> list[tuple[str, Any]]:
    return [(e, d) for _s, r, e, d in stored_events(config, USER) if r == run_id]


@KINDS
@guest_test()
async def test_what_an_attempt_committed_shows_once_however_many_attempts(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe(USER, deltas=True)
        run_id = await rt.start_run(USER, "story", {"crash": True})
        items: list[Any] = []
        with trio.fail_after(15):
            while not any(
                isinstance(i, na.Event)
                and i.event == "run_state"
                and i.data["state"] == "completed"
                for i in items
            ):
                items += await sub.receive_items()
        info = await rt.wait_run(USER, run_id)

    assert info.state is na.RunState.COMPLETED
    assert info.attempt == 2  # it crashed once, after committing everything
    assert CALLS[f"{run_id}:lookup"] == 1  # the tool ran once
    events = of_run(config, run_id)
    said = [d["text"] for e, d in events if e == "message"]
    assert said == ["hello", "streamed text"]  # each message once
    assert [e for e, _ in events if e in ("agent_thinking", "found", "tool_executing")] == [
        "agent_thinking",
        "tool_executing",
        "found",
    ]
    assert not [e for e, _ in events if e.endswith("diverged")]
    # the replayed streamed message sent no new provisional text
    deltas = [i for i in items if isinstance(i, na.Delta)]
    assert {d.attempt for d in deltas} == {1}
    assert "".join(d.text for d in deltas) == "streamed text"
    assert_legal_runs(stored_events(config, USER))


@KINDS
@guest_test()
async def test_an_attempt_that_does_something_else_is_recorded_once_and_goes_on_live(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        run_id = await rt.start_run(USER, "changing", None)
        info = await rt.wait_run(USER, run_id)
    assert info.state is na.RunState.COMPLETED
    events = [(e, d) for e, d in of_run(config, run_id) if e not in ("run_state", "agent_started")]
    assert events == [
        ("same", {"n": 1}),
        ("which", {"attempt": 1}),
        ("after", {"n": 2}),
        ("run_rolled_back", events[3][1]),
        (
            "replay_diverged",
            {
                "position": 1,
                "expected": {"kind": "event", "event": "which"},
                "actual": {"kind": "event", "event": "which"},
                "attempt": 2,
            },
        ),
        ("which", {"attempt": 2}),
        ("after", {"n": 2}),  # live after the divergence
        ("agent_completed", {"result": "done"}),
    ]


@KINDS
@guest_test()
async def test_runs_of_a_lost_process_resume_in_the_next_one(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe(USER)
        held = await rt.start_run(USER, "hold", None)
        asked = await rt.start_run(USER, "question", None)
        napping = await rt.start_run(USER, "nap", {"seconds": 2.0})
        seen: list[na.Event] = []
        await read_until(
            sub,
            seen,
            lambda s: (
                {"input_requested", "sleeping"} <= set(names(s))
                and any(e.run_id == held and e.event == "message" for e in s)
            ),
        )
        head = (await rt.get_runs(USER)).head_seq
        (sleeping,) = [e for e in seen if e.event == "sleeping"]
    # the process is gone (no drain): every run is still live in the store
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe(USER, resume_from=head)
        after: list[na.Event] = []
        await read_until(
            sub, after, lambda s: any(e.run_id == held and e.event == "agent_started" for e in s)
        )
        info = await rt.get_run(USER, asked)
        assert info is not None
        assert (info.state, info.wait) == (na.RunState.RUNNING, "input")  # it still waits
        await rt.send_input(USER, asked, "Oslo")
        await rt.send_to_run(USER, held, "released")
        after += await read_until_ended(sub, [held, asked, napping])
        infos = {r: await rt.wait_run(USER, r) for r in (held, asked, napping)}

    assert {r: i.state for r, i in infos.items()} == dict.fromkeys(infos, na.RunState.COMPLETED)
    # the running one lost its attempt: one rollback, recovered, a new attempt that replays
    resumed = run_events(after, held)
    assert [(e.event, e.data.get("reason")) for e in resumed[:2]] == [
        ("run_rolled_back", "lost"),
        ("run_state", "recovered"),
    ]
    assert resumed[0].data["will_restart"] is True
    assert [e.data["text"] for e in resumed if e.event == "message"] == []  # not again
    # the waiting ones lost nothing: no rollback, no second question, no second greeting
    for run_id in (asked, napping):
        assert "run_rolled_back" not in names(run_events(after, run_id))
    assert names(run_events(after, asked)).count("input_requested") == 0
    assert [e.data["text"] for e in run_events(after, asked) if e.event == "message"] == [
        "Oslo: sunny"
    ]
    assert CALLS[f"{asked}:lookup"] == 1
    # the sleep woke at its time (± 1 s), in the new process
    woke = infos[napping].result["woke"]
    assert abs(woke - sleeping.data["until"]) <= 1.0
    assert not [e for e in after if e.event == "run_state" and e.data["state"] == "dead"]
    assert_legal_runs(stored_events(config, USER))


@guest_test()
async def test_a_drain_hands_the_runs_over_to_another_runtime(tmp_path: Path) -> None:
    config = make_config(tmp_path, recovery_scan=0.1)
    async with open_rt(config, "async") as a, open_rt(config, "async") as b:
        held = await a.start_run(USER, "hold", None)  # a owns alice
        sub = await b.subscribe(USER, resume_from=0)  # b follows her
        seen: list[na.Event] = []
        await read_until(sub, seen, lambda s: "message" in names(s))
        assert a.is_active(USER)
        started = trio.current_time()
        await a.drain(0.3)  # the attempt waits on its inbox: no commit comes, it is stopped
        assert not a.is_active(USER)
        await read_until(
            sub, seen, lambda s: any(e.event == "agent_started" and e.seq > 4 for e in s)
        )
        assert trio.current_time() - started < 5
        await b.send_to_run(USER, held, "released")
        seen += await read_until_ended(sub, [held])
        info = await b.wait_run(USER, held)
    assert info.state is na.RunState.COMPLETED
    events = run_events(seen, held)
    assert [(e.event, e.data.get("reason")) for e in events if e.event == "run_rolled_back"] == [
        ("run_rolled_back", "lost")
    ]
    assert [e.data["text"] for e in events if e.event == "message"] == ["holding"]  # once
    assert not [e for e in events if e.event == "run_state" and e.data["state"] == "dead"]


@guest_test()
async def test_a_scheduled_run_starts_at_its_time_and_can_be_cancelled(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, "async") as rt:
        sub = await rt.subscribe(USER)
        at = time.time() + 1.5
        run_id = await rt.say(USER, "wake me", agent="nap", start_at=at)
        info = await rt.get_run(USER, run_id)
        assert info is not None
        assert (info.state, info.reason, info.wait) == (
            na.RunState.PENDING,
            "scheduled",
            "scheduled",
        )
        assert info.wake_at == pytest.approx(at)
        other = await rt.start_run(USER, "nap", {"seconds": 0}, start_at=time.time() + 3600)
        await rt.cancel_run(USER, other)
        seen: list[na.Event] = []
        await read_until(
            sub, seen, lambda s: any(e.run_id == run_id and e.event == "agent_started" for e in s)
        )
        (started,) = [e for e in seen if e.run_id == run_id and e.event == "agent_started"]
        with pytest.raises(na.CommandError, match="a year"):
            await rt.start_run(USER, "nap", None, start_at=time.time() + 400 * 86400)
        await rt.cancel_run(USER, run_id)
    assert abs(started.ts - at) <= 1.0
    first = [e for e in seen if e.run_id == run_id][:2]
    assert [(e.event, e.data) for e in first] == [
        ("message", first[0].data),
        ("run_state", {"state": "pending", "previous": None, "reason": "scheduled"}),
    ]
    assert last_state(config, other) == "cancelled"


def last_state(config: na.RuntimeConfig, run_id: str) -> str:
    states = [
        str(d["state"])
        for _s, r, e, d in stored_events(config, USER)
        if r == run_id and e == "run_state"
    ]
    return states[-1]


@guest_test()
async def test_waiting_runs_hold_no_attempt_and_their_session_passivates(tmp_path: Path) -> None:
    config = make_config(tmp_path, idle_timeout=0.3, max_live_runs_per_user=200)
    async with open_rt(config, "async") as rt:
        sub = await rt.subscribe(USER)
        ids = [await rt.start_run(USER, "question", None) for _ in range(100)]
        seen: list[na.Event] = []
        await read_until(sub, seen, lambda s: names(s).count("input_requested") == 100)
        stats = rt.statistics()
        assert (stats.live_runs, stats.attempts) == (100, 0)
        sub.close()
        with trio.fail_after(5):
            while rt.is_active(USER):  # noqa: ASYNC110 (nothing but rows: the session stops)
                await trio.sleep(0.05)
        assert rt.statistics().live_runs == 0
        await rt.send_input(USER, ids[0], "Bergen")  # activates the user: the run resumes
        info = await rt.wait_run(USER, ids[0])
    assert info.result == {"city": "Bergen", "weather": "sunny"}


@guest_test()
async def test_a_sleep_of_a_passivated_session_wakes_by_the_recovery_scan(tmp_path: Path) -> None:
    config = make_config(tmp_path, idle_timeout=0.2, recovery_scan=0.2)
    async with open_rt(config, "async") as rt:
        run_id = await rt.start_run(USER, "nap", {"seconds": 1.5})
        asked_at = time.time()
        with trio.fail_after(5):
            while rt.is_active(USER):  # noqa: ASYNC110 (the session passivates)
                await trio.sleep(0.05)
        with trio.fail_after(10):
            while True:
                info = await rt.get_run(USER, run_id)
                assert info is not None
                if info.state is na.RunState.COMPLETED:
                    break
                await trio.sleep(0.05)
    assert abs(info.result["woke"] - (asked_at + 1.5)) <= 1.0


TIMERS = 12


def woken_in_order(config: na.RuntimeConfig, ids: list[str]) -> list[tuple[int, float, str]]:
    """Each run's story, checked: one sleep, attempts 1 and 2 (one wake), completed once, no
    rollback. Returns (seq, ts, run_id) of each wake's ``agent_started``, in seq order."""
    rows = stored_events(config, USER)
    wakes = []
    for run_id in ids:
        mine = [(s, e, d) for s, r, e, d in rows if r == run_id]
        assert [e for _s, e, _d in mine].count("sleeping") == 1
        assert [d["attempt"] for _s, e, d in mine if e == "agent_started"] == [1, 2]
        assert [e for _s, e, _d in mine].count("agent_completed") == 1
        assert "run_rolled_back" not in [e for _s, e, _d in mine]
        (seq,) = [s for s, e, d in mine if e == "agent_started" and d["attempt"] == 2]
        wakes.append(seq)
    with sqlite3.connect(db_path(config)) as conn:
        ts = dict(
            conn.execute(
                "SELECT seq, ts FROM netra_events WHERE user_id = ? AND event = 'agent_started'",
                (USER,),
            ).fetchall()
        )
    return sorted((seq, ts[seq], run_id) for seq, run_id in zip(wakes, ids, strict=True))


def untils(config: na.RuntimeConfig, ids: list[str]) -> dict[str, float]:
    rows = stored_events(config, USER)
    return {str(r): float(d["until"]) for _s, r, e, d in rows if e == "sleeping" and r in ids}


@guest_test()
async def test_timers_of_a_user_due_together_wake_once_each_in_due_order_in_one_unit(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    # admitted in one order, due in the reverse one
    seconds = [1.0 + 0.03 * (TIMERS - i) for i in range(TIMERS)]
    async with open_rt(config, "async") as rt:
        sub = await rt.subscribe(USER)
        ids = [await rt.start_run(USER, "nap", {"seconds": s}) for s in seconds]
        seen: list[na.Event] = []
        await read_until(sub, seen, lambda s: names(s).count("sleeping") == TIMERS)
    # no process holds them now: they are rows, all due by the time the next one takes the user
    due = untils(config, ids)
    await trio.sleep(max(0.0, max(due.values()) - time.time()) + 0.1)
    async with open_rt(config, "async") as rt:  # the recovery scan takes the user
        infos = [await rt.wait_run(USER, r) for r in ids]
    assert {i.state for i in infos} == {na.RunState.COMPLETED}
    wakes = woken_in_order(config, ids)
    assert [r for _s, _t, r in wakes] == sorted(ids, key=due.__getitem__)  # in due order
    # one unit: the wakes' events are consecutive and share the unit's commit time
    assert [s for s, _t, _r in wakes] == list(range(wakes[0][0], wakes[0][0] + TIMERS))
    assert len({t for _s, t, _r in wakes}) == 1
    assert_legal_runs(stored_events(config, USER))


@pytest.mark.parametrize("spacing", [0.0, 0.02])
@guest_test()
async def test_timers_due_while_the_session_is_active_wake_once_each_in_due_order(
    tmp_path: Path, spacing: float
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, "async") as rt:
        # admitted in one order, due in the reverse one (or all within a few milliseconds)
        at = time.time() + 2.0
        ids = []
        for i in range(TIMERS):
            left = at + spacing * (TIMERS - i) - time.time()
            ids.append(await rt.start_run(USER, "nap", {"seconds": left}))
        infos = [await rt.wait_run(USER, r) for r in ids]
    assert {i.state for i in infos} == {na.RunState.COMPLETED}
    due = untils(config, ids)
    wakes = woken_in_order(config, ids)
    assert [r for _s, _t, r in wakes] == sorted(ids, key=due.__getitem__)
    assert_legal_runs(stored_events(config, USER))
