"""Issue 18: a question survives its server (real processes, a SQLite file).

``netra-actors serve`` runs the ``ask`` demo agent until it waits for an answer; the server is
then killed (``kill -9``) or stopped (SIGTERM: a drain that hands the run over) and started
again on the same file and port. The client resumes: the question still waits (no rollback, no
second question), ``send_input`` answers it and the run completes. After ``kill -9`` the new
process proves the old one gone (its ``flock`` beside the file) and takes its users at once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from relkit import Peer, RelServer, bounded, new_user


def events_of(peer: Peer, run_id: str, name: str) -> list[dict[str, object]]:
    return [e for e in peer.events if e.get("run_id") == run_id and e.get("event") == name]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", ["kill", "sigterm"])
def test_a_question_survives_a_restart_of_its_server(tmp_path: Path, stop: str) -> None:
    srv = RelServer(tmp_path, "--shutdown-timeout", "2")
    user = new_user("dq")

    @bounded(100)
    async def scenario() -> tuple[Peer, str, float]:
        await asyncio.to_thread(srv.start)
        peer = Peer(srv.ws_url, user)
        await peer.connect()
        run_id = await peer.start("ask", "Which city should I check?")
        await peer.wait_until(lambda: bool(events_of(peer, run_id, "input_requested")))
        assert srv.proc is not None
        if stop == "kill":
            srv.proc.kill()
        else:
            srv.sigterm()
        await asyncio.to_thread(srv.proc.wait, 30)
        await peer.finished(within=10)
        await asyncio.to_thread(srv.start)
        restarted = time.monotonic()
        await peer.connect()  # resumes from the last seq it held
        runs = await peer.get_runs()
        waiting = [r for r in runs["runs"] if r["run_id"] == run_id]
        assert [r["state"] for r in waiting] == ["running"]  # the question still waits
        answer = await peer.command({"type": "send_input", "run_id": run_id, "input": "Oslo"})
        assert answer["type"] == "ack", answer
        answered_after = time.monotonic() - restarted
        await peer.wait_runs_ended([run_id])
        await peer.close()  # a socket left open leaks into a later test's garbage collection
        return peer, run_id, answered_after

    try:
        peer, run_id, answered_after = scenario()
    finally:
        srv.stop()
    assert peer.runs[run_id] == "completed"
    assert answered_after < 5.0  # no lease to wait out: the old process is proven gone
    assert len(events_of(peer, run_id, "input_requested")) == 1  # asked once
    assert events_of(peer, run_id, "run_rolled_back") == []  # waiting lost nothing
    said = [e["data"] for e in events_of(peer, run_id, "message")]
    assert [d["text"] for d in said if isinstance(d, dict)] == ["You answered: Oslo"]
    assert not peer.violations, peer.violations
