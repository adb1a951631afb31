"""Issue 20: a store that cannot commit, on a real full disk, over real sockets.

The server's SQLite file lives on a small tmpfs mounted for the test (the test skips, saying why,
where it cannot mount one). The disk is filled while a user's run commits, then:

* a user whose session cannot start is told what happened: WebSocket close **1013** (try again
  later) with a reason naming the store — not 1001 "server shutting down" — and AG-UI **503**
  with ``Retry-After`` and ``store_unavailable``; ``/healthz`` answers 503 (``commits_failing``);
* a reconnect storm (hundreds of attempts) logs no traceback and one line per period for each
  kind of failure, not one per attempt;
* once a little space is freed, commits resume without a restart, ``/healthz`` is 200 again,
  and the write-ahead log is checkpointed and truncated (it does not keep the space).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from relkit import FINAL_STATES, Peer, RelServer, bounded, new_user, record_figures, token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

DISK = "6m"
RESERVE = 768 * 1024
"""Bytes freed to let the store recover: a little, not the disk."""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of :data:`DISK` mounted for the test, unmounted after it."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> int:
    """Fill ``disk``: a reserve file of :data:`RESERVE` bytes, then a filler until ENOSPC."""
    (disk / "reserve").write_bytes(b"r" * RESERVE)
    written = 0
    with (disk / "filler").open("wb", buffering=0) as f:
        chunk = b"x" * 65536
        while True:
            try:
                written += f.write(chunk)
            except OSError:
                break
        while True:  # the last few bytes too
            try:
                written += f.write(b"x" * 512)
            except OSError:
                return written


def wal_bytes(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def hello_close(url: str, user: str) -> tuple[str, int | None, str]:
    """Open a socket, say hello: ("welcome", None, "") or ("closed", code, reason)."""
    async with connect(url, open_timeout=10, close_timeout=2) as ws:
        await ws.send(json.dumps({"type": "hello", "protocol": 1, "token": token(user)}))
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
        except ConnectionClosed:
            return "closed", ws.close_code, ws.close_reason or ""
        return frame["type"], None, ""


@pytest.mark.timeout(180)
def test_a_full_disk_is_reported_as_a_store_failure_and_recovers(
    tmp_path: Path, small_disk: Path
) -> None:
    figures: dict[str, Any] = {"disk": DISK, "freed_bytes": RESERVE}
    srv = RelServer(tmp_path, entry="relserver")
    srv.db = small_disk / "netra.db"
    srv.start()
    try:

        @bounded(150)
        async def scenario() -> None:
            writer = Peer(srv.ws_url, new_user("w"))
            await writer.connect()
            await writer.wait_runs_ended([await writer.start("chatty", {"steps": 300})])
            figures["wal_bytes_before_fill"] = wal_bytes(srv.db)
            # a run commits while the disk fills up under it
            busy = await writer.start("chatty", {"steps": 100_000})
            figures["filler_bytes"] = await asyncio.to_thread(fill, small_disk)
            deadline = time.monotonic() + 60
            while not writer.closed and writer.runs.get(busy) not in FINAL_STATES:
                assert time.monotonic() < deadline, "the run went on with the disk full"
                await asyncio.sleep(0.1)
            # the session that was running fails (1011) or its run ends: either way it is told
            figures["busy_run_while_full"] = writer.runs.get(busy)
            figures["writer_close"] = writer.closes[-1] if writer.closed else None

            # a new user's session cannot start: 1013 naming the store, not 1001. A session's
            # first write is a small one and may still fit in the database's free pages: new
            # sessions use that slack up (bounded) until one is refused, never with 1001.
            started_sessions = 0
            for _ in range(50):
                outcome = await hello_close(srv.ws_url, new_user("n"))
                if outcome[0] != "welcome":
                    break
                started_sessions += 1
            figures["new_session"] = outcome
            figures["sessions_that_still_fit"] = started_sessions
            assert outcome[:2] == ("closed", 1013), outcome
            assert "store" in outcome[2]
            assert "shutting down" not in outcome[2]
            status, body = await asyncio.to_thread(
                srv.get, "/agui/events", headers={"Authorization": f"Bearer {token(new_user())}"}
            )
            figures["agui"] = [status, body.decode()]
            assert status == 503, body
            assert json.loads(body)["error"] == "store_unavailable"
            assert "shutting down" not in body.decode()
            retry = await asyncio.to_thread(agui_retry_after, srv)
            assert retry is not None
            assert int(retry) > 0
            health = await asyncio.to_thread(srv.health)
            figures["healthz_while_full"] = {
                k: health.get(k) for k in ("http_status", "store", "commits_failing", "store_error")
            }
            assert health["http_status"] == 503, health
            assert health["commits_failing"] >= 1
            assert health["shutting_down"] is False

            # a reconnect storm: every refused attempt refused the same way (1013, never 1001
            # or a crash), the log stays small. While commits fail, the writer truncates the WAL
            # every second, which gives the disk back a little room: a transaction that fits
            # there (a renewal, a lease) succeeds, and a session may start until the next write
            # fails (as the slack above). So a few attempts may be welcomed; most are refused.
            log_before = srv.full_log()
            attempts, welcomed = 0, 0
            codes: set[int | str | None] = set()
            started = time.monotonic()
            for _round in range(40):
                outcomes = await asyncio.gather(
                    *(hello_close(srv.ws_url, f"storm-{i}") for i in range(5))
                )
                attempts += len(outcomes)
                for kind, code, _reason in outcomes:
                    if kind == "welcome":
                        welcomed += 1
                    else:
                        codes.add(code if kind == "closed" else kind)  # a frame: say which
            figures["storm"] = {
                "attempts": attempts,
                "welcomed": welcomed,
                "seconds": round(time.monotonic() - started, 2),
                "close_codes": sorted(str(c) for c in codes),
            }
            assert codes == {1013}, codes
            assert welcomed < attempts // 2, figures["storm"]
            storm_log = srv.full_log()[len(log_before) :]
            figures["storm_log_lines"] = len(storm_log.splitlines())
            figures["storm_log_bytes"] = len(storm_log)
            assert "Traceback" not in storm_log
            assert len(storm_log.splitlines()) <= 6, storm_log[-3000:]
            figures["wal_bytes_while_full"] = wal_bytes(srv.db)

            # free a little space: commits resume, no restart
            os.unlink(small_disk / "reserve")
            freed_at = time.monotonic()
            while True:
                outcome = await hello_close(srv.ws_url, new_user("after"))
                if outcome[0] == "welcome":
                    break
                assert time.monotonic() - freed_at < 30, f"no recovery: {outcome}"
                await asyncio.sleep(0.5)
            figures["recovered_after_s"] = round(time.monotonic() - freed_at, 2)
            if writer.closed:
                await writer.connect()  # resumes exactly where it stopped
            # durable runs: the busy run was resumed (not ended dead), and would fill the disk
            # again with its 100,000 steps: cancel it (if it is still live) and see it end
            if writer.runs.get(busy) not in FINAL_STATES:
                await writer.command({"type": "cancel_run", "id": "stop", "run_id": busy})
            await writer.wait_runs_ended([busy], within=60)
            figures["busy_run_final_state"] = writer.runs[busy]
            run = await writer.say("the disk has room again")
            await writer.wait_runs_ended([run])
            assert writer.runs[run] == "completed"
            health = await asyncio.to_thread(srv.health)
            assert health["http_status"] == 200, health
            assert "commits_failing" not in health
            # idle: the WAL is checkpointed into the database and truncated
            while wal_bytes(srv.db) > 0:
                assert time.monotonic() - freed_at < 40, wal_bytes(srv.db)
                await asyncio.sleep(0.25)
            figures["wal_bytes_after_recovery"] = wal_bytes(srv.db)
            await writer.close()

        scenario()
        log = srv.full_log()
        figures["tracebacks_in_server_log"] = log.count("Traceback")
        figures["server_log_bytes"] = len(log)
        assert srv.terminate() == 0
    finally:
        srv.stop()
    record_figures(tmp_path, "disk_full", figures)
    assert figures["tracebacks_in_server_log"] == 0, log[-4000:]


def agui_retry_after(srv: RelServer) -> str | None:
    """The ``Retry-After`` of an AG-UI request refused while the store fails."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        srv.http + "/agui/events", headers={"Authorization": f"Bearer {token(new_user())}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5):
            return None
    except urllib.error.HTTPError as exc:
        return exc.headers.get("retry-after")
