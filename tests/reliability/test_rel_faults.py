"""Issue 6, item 2, at the gateway level (the runtime level is ``tests/runtime/
test_fault_injection.py``): faults injected into a real server process over real sockets.

* a socket dropped (TCP abort, no close frame) while a replay batch or live events are in flight,
  or while its command executes: the server goes on, the user resumes exactly;
* ``cancel_run`` racing a run that commits as fast as it can: exactly one ``run_rolled_back`` per
  cancelled run, legal states, and each committed unit whole (its event and its staged row);
* the database locked beyond the busy timeout by another process (``BEGIN EXCLUSIVE`` from a
  separate ``sqlite3`` connection): a command gets ``internal`` and nothing of it is applied; a
  run's checkpoint is rolled back with reason ``store_error`` and the run restarts; the server
  serves throughout and after the lock is released;
* the database locked past the runtime's retries: the user's session fails (sockets 1011), the
  next activation resumes its run (one rollback, ``lost``), other users are untouched.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from relkit import (
    Peer,
    PeerClosed,
    RelServer,
    bounded,
    compare_with_store,
    new_user,
    record_figures,
    serving,
    store_report,
)
from test_rel_kill9 import check_notes


def said(peer: Peer, text: str) -> bool:
    """Whether ``peer`` received the user message ``text``."""
    return any(e["event"] == "message" and e["data"]["text"] == text for e in peer.events)


def tracebacks(srv: RelServer) -> int:
    return srv.full_log().count("Traceback")


def finish(srv: RelServer, peers: list[Peer]) -> list[str]:
    """Stop the server; the store's problems and each peer's differences from it."""
    assert srv.terminate() == 0
    report = store_report(srv.db)
    problems = list(report.problems)
    for peer in peers:
        problems += compare_with_store(peer, report)
    return problems


async def settle(peer: Peer, within: float = 30.0) -> None:
    """Read until every run of the user ended and the peer holds the head."""
    async with asyncio.timeout(within):
        while True:
            snapshot = await peer.get_runs()
            if (
                all(r["state"] in ("completed", "failed", "dead", "cancelled", "timeout")
                    for r in snapshot["runs"])
                and peer.last >= snapshot["head_seq"]
            ):  # fmt: skip
                return
            await asyncio.sleep(0.05)


# -- socket drops -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_socket_dropped_mid_batch_resumes_exactly(tmp_path: Path) -> None:
    rng = random.Random()
    figures: Counter[str] = Counter()
    with serving(tmp_path) as srv:

        @bounded(100)
        async def scenario() -> list[Peer]:
            user = new_user("drop")
            writer = Peer(srv.ws_url, user)
            await writer.connect()
            bystander = Peer(srv.ws_url, new_user("by"))
            await bystander.connect()
            runs = [await writer.say(f"history {i}") for i in range(30)]
            await writer.wait_runs_ended(runs)
            head = writer.last
            dropper = Peer(srv.ws_url, user, max_queue=1)
            for i in range(12):
                mode = ("replay", "live", "command")[i % 3]
                if mode == "replay":
                    # replay everything again from 0, drop after a random number of events
                    await dropper.close()
                    dropper = Peer(srv.ws_url, user, max_queue=1)
                    await dropper.connect()
                    cut = rng.randint(1, max(1, head - 1))
                    await dropper.wait_until(partial(lambda d, c: d.last >= c, dropper, cut))
                    dropper.abort()
                    figures["dropped_during_replay"] += 1
                elif mode == "live":
                    # events of several runs stream in while the socket drops
                    if dropper.closed:
                        await dropper.connect()
                    started = [await writer.say(f"live {i}.{k}") for k in range(4)]
                    await dropper.wait_until(partial(lambda d: bool(d.events), dropper))
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    dropper.abort()
                    await writer.wait_runs_ended(started)
                    figures["dropped_during_live_events"] += 1
                else:
                    # the socket drops right after sending a command: it still runs, whole
                    if dropper.closed:
                        await dropper.connect()
                    await dropper.send({"type": "say", "id": "x", "text": f"orphan {i}"})
                    dropper.abort()
                    text = f"orphan {i}"
                    await writer.wait_until(partial(said, writer, text))
                    orphan = writer.events[-1]["run_id"]
                    await writer.wait_runs_ended([orphan])
                    assert writer.runs[orphan] == "completed"
                    figures["dropped_with_a_command_in_flight"] += 1
                await dropper.finished()
                # resume exactly where the dropped socket stopped; the bystander is served
                await dropper.connect()
                await dropper.wait_seq(writer.last)
                assert await bystander.ping() < 5
                head = writer.last
            assert dropper.violations == []
            await settle(writer)
            await dropper.wait_seq(writer.last)
            # the server forgot every dropped socket
            for _ in range(200):
                health = await asyncio.to_thread(srv.health)
                if health["open_sockets"] == 3:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"dropped sockets were never freed: {health}")
            for peer in (writer, bystander, dropper):
                await peer.close()
            figures["events"] = writer.last
            return [writer, bystander, dropper]

        peers = scenario()
        problems = finish(srv, peers)
        figures["tracebacks_in_server_log"] = tracebacks(srv)
    record_figures(tmp_path, "faults_socket_drop", dict(figures))
    assert not problems, "\n".join(problems[:40])
    assert figures["tracebacks_in_server_log"] == 0


# -- cancellation racing commits ------------------------------------------------------------------


def notes_by_run(db: Path) -> dict[str, Counter[str]]:
    conn = sqlite3.connect(str(db))
    try:
        out: dict[str, Counter[str]] = {}
        for run_id, text in conn.execute("SELECT run_id, text FROM demo_notes"):
            if text.startswith("step "):
                out.setdefault(run_id, Counter())[text] += 1
        return out
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_cancel_racing_commits_rolls_back_exactly_once(tmp_path: Path) -> None:
    rng = random.Random()
    outcomes: dict[str, str] = {}
    with serving(tmp_path, "--rate", "1000", "--burst", "1000", entry="relserver") as srv:

        @bounded(100)
        async def scenario() -> list[Peer]:
            peers = [Peer(srv.ws_url, new_user("race")) for _ in range(2)]
            for peer in peers:
                await peer.connect()

            async def racer(peer: Peer) -> None:
                for i in range(25):
                    agent = "chatty" if i % 5 else "demo"
                    if agent == "chatty":
                        run_id = await peer.start("chatty", {"steps": rng.randint(20, 300)})
                    else:
                        run_id = await peer.say("cancel me")
                    await asyncio.sleep(rng.choice([0, 0, 0.001, 0.005, 0.02, rng.random() / 2]))
                    answer = await peer.command({"type": "cancel_run", "run_id": run_id})
                    outcome = answer["type"] if answer["type"] == "ack" else answer["code"]
                    outcomes[run_id] = outcome

            await asyncio.gather(*(racer(p) for p in peers))
            for peer in peers:
                await settle(peer)
                await peer.close()
            return peers

        peers = scenario()
        problems = finish(srv, peers)
    report = store_report(srv.db)
    notes = notes_by_run(srv.db)
    committed_steps: list[int] = []
    for user_events in report.events.values():
        by_run: dict[str, list[tuple[str, Any]]] = {}
        for _seq, run_id, name, _ts, data in user_events:
            if run_id is not None:
                by_run.setdefault(run_id, []).append((name, data))
        for run_id, evs in by_run.items():
            outcome = outcomes[run_id]
            rollbacks = [d for n, d in evs if n == "run_rolled_back"]
            final = report.final_states[run_id]
            if outcome == "ack":
                tail = [n for n, _ in evs[-2:]]
                ok = (
                    final == "cancelled"
                    and len(rollbacks) == 1
                    and rollbacks[0]["reason"] == "cancelled"
                    and rollbacks[0]["will_restart"] is False
                    and tail == ["run_rolled_back", "run_state"]
                )
            else:
                ok = outcome == "illegal_state" and final == "completed" and not rollbacks
            if not ok:
                problems.append(f"{run_id}: cancel answered {outcome}, events {evs}")
            # every committed unit whole: each "step i" event has its row, and no row without
            steps = Counter(d["text"] for n, d in evs if n == "agent_thinking")
            steps = Counter({k: v for k, v in steps.items() if k.startswith("step ")})
            if steps != notes.get(run_id, Counter()):
                problems.append(f"{run_id}: step events {steps} != rows {notes.get(run_id)}")
            if outcome == "ack":
                committed_steps.append(sum(steps.values()))
    problems += check_notes(srv.db, report)[1]
    counts = Counter(outcomes.values())
    record_figures(
        tmp_path,
        "faults_cancel_race",
        {
            "runs": len(outcomes),
            "cancel_answers": dict(counts),
            "steps_committed_before_cancel_min_median_max": [
                min(committed_steps, default=0),
                sorted(committed_steps)[len(committed_steps) // 2] if committed_steps else 0,
                max(committed_steps, default=0),
            ],
            "events_committed": report.total_events,
            "problems": len(problems),
        },
    )
    assert not problems, "\n".join(problems[:40])
    assert counts["ack"] >= 10, counts


# -- the database locked by another process ------------------------------------------------------


class Lock:
    """``BEGIN EXCLUSIVE`` on the server's SQLite file from a separate connection."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(
            str(db), timeout=10, isolation_level=None, check_same_thread=False
        )
        self.taken_at = 0.0

    def take(self) -> None:
        self.conn.execute("BEGIN EXCLUSIVE")
        self.taken_at = time.monotonic()

    def release(self) -> float:
        self.conn.execute("ROLLBACK")
        self.conn.close()
        return time.monotonic() - self.taken_at


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_database_locked_beyond_the_busy_timeout(tmp_path: Path) -> None:
    busy_timeout = 5.0  # RuntimeConfig.busy_timeout's default; the CLI has no flag for it
    figures: dict[str, Any] = {"busy_timeout_s": busy_timeout}
    with serving(tmp_path) as srv:

        @bounded(100)
        async def scenario() -> list[Peer]:
            user = new_user("locked")
            peer = Peer(srv.ws_url, user)
            bystander = Peer(srv.ws_url, new_user("by"))
            await peer.connect()
            await bystander.connect()
            await peer.wait_runs_ended([await peer.say("before the lock")])
            head = peer.last

            # A. a command whose unit cannot commit: `internal`, nothing of it applied
            lock = Lock(srv.db)
            await asyncio.to_thread(lock.take)
            t0 = time.monotonic()
            answer = await peer.command({"type": "say", "text": "during the lock"}, within=40)
            figures["command_answer"] = answer.get("code", answer["type"])
            figures["command_answer_after_s"] = round(time.monotonic() - t0, 2)
            figures["bystander_ping_during_lock_s"] = round(await bystander.ping(), 4)
            health = await asyncio.to_thread(srv.health)
            figures["healthz_during_lock"] = health["http_status"]
            await asyncio.sleep(max(0.0, busy_timeout + 1.5 - (time.monotonic() - t0)))
            figures["lock_a_held_s"] = round(await asyncio.to_thread(lock.release), 2)
            assert answer["type"] == "error"
            assert answer["code"] == "internal"
            snapshot = await peer.get_runs()
            assert snapshot["head_seq"] == head
            assert len(snapshot["runs"]) == 1
            assert peer.last == head
            await peer.wait_runs_ended([await peer.say("after the lock")])

            # B. a run's checkpoint cannot commit: rollback store_error, restart, completes
            run_id = await peer.start("slow", {"seconds": 4})
            await peer.wait_until(
                lambda: any(
                    e["run_id"] == run_id and e["event"] == "agent_thinking" for e in peer.events
                )
            )
            lock = Lock(srv.db)
            await asyncio.to_thread(lock.take)
            await asyncio.sleep(busy_timeout + 2.0)
            figures["lock_b_held_s"] = round(await asyncio.to_thread(lock.release), 2)
            await peer.wait_runs_ended([run_id], within=30)
            events = [e for e in peer.events if e["run_id"] == run_id]
            rollbacks = [e["data"] for e in events if e["event"] == "run_rolled_back"]
            figures["run_rollbacks"] = [(r["reason"], r["will_restart"]) for r in rollbacks]
            figures["run_final_state"] = peer.runs[run_id]
            assert [(r["reason"], r["will_restart"]) for r in rollbacks] == [("store_error", True)]
            assert peer.runs[run_id] == "completed"
            after = events[events.index(next(e for e in events if e["event"] == "run_rolled_back"))]
            assert after["seq"] + 1 in {e["seq"] for e in events}
            assert await bystander.ping() < 5
            for p in (peer, bystander):
                await p.close()
            return [peer, bystander]

        peers = scenario()
        problems = finish(srv, peers)
        log = srv.full_log()
    report = store_report(srv.db)
    texts = [
        d["text"] for evs in report.events.values() for _s, _r, n, _t, d in evs if n == "message"
    ]
    assert "during the lock" not in texts  # the refused command left nothing behind
    figures["problems"] = len(problems)
    figures["server_log_store_warnings"] = log.count("database is locked")
    figures["server_log_errors"] = log.count(" ERROR ")
    record_figures(tmp_path, "faults_db_locked", figures)
    assert not problems, "\n".join(problems[:40])


