"""Issue 6, item 7: graceful shutdown under load.

Thirty sockets of twenty-five users stream demo runs (each user also has a long ``slow`` run
live) when the server gets SIGTERM. Checked: every socket is closed with 1001 within the
shutdown timeout, the process exits 0 within its deadline, and in the SQLite file no unit of work
is half-applied (seq gapless, every ``run_state`` chain legal, the runs table equal to the
events, ``demo_notes`` rows exactly for the attempts that reached ``completing``). After a
restart every client resumes with ``resume_from`` and ends up with exactly the store's events;
the runs the shutdown interrupted are resumed (durable runs: ``run_rolled_back`` reason
``lost``, then ``starting`` reason ``recovered``), never ended ``dead``; the long ones are then
cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import pytest
from relkit import (
    FINAL_STATES,
    Peer,
    PeerClosed,
    RelServer,
    bounded,
    compare_with_store,
    new_user,
    record_figures,
    store_report,
)
from test_rel_kill9 import check_notes
from websockets.exceptions import ConnectionClosed

SHUTDOWN_TIMEOUT = 5.0
EXIT_DEADLINE = SHUTDOWN_TIMEOUT + 5.0
"""Sockets get ``--shutdown-timeout``; then in-flight commits finish and the process exits."""


async def stream(peer: Peer, counter: list[int]) -> None:
    """Keep demo runs going until the socket closes."""
    n = 0
    try:
        while not peer.closed:
            if len(peer.live_runs) < 4:
                n += 1
                await peer.say(f"message {n} with {n * 7} in it")
                counter[0] += 1
            await asyncio.sleep(0.05)
    except (PeerClosed, ConnectionClosed):
        return


def recovered(peer: Peer, run_id: str) -> bool:
    """``peer`` saw ``run_id`` resumed (``run_state`` reason ``recovered``)."""
    return any(
        e["run_id"] == run_id
        and e["event"] == "run_state"
        and e["data"].get("reason") == "recovered"
        for e in peer.events
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigterm_under_load_closes_1001_and_loses_nothing(tmp_path: Path) -> None:
    srv = RelServer(tmp_path, "--shutdown-timeout", str(SHUTDOWN_TIMEOUT))
    users = [new_user("sd") for _ in range(25)]
    figures: dict[str, object] = {}

    @bounded(150)
    async def scenario() -> list[Peer]:
        await asyncio.to_thread(srv.start)
        peers = [Peer(srv.ws_url, u) for u in users] + [Peer(srv.ws_url, u) for u in users[:5]]
        for peer in peers:
            await peer.connect()
        slow = [await peer.start("slow", {"seconds": 120}) for peer in peers[:25]]
        said = [0]
        tasks = [asyncio.create_task(stream(p, said)) for p in peers]
        try:
            await asyncio.sleep(3.0)
            assert all(p.events for p in peers)
            received_before = sum(len(p.events) for p in peers)
            t0 = time.monotonic()
            srv.sigterm()
            codes = [await p.finished(within=SHUTDOWN_TIMEOUT + 10) for p in peers]
            close_after = max(p.close_times[-1] for p in peers) - t0
            assert srv.proc is not None
            code = await asyncio.to_thread(srv.proc.wait, EXIT_DEADLINE + 10)
            exit_after = time.monotonic() - t0
            async with asyncio.timeout(10):
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        figures.update(
            sockets=len(peers),
            users=len(users),
            says_acked=said[0],
            socket_events_before_sigterm=received_before,
            socket_events_by_close=sum(len(p.events) for p in peers),
            close_codes=sorted(set(codes), key=str),
            last_close_after_sigterm_s=round(close_after, 3),
            exit_after_sigterm_s=round(exit_after, 3),
            exit_code=code,
        )
        assert codes == [1001] * len(peers), codes
        assert close_after <= SHUTDOWN_TIMEOUT + 1.0
        assert code == 0
        assert exit_after <= EXIT_DEADLINE
        # the file as the stopped process left it: nothing half-applied
        report = store_report(srv.db, allow_live=True)
        problems = list(report.problems)
        for peer in peers:
            problems += compare_with_store(peer, report, exact=False)
        problems += check_notes(srv.db, report)[1]
        assert not problems, "\n".join(problems[:40])
        live_left = sum(1 for s in report.final_states.values() if s not in FINAL_STATES)
        figures["runs_live_in_store_after_exit"] = live_left
        figures["events_committed_at_exit"] = report.total_events
        # restart: everyone resumes exactly; interrupted runs are recovered, the long ones
        # then cancelled
        await asyncio.to_thread(srv.start)
        for peer in peers:
            await peer.connect()
        for run_id, peer in zip(slow, peers[:25], strict=True):
            await peer.wait_until(functools.partial(recovered, peer, run_id), within=30)
            answer = await peer.command({"type": "cancel_run", "run_id": run_id})
            assert answer["type"] == "ack", answer
        for peer in peers:
            async with asyncio.timeout(30):
                while True:
                    snapshot = await peer.get_runs()
                    if (
                        all(r["state"] in FINAL_STATES for r in snapshot["runs"])
                        and peer.last >= snapshot["head_seq"]
                    ):
                        break
                    await asyncio.sleep(0.1)
        for peer in peers:
            await peer.close()
        for run_id, peer in zip(slow, peers[:25], strict=True):
            assert peer.runs[run_id] == "cancelled"
        figures["slow_runs"] = slow
        return peers

    try:
        peers = scenario()
        assert srv.terminate() == 0
    finally:
        srv.stop()
    report = store_report(srv.db)
    problems = list(report.problems)
    for peer in peers:
        problems += compare_with_store(peer, report)
    problems += check_notes(srv.db, report)[1]
    dead = [r for r, s in report.final_states.items() if s == "dead"]
    problems += [f"{run_id}: ended dead (durable runs are resumed)" for run_id in dead]
    slow_runs = figures.pop("slow_runs")
    assert isinstance(slow_runs, list)
    for run_id in slow_runs:
        rollbacks = report.rollbacks.get(run_id, [])
        reasons = [(r["reason"], r["will_restart"]) for r in rollbacks]
        if reasons != [("lost", True), ("cancelled", False)]:
            problems.append(f"{run_id}: interrupted by the shutdown, then rollbacks {rollbacks}")
    figures.update(
        events_committed=report.total_events,
        runs_by_final_state=report.state_counts(),
        integrity_check=report.integrity,
        problems=len(problems),
    )
    record_figures(tmp_path, "shutdown", figures)
    assert not problems, "\n".join(problems[:40])
    assert len(slow_runs) == 25
