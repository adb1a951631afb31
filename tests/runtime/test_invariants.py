"""The architecture brief's invariants 1–6 (and 8), through the real store on a real SQLite file.

Each test names the invariant it guards. Events are checked against the database with an
independent ``sqlite3`` connection, never only against what the runtime says about itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import (
    WatermarkStore,
    as_tuples,
    assert_gapless,
    assert_legal_runs,
    db_path,
    ledger_attempts,
    make_config,
    read_until_ended,
    run_events,
    stored_events,
)
from runtime_agents import AGENTS_BY_KIND, Sleeper, ThreadedSleeper, test_metadata

import netra_actors as na
from netra_actors._store import SqlStore
from netra_actors.testing import guest_test

#: Every test that takes ``kind`` runs twice: with async agents and with threaded (pykka) ones.
KINDS = pytest.mark.parametrize("kind", ["async", "threaded"])


def open_rt(config: na.RuntimeConfig, kind: str, **kwargs: Any) -> Any:
    return na.open_runtime(config, agents=AGENTS_BY_KIND[kind], metadata=[test_metadata], **kwargs)


# -- invariants 1, 3, 8: per-user serialization, gapless order, isolation ------------------


@KINDS
@guest_test()
async def test_interleaved_users_are_isolated_ordered_and_gapless(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    users = [f"user{i}" for i in range(8)]
    received: dict[str, list[na.Event]] = {}
    async with open_rt(config, kind) as rt:

        async def one_user(user: str) -> None:
            sub = await rt.subscribe(user, resume_from=0)
            run_ids: list[str] = []

            async def start(agent: str, input: Any) -> None:
                run_ids.append(await rt.start_run(user, agent, input))

            async with trio.open_nursery() as n:  # concurrent commands for the same user
                for i in range(3):
                    n.start_soon(start, "steps", {"steps": 4 + i, "every": 2})
                n.start_soon(start, "crashy", {"crash_times": 1})
            received[user] = await read_until_ended(sub, run_ids)
            assert len(run_ids) == 4

        async with trio.open_nursery() as n:
            for user in users:
                n.start_soon(one_user, user)
        heads = {u: (await rt.get_runs(u)).head_seq for u in users}

    for user in users:
        events = received[user]
        assert all(e.user_id == user for e in events)  # 8: nobody else's events
        assert_gapless(events)  # 3: 1, 2, 3, … in order
        assert events[-1].seq == heads[user]
        assert as_tuples(events) == stored_events(config, user)  # what was sent was committed
        states = assert_legal_runs(events)  # 6
        assert sorted(s.value for s in states.values()) == ["completed"] * 4
    run_ids = {e.run_id for evs in received.values() for e in evs}
    assert len(run_ids) == 8 * 4  # no run shared between users


@KINDS
@guest_test()
async def test_mailbox_order_is_processing_order(tmp_path: Path, kind: str) -> None:
    """Invariant 1: messages to a user's session are handled one at a time, in order."""
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "echo", None)
        for i in range(50):
            await rt.send_to_run("alice", run_id, i)
        await rt.send_to_run("alice", run_id, "stop")
        events = await read_until_ended(sub, [run_id])
    echoed = [e.data["message"] for e in events if e.event == "echo"]
    assert echoed == list(range(50))
    assert_gapless(events, start=events[0].seq)


# -- invariant 2: commit before send -------------------------------------------------------


