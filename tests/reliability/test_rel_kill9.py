"""Issue 6, item 1: ``kill -9`` durability of the example server.

Several users stream events (demo, slow and crashy runs, cancellations) from their own websocket
clients while the harness kills the server with SIGKILL at random moments (22 kills), restarts it
on the same port and SQLite file, and every client resumes with ``resume_from`` its last ``seq``.
At the end the SQLite file is read with ``sqlite3`` and checked:

* ``PRAGMA integrity_check`` is ok, ``seq`` is 1..N per user;
* every event a client ever received is in the store with the same content (seq, run, event, ts,
  data): nothing was delivered that was not committed; and each client holds every committed
  event of its user (every committed event reached it after resume), in order, with no duplicate;
* every run that was live at a kill is resumed, never ended ``dead`` (durable runs): the first
  of it committed after the kill is a ``run_rolled_back`` (reason ``lost``, ``will_restart``
  true) followed by ``run_state`` ``starting`` (reason ``recovered``) — or, if it was
  ``completing``, ``completed``; or, if it was queued, its ``starting`` when its turn comes; if
  it was ``starting`` (between two attempts), its next ``agent_started``; no
  run is left live; every ``run_state`` chain is legal;
* the demo agents' staged rows (``demo_notes``) exist exactly for the attempts that reached
  ``completing``: a unit is applied whole or not at all.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from relkit import (
    FINAL_STATES,
    ConnectionClosed,
    Peer,
    PeerClosed,
    RelServer,
    bounded,
    compare_with_store,
    new_user,
    record_figures,
    store_report,
)
from websockets.exceptions import WebSocketException

KILLS = 22
USERS = 6
MAX_LIVE = 3
RETRYABLE = (OSError, WebSocketException, TimeoutError, PeerClosed, ConnectionClosed, EOFError)


class Stage:
    """Shared between the controller and the clients: is the server up?"""

    def __init__(self) -> None:
        self.up = asyncio.Event()
        self.stop = asyncio.Event()


async def act(peer: Peer, rng: random.Random, answers: Counter[str]) -> None:
    """One random command of the workload."""
    live = peer.live_runs
    roll = rng.random()
    if len(live) >= MAX_LIVE:
        roll = 0.85 + rng.random() * 0.15  # only cancel or look
    if roll < 0.35:
        frame: dict[str, Any] = {"type": "say", "text": f"{rng.randint(1, 99)} and {rng.random()}"}
    elif roll < 0.55:
        frame = {"type": "start_run", "agent": "slow", "input": {"seconds": rng.uniform(0.5, 3)}}
    elif roll < 0.85:
        crash_times = rng.choice([0, 1, 2, 4])
        frame = {"type": "start_run", "agent": "crashy", "input": {"crash_times": crash_times}}
    elif roll < 0.95 and live:
        frame = {"type": "cancel_run", "run_id": rng.choice(live)}
    else:
        frame = {"type": "get_runs"}
    answer = await peer.command(frame)
    key = answer["type"] if answer["type"] != "error" else f"error:{answer['code']}"
    answers[f"{frame['type']}->{key}"] += 1
    if answer["type"] == "error" and not (
        frame["type"] == "cancel_run" and answer["code"] == "illegal_state"
    ):
        peer.violations.append(f"unexpected answer to {frame}: {answer}")


async def client(peer: Peer, stage: Stage, rng: random.Random, answers: Counter[str]) -> None:
    while not stage.stop.is_set():
        if peer.closed:
            await stage.up.wait()
            try:
                await peer.connect()
            except RETRYABLE:
                await asyncio.sleep(0.05)
                continue
            except RuntimeError as exc:  # refused: e.g. resume_from beyond the head
                peer.violations.append(str(exc))
                return
        try:
            await act(peer, rng, answers)
        except RETRYABLE:
            # yield: a send on a dead socket can fail without ever suspending, and the reader
            # task that notices the close must get to run
            await asyncio.sleep(0.02)
            continue
        await asyncio.sleep(rng.uniform(0.02, 0.2))


def check_runs_across_kills(
    events: dict[str, list[tuple[int, str | None, str, float, Any]]], kills: list[float]
) -> tuple[Counter[str], list[str]]:
    """Runs with committed events on both sides of a kill: after it, only their recovery."""
    outcome: Counter[str] = Counter()
    problems: list[str] = []
    by_run: dict[str, list[tuple[int, str | None, str, float, Any]]] = {}
    for evs in events.values():
        for ev in evs:
            if ev[1] is not None:
                by_run.setdefault(ev[1], []).append(ev)
    for run_id, evs in by_run.items():
        first, last = evs[0][3], evs[-1][3]
        kill = next((k for k in kills if first < k < last), None)
        if kill is None:
            continue
        after = [(name, data) for _seq, _run, name, ts, data in evs if ts > kill]
        names = [n for n, _ in after]
        ok = not any(n == "run_state" and d["state"] == "dead" for n, d in after)
        if names[:2] == ["run_rolled_back", "run_state"]:
            rollback, state = after[0][1], after[1][1]
            ok = ok and (
                rollback["reason"] == "lost"
                and rollback["will_restart"] is True
                and state["state"] == "starting"
                and state.get("reason") == "recovered"
            )
            outcome["recovered"] += 1
        elif names[:1] == ["run_state"] and after[0][1]["previous"] == "completing":
            ok = ok and after[0][1]["state"] == "completed"
            outcome["completed_from_completing"] += 1
        elif names[:1] == ["run_state"] and after[0][1]["previous"] == "pending":
            outcome["queued"] += 1  # its turn came after the kill
        elif names[:1] == ["agent_started"]:
            outcome["between_attempts"] += 1  # ``starting`` (a restart's backoff): no attempt lost
        else:
            ok = False
        if not ok:
            problems.append(f"run {run_id} live at the kill at {kill}: after it {after}")
    return outcome, problems


AGENTS = ("demo", "crashy")


def check_notes(db: Path, report: Any) -> tuple[int, list[str]]:
    """``demo_notes`` rows of demo and crashy runs == the (run, attempt) pairs that reached
    ``completing`` (those agents stage their row in their last unit)."""
    expected: Counter[tuple[str, int]] = Counter()
    checked = {run_id for (_u, run_id), row in report.runs.items() if row["agent"] in AGENTS}
    for evs in report.events.values():
        attempt: dict[str, int] = {}
        for _seq, run_id, name, _ts, data in evs:
            if run_id not in checked:
                continue
            if name == "agent_started":
                attempt[run_id] = data["attempt"]
            elif name == "run_state" and data["state"] == "completing":
                expected[(run_id, attempt[run_id])] += 1
    conn = sqlite3.connect(str(db))
    try:
        rows = Counter(
            (run_id, attempt)
            for run_id, attempt in conn.execute("SELECT run_id, attempt FROM demo_notes")
            if run_id in checked
        )
    finally:
        conn.close()
    problems = []
    if rows != expected:
        problems.append(f"demo_notes differ: extra {rows - expected}, missing {expected - rows}")
    return sum(rows.values()), problems


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("NETRA_RELIABILITY_SEED", str(random.randrange(1 << 30))))
    print(f"seed {seed} (set NETRA_RELIABILITY_SEED to replay the same kill schedule)")
    rng = random.Random(seed)
    srv = RelServer(tmp_path)
    kills: list[float] = []
    received_at_kill: list[int] = []
    answers: Counter[str] = Counter()
    started = time.monotonic()

    @bounded(200)
    async def scenario() -> list[Peer]:
        stage = Stage()
        await asyncio.to_thread(srv.start)
        stage.up.set()
        peers = [Peer(srv.ws_url, new_user("k9")) for _ in range(USERS)]
        tasks = [
            asyncio.create_task(client(p, stage, random.Random(rng.random()), answers))
            for p in peers
        ]
        try:
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                stage.up.clear()
                received_at_kill.append(sum(len(p.events) for p in peers))
                kills.append(time.time())
                assert srv.proc is not None
                srv.proc.kill()
                await asyncio.to_thread(srv.proc.wait, 10)
                await asyncio.to_thread(srv.start)
                stage.up.set()
            stage.stop.set()
            async with asyncio.timeout(30):
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        # every client resumes once more and reads until all its runs ended
        for peer in peers:
            if peer.closed:
                await peer.connect()
        deadline = time.monotonic() + 40
        for peer in peers:
            while True:
                snapshot = await peer.get_runs()
                done = all(r["state"] in FINAL_STATES for r in snapshot["runs"])
                if done and peer.last >= snapshot["head_seq"]:
                    break
                assert time.monotonic() < deadline, f"{peer.user}: runs never ended: {snapshot}"
                await asyncio.sleep(0.2)
        for peer in peers:
            await peer.close()
        return peers

    try:
        peers = scenario()
        assert srv.terminate() == 0
    finally:
        srv.stop()
    elapsed = time.monotonic() - started
    report = store_report(srv.db)
    problems = list(report.problems)
    for peer in peers:
        problems += compare_with_store(peer, report)
    spanning, span_problems = check_runs_across_kills(report.events, kills)
    problems += span_problems
    notes, note_problems = check_notes(srv.db, report)
    problems += note_problems
    unexpected = {k: v for k, v in answers.items() if "error" in k and "illegal_state" not in k}
    received = sum(len(p.events) for p in peers)
    record_figures(
        tmp_path,
        "kill9",
        {
            "seed": seed,
            "kills": len(kills),
            "users": USERS,
            "seconds": round(elapsed, 1),
            "restart_seconds_mean": round(sum(srv.start_seconds) / len(srv.start_seconds), 3),
            "restart_seconds_max": round(max(srv.start_seconds), 3),
            "events_committed": report.total_events,
            "events_received": received,
            "events_received_before_each_kill": received_at_kill,
            "reconnects": sum(p.connects for p in peers),
            "runs_by_final_state": report.state_counts(),
            "runs_live_at_a_kill": dict(spanning),
            "demo_notes_rows": notes,
            "commands": dict(sorted(answers.items())),
            "integrity_check": report.integrity,
            "problems": len(problems),
        },
    )
    assert not problems, "\n".join(problems[:40])
    assert not unexpected, unexpected
    assert len(kills) >= 20
    assert report.integrity == "ok"
    assert received == report.total_events
    # the kills did hit live work
    assert spanning["recovered"] >= 5, spanning