@pytest.mark.timeout(120)
def test_database_locked_past_the_retries_fails_the_session_only(tmp_path: Path) -> None:
    figures: dict[str, Any] = {"busy_timeout_s": 1.0, "store_retries": 3}
    with serving(tmp_path, entry="relserver", runtime={"busy_timeout": 1.0}) as srv:

        @bounded(100)
        async def scenario() -> list[Peer]:
            peer = Peer(srv.ws_url, new_user("down"))
            bystander = Peer(srv.ws_url, new_user("by"))
            await peer.connect()
            await bystander.connect()
            run_id = await peer.start("slow", {"seconds": 30})
            await peer.wait_until(lambda: peer.runs.get(run_id) == "running")
            lock = Lock(srv.db)
            await asyncio.to_thread(lock.take)
            t0 = time.monotonic()
            # the checkpoint fails, then the rollback notice fails store_retries times: the
            # session crashes and closes its sockets with 1011
            code = await peer.finished(within=30)
            figures["close_code"] = code
            figures["closed_after_s"] = round(time.monotonic() - t0, 2)
            figures["bystander_ping_while_down_s"] = round(await bystander.ping(), 4)
            figures["lock_held_s"] = round(await asyncio.to_thread(lock.release), 2)
            assert code == 1011
            # the next activation resumes the run (durable runs: one rollback, `lost`, then a new
            # attempt); resume is exact. It is cancelled so that the test need not wait it out.
            await peer.connect()
            await peer.wait_until(lambda: peer.runs.get(run_id) == "running", within=30)
            answer = await peer.command({"type": "cancel_run", "id": "c", "run_id": run_id})
            assert answer["type"] == "ack", answer
            await peer.wait_runs_ended([run_id])
            figures["run_final_state"] = peer.runs[run_id]
            assert peer.runs[run_id] == "cancelled"
            await settle(peer)
            try:
                assert await bystander.ping() < 5
            except PeerClosed:
                raise AssertionError("the bystander was disconnected") from None
            for p in (peer, bystander):
                await p.close()
            return [peer, bystander]

        peers = scenario()
        problems = finish(srv, peers)
    report = store_report(srv.db)
    figures["rollbacks"] = {
        r: [(d["reason"], d["will_restart"]) for d in ds] for r, ds in report.rollbacks.items()
    }
    figures["problems"] = len(problems)
    record_figures(tmp_path, "faults_store_down", figures)
    assert not problems, "\n".join(problems[:40])
    (only,) = report.rollbacks.values()
    assert [(d["reason"], d["will_restart"]) for d in only] == [
        ("lost", True),
        ("cancelled", False),
    ]