@KINDS
@guest_test()
async def test_no_event_reaches_a_subscriber_before_its_commit(tmp_path: Path, kind: str) -> None:
    import sqlite3

    config = make_config(tmp_path)
    inner = await SqlStore.open(config, extra_metadata=[test_metadata])
    store = WatermarkStore(inner)
    checked = 0
    try:
        async with na.open_runtime(config, agents=AGENTS_BY_KIND[kind], store=store) as rt:
            probe = sqlite3.connect(db_path(config))

            async def watch(user: str) -> None:
                nonlocal checked
                sub = await rt.subscribe(user)
                ids = [
                    await rt.start_run(user, "steps", {"steps": 12, "every": 3}) for _ in range(3)
                ]
                ids.append(await rt.start_run(user, "crashy", {"crash_times": 2}))
                ended: set[str] = set()
                with trio.fail_after(20):
                    while len(ended) < len(ids):
                        for e in await sub.receive_batch():
                            # the commit that recorded it has returned ...
                            assert e.seq <= store.committed.get(user, 0), (user, e.seq)
                            # ... and another connection already sees the row, as delivered
                            row = probe.execute(
                                "SELECT event, data FROM netra_events WHERE user_id=? AND seq=?",
                                (user, e.seq),
                            ).fetchone()
                            assert row is not None, (
                                f"{user} seq {e.seq} delivered but not committed"
                            )
                            assert row[0] == e.event
                            checked += 1
                            if e.event == "run_state" and e.data["state"] in (
                                "completed",
                                "failed",
                            ):
                                ended.add(e.run_id or "")

            async with trio.open_nursery() as n:
                for i in range(5):
                    n.start_soon(watch, f"u{i}")
            probe.close()
    finally:
        await inner.aclose()
    assert checked > 100


# -- invariants 4 and 5: rollback is visible, supervised restart ---------------------------


@KINDS
@guest_test()
async def test_crash_discards_staged_work_and_commits_one_rollback_per_crash(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "crashy", {"crash_times": 2})
        events = run_events(await read_until_ended(sub, [run_id]), run_id)
        info = await rt.wait_run("alice", run_id)
    assert info.state is na.RunState.COMPLETED
    assert info.attempt == 3
    names = [e.event for e in events]
    rollbacks = [e for e in events if e.event == "run_rolled_back"]
    assert [(r.data["attempt"], r.data["reason"], r.data["will_restart"]) for r in rollbacks] == [
        (1, "crash", True),
        (2, "crash", True),
    ]
    assert "boom 1" in rollbacks[0].data["error"]
    for r in rollbacks:  # each rollback comes before the run's next run_state (the restart)
        nxt = events[events.index(r) + 1]
        assert nxt.event == "run_state"
        assert nxt.data["state"] == "starting"
        assert nxt.data["reason"] == "restart"
    thinking = [e.data["text"] for e in events if e.event == "agent_thinking"]
    assert thinking == ["doomed attempt 3"]  # attempts 1 and 2 were never visible
    assert ledger_attempts(config, run_id) == [3]  # their staged rows were rolled back
    stored = [t for t in stored_events(config, "alice") if t[1] == run_id]
    assert stored == as_tuples(events)
    assert names.count("agent_started") == 3
    assert_legal_runs(events)


@KINDS
@guest_test()
async def test_restart_intensity_exceeded_ends_failed_and_spares_others(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        bob = await rt.subscribe("bob")
        doomed = await rt.start_run("alice", "crashy", {"crash_times": 9})
        fine = await rt.start_run("alice", "steps", {"steps": 20})
        other = await rt.start_run("bob", "steps", {"steps": 20})
        events = await read_until_ended(sub, [doomed, fine])
        bob_events = await read_until_ended(bob, [other])
    mine = run_events(events, doomed)
    rollbacks = [e.data for e in mine if e.event == "run_rolled_back"]
    assert len(rollbacks) == 4  # the first attempt + max_restarts=3 restarts
    assert [r["will_restart"] for r in rollbacks] == [True, True, True, False]
    final = mine[-1]
    assert final.event == "run_state"
    assert final.data["state"] == "failed"
    assert "restarts" in final.data["reason"]
    assert [e.event for e in mine].count(
        "run_state"
    ) == 3 + 3 * 2 + 1  # pending,starting,running; 3x(starting,running); failed
    assert assert_legal_runs(events)[fine] is na.RunState.COMPLETED
    assert assert_legal_runs(bob_events)[other] is na.RunState.COMPLETED
    assert ledger_attempts(config, doomed) == []


@KINDS
@guest_test()
async def test_cancel_rolls_back_uncommitted_work_once(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "sleeper", {"beat": True})
        seen: list[na.Event] = []
        with trio.fail_after(10):
            while not any(e.event == "agent_thinking" for e in seen):
                seen.extend(await sub.receive_batch())
        await trio.sleep(0.1)  # let it stage its uncommitted work
        await rt.cancel_run("alice", run_id)
        seen.extend(await read_until_ended(sub, [run_id]))
        head = (await rt.get_runs("alice")).head_seq
        with pytest.raises(na.exceptions.IllegalStateError):
            await rt.cancel_run("alice", run_id)
        assert (await rt.get_runs("alice")).head_seq == head  # a refused command changes nothing
    events = run_events(seen, run_id)
    rollbacks = [e.data for e in events if e.event == "run_rolled_back"]
    assert rollbacks == [
        {
            "reason": "cancelled",
            "error": "cancelled by the user",
            "attempt": 1,
            "will_restart": False,
        }
    ]
    assert events[-1].data == {"state": "cancelled", "previous": "running", "reason": "cancelled"}
    texts = [t[3].get("text") for t in stored_events(config, "alice")]
    assert "committed before sleeping" in texts
    assert "staged, never committed" not in texts
    assert ledger_attempts(config, run_id) == []


DEADLINE = na.policies.LivenessPolicy(heartbeat_timeout=30, run_timeout=0.4)
NO_BEAT = na.policies.LivenessPolicy(heartbeat_timeout=0.3, run_timeout=60)


class ShortDeadline(Sleeper):
    name = "short_deadline"
    liveness = DEADLINE


class NoHeartbeat(Sleeper):
    name = "no_heartbeat"
    liveness = NO_BEAT


class ThreadedShortDeadline(ThreadedSleeper):
    name = "short_deadline"
    liveness = DEADLINE


class ThreadedNoHeartbeat(ThreadedSleeper):
    name = "no_heartbeat"
    liveness = NO_BEAT


@pytest.mark.parametrize(
    ("agent", "reason", "state"),
    [
        (ShortDeadline, "timeout", "timeout"),
        (NoHeartbeat, "dead", "dead"),
        (ThreadedShortDeadline, "timeout", "timeout"),
        (ThreadedNoHeartbeat, "dead", "dead"),
    ],
)
@guest_test()
async def test_deadline_and_missing_heartbeat_roll_back_and_end_the_run(
    tmp_path: Path, agent: type[na.types.AgentBase], reason: str, state: str
) -> None:
    config = make_config(tmp_path)
    async with na.open_runtime(config, agents=[agent], metadata=[test_metadata]) as rt:
        sub = await rt.subscribe("alice")
        beat = agent.liveness is DEADLINE
        run_id = await rt.start_run("alice", agent.name, {"beat": beat})
        events = run_events(await read_until_ended(sub, [run_id]), run_id)
    rollbacks = [e.data for e in events if e.event == "run_rolled_back"]
    assert len(rollbacks) == 1
    assert rollbacks[0]["reason"] == reason
    assert rollbacks[0]["will_restart"] is False
    assert events[-1].data["state"] == state
    assert "staged, never committed" not in [e.data.get("text") for e in events]
    assert ledger_attempts(config, run_id) == []


@KINDS
@guest_test()
async def test_store_error_rolls_back_only_the_failed_unit(tmp_path: Path, kind: str) -> None:
    """A developer row that violates a constraint fails its unit alone (reason store_error)."""
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice")
        first = await rt.start_run("alice", "conflict", {"key": "same"})
        assert (await rt.wait_run("alice", first)).state is na.RunState.COMPLETED
        second = await rt.start_run("alice", "conflict", {"key": "same"})
        other = await rt.start_run("alice", "steps", {"steps": 5})
        events = await read_until_ended(sub, [first, second, other])
    mine = run_events(events, second)
    rollbacks = [e.data for e in mine if e.event == "run_rolled_back"]
    assert len(rollbacks) == 1
    assert rollbacks[0]["reason"] == "store_error"
    assert "UNIQUE" in rollbacks[0]["error"] or "unique" in rollbacks[0]["error"].lower()
    assert mine[-1].data["state"] == "failed"  # temporary: no restart
    assert "claiming same" in [e.data.get("text") for e in run_events(events, first)]
    assert "claiming same" not in [e.data.get("text") for e in mine]
    states = assert_legal_runs(events)
    assert states[other] is na.RunState.COMPLETED
    assert ledger_attempts(config, second) == []
    assert_gapless(events, start=events[0].seq)
    assert as_tuples(events) == [t for t in stored_events(config, "alice") if t[0] >= events[0].seq]


# -- invariant 6 (state machine at the API), 8 (isolation), 10 (bad input) -----------------


@KINDS
@guest_test()
async def test_refused_commands_are_typed_and_change_nothing(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        run_id = await rt.start_run("alice", "steps", {"steps": 1})
        await rt.wait_run("alice", run_id)
        head = (await rt.get_runs("alice")).head_seq
        with pytest.raises(na.exceptions.IllegalStateError):
            await rt.cancel_run("alice", run_id)
        with pytest.raises(na.exceptions.UnknownRunError) as other_users:
            await rt.cancel_run("mallory", run_id)  # exists, but not for mallory
        with pytest.raises(na.exceptions.UnknownRunError) as nobody:
            await rt.cancel_run("mallory", "r_does_not_exist")
        assert str(other_users.value) == str(nobody.value)
        assert await rt.get_run("mallory", run_id) is None
        with pytest.raises(na.exceptions.UnknownRunError):
            await rt.wait_run("mallory", run_id)
        with pytest.raises(na.exceptions.UnknownAgentError):
            await rt.start_run("alice", "nope", None)
        with pytest.raises(na.CommandError) as bad:
            await rt.start_run("alice", "steps", {1, 2})
        assert bad.value.code == "bad_request"
        with pytest.raises(na.CommandError):
            await rt.start_run("", "steps", None)
        with pytest.raises(na.CommandError):
            await rt.subscribe("alice", resume_from=head + 1)
        assert (await rt.get_runs("alice")).head_seq == head
        assert (await rt.get_runs("mallory")).runs == ()
        mallory = await rt.subscribe("mallory", resume_from=0)
        assert mallory.head_seq == 0


@KINDS
@guest_test()
async def test_slow_subscriber_is_cut_off_without_blocking_anyone(
    tmp_path: Path, kind: str
) -> None:
    """Invariant 9: a full socket mailbox closes that subscriber only."""
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        slow = await rt.subscribe("alice", capacity=5)
        fast = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "steps", {"steps": 30})
        events = await read_until_ended(fast, [run_id])
        with pytest.raises(na.exceptions.SlowConsumerError):
            await slow.receive_batch()
        # catching up from the store after the cut is exact
        resumed = await rt.subscribe("alice", resume_from=0)
        replayed: list[na.Event] = []
        with trio.fail_after(5):
            while len(replayed) < events[-1].seq:
                replayed.extend(await resumed.receive_batch())
    assert as_tuples(replayed[events[0].seq - 1 :]) == as_tuples(events)


@KINDS
@guest_test()
async def test_resume_is_exact_while_events_keep_coming(tmp_path: Path, kind: str) -> None:
    """Invariant 7 at the runtime API: replay up to the head, then live, no gap, no duplicate."""
    config = make_config(tmp_path, replay_page=7)
    async with open_rt(config, kind) as rt:
        first = await rt.start_run("alice", "steps", {"steps": 30})
        await rt.wait_run("alice", first)
        runner = await rt.start_run("alice", "steps", {"steps": 200, "every": 1})
        cursors = [0, 3, 17]
        subs = [await rt.subscribe("alice", resume_from=k) for k in cursors]
        for k, sub in zip(cursors, subs, strict=True):
            events = await read_until_ended(sub, [runner])
            assert_gapless(events, start=k + 1)
        assert_legal_runs(stored_events(config, "alice"))


@KINDS
@guest_test()
async def test_passivation_and_reactivation_continue_the_sequence(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path, idle_timeout=0.2)
    passivated = trio.Event()

    def tracer(user: str, what: str, detail: Any) -> None:
        if what == "passivated":
            passivated.set()

    async with open_rt(config, kind, tracer=tracer) as rt:
        run_id = await rt.start_run("alice", "steps", {"steps": 2})
        await rt.wait_run("alice", run_id)
        head = (await rt.get_runs("alice")).head_seq
        with trio.fail_after(5):
            await passivated.wait()
        assert not rt.is_active("alice")
        sub = await rt.subscribe("alice", resume_from=head)
        second = await rt.start_run("alice", "steps", {"steps": 2})
        events = await read_until_ended(sub, [second])
    assert events[0].seq == head + 1
    assert_gapless(events, start=head + 1)


@KINDS
@guest_test()
async def test_runs_left_live_by_a_stopped_process_are_resumed_on_activation(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        run_id = await rt.start_run("alice", "sleeper", None)
        sub = await rt.subscribe("alice", resume_from=0)
        with trio.fail_after(5):
            while "committed before sleeping" not in [
                e.data.get("text") for e in await sub.receive_batch()
            ]:
                pass
        head = (await rt.get_runs("alice")).head_seq
    # the runtime stopped without ending the run: the store still says "running"
    assert stored_events(config, "alice")[-1][3].get("text") == "committed before sleeping"
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice", resume_from=head)
        events: list[na.Event] = []
        with trio.fail_after(10):
            while not any(e.event == "agent_started" for e in events):
                events += await sub.receive_batch()
        await trio.sleep(0.2)  # the new attempt replays its committed thought: not again
        await rt.cancel_run("alice", run_id)
        events += await read_until_ended(sub, [run_id])
        info = await rt.wait_run("alice", run_id)
    assert info.state is na.RunState.CANCELLED
    assert [(e.event, e.data.get("state")) for e in events] == [
        ("run_rolled_back", None),
        ("run_state", "starting"),
        ("agent_started", None),
        ("run_state", "running"),
        ("run_rolled_back", None),
        ("run_state", "cancelled"),
    ]
    assert events[0].data == {
        "reason": "lost",
        "error": "the process running the attempt stopped",
        "attempt": 1,
        "will_restart": True,
    }
    assert events[1].data == {"state": "starting", "previous": "running", "reason": "recovered"}
    assert events[2].data == {"agent": "sleeper", "attempt": 2}
    assert_legal_runs(stored_events(config, "alice"))


@guest_test()
async def test_agent_errors_are_typed(tmp_path: Path) -> None:
    class Bad(na.Agent):
        name = "bad"
        restart_policy = na.policies.RestartPolicy(restart="temporary")

        async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
            kind = input
            if kind == "reserved":
                await ctx.emit("run_state", {"state": "completed"})
            elif kind == "not_json":
                await ctx.emit("custom", {"x": object()})
            elif kind == "bad_row":
                await ctx.stage("INSERT INTO x VALUES (1)")
            elif kind == "bad_result":
                return {1, 2}
            return "ok"

    config = make_config(tmp_path)
    async with na.open_runtime(config, agents=[Bad]) as rt:
        sub = await rt.subscribe("alice")
        ids = {
            k: await rt.start_run("alice", "bad", k)
            for k in ("reserved", "not_json", "bad_row", "bad_result")
        }
        events = await read_until_ended(sub, ids.values())
    errors = {
        kind: next(
            e.data["error"] for e in events if e.run_id == rid and e.event == "run_rolled_back"
        )
        for kind, rid in ids.items()
    }
    assert errors["reserved"].startswith("ReservedEventError")
    assert errors["not_json"].startswith("TypeError")
    assert "JSON" in errors["not_json"]
    assert errors["bad_row"].startswith("TypeError")
    assert "stage()" in errors["bad_row"]
    assert errors["bad_result"].startswith("TypeError")
    assert not any(e.event == "run_state" and e.data["state"] == "completed" for e in events)
