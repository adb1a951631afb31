"""``uvicorn examples.fastapi_app:app`` (examples/fastapi_app.py): the ASGI adapter under a real
ASGI server.

The protocol itself runs against uvicorn in every test that takes the shared ``server`` fixture
(see conftest.py: each runs against ``netra-actors serve`` and against uvicorn). This file covers
what only a real ASGI server shows: both event loops (asyncio and uvloop), a clean stop on the
first SIGINT/SIGTERM with sockets and AG-UI streams open (close 1001 or uvicorn's 1012, exit
within 10 s, no traceback), and ``--workers 2`` on one database being one cluster.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gwkit import SECRET, Client, Server, UvicornServer, Workers, run_async, token
from websockets.asyncio.client import connect

from netra_actors.gateway import verify_token

GOING_AWAY = {1001, 1012}


def _sse_request(server: Server, user: str, *, last_event_id: str | None = None) -> socket.socket:
    """Open ``GET /agui/events`` on a raw socket (the response is read by :func:`_read_until`)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    head = [
        "GET /agui/events HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        f"Authorization: Bearer {token(user)}",
        "Accept: text/event-stream",
    ]
    if last_event_id is not None:
        head.append(f"Last-Event-ID: {last_event_id}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    return sock


def _read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes the connection (bounded by ``within``)."""
    deadline = time.monotonic() + within
    data = bytearray()
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError(f"the stream did not end within {within}s: {bytes(data)[-300:]!r}")


def _no_traceback(server: Server) -> None:
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert "ERROR" not in log, log[-4000:]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serves_and_stops_cleanly_on_the_first_signal(
    tmp_path: Path, loop: str, sig: signal.Signals
) -> None:
    srv = UvicornServer(tmp_path, "--loop", loop).start()
    try:

        @run_async
        async def scenario() -> tuple[int | None, str]:
            client = await Client.open(srv, "alice")
            run_id = await client.say("Add 2 and 40")
            assert await client.wait_run_end(run_id) == "completed"
            names = [e["event"] for e in client.run_events(run_id)]
            assert "tool_completed" in names
            assert "agent_completed" in names
            sse = await asyncio.to_thread(_sse_request, srv, "alice")
            await asyncio.sleep(0.3)  # the stream is open and idle
            started = time.monotonic()
            assert srv.proc is not None
            srv.proc.send_signal(sig)
            code = await client.closed(within=10)
            body = await asyncio.to_thread(_read_until_closed, sse, 10.0)
            sse.close()
            rc = await asyncio.to_thread(srv.proc.wait, 10)
            assert time.monotonic() - started < 10
            # uvicorn re-raises the signal it handled once it has shut down (for SIGINT Python
            # turns that into a quiet exit 0; for SIGTERM the process ends by that signal)
            assert rc in (0, -signal.SIGTERM), srv.log()
            return code, body.decode(errors="replace")

        code, body = scenario()
        assert code in GOING_AWAY
        assert body.startswith("HTTP/1.1 200"), body[:200]
        assert "text/event-stream" in body.split("\r\n\r\n", 1)[0]
        _no_traceback(srv)
    finally:
        srv.stop()


def test_two_workers_on_one_database_are_one_cluster(tmp_path: Path) -> None:
    srv = UvicornServer(tmp_path, "--workers", "2").start()
    try:
        workers = Workers(srv, 2)  # both workers serve, each a node of its own
        assert len(set(workers.nodes.values())) == 2, workers.nodes

        @run_async
        async def scenario() -> None:
            clients: list[Client] = []
            for pid, count in zip(workers.pids, (4, 2), strict=True):  # sockets on both workers
                with workers.only(pid):
                    clients += [await Client.open(srv, "bob") for _ in range(count)]
            # One worker owns bob, every socket is counted where it is, and the worker that
            # holds sockets of bob without owning him follows him.
            docs = [workers.healthz(pid) for pid in workers.pids]
            assert [doc["subscriptions"] for doc in docs] == [4, 2], docs
            assert sorted(doc["owned_users"] for doc in docs) == [0, 1], docs
            assert sorted(doc["followed_users"] for doc in docs) == [0, 1], docs
            for doc in docs:
                assert doc["followed_users"] == 1 - doc["owned_users"], docs
            run_ids = [await clients[i % 6].say(f"round {i}: 1 2 3") for i in range(4)]
            for client in clients:
                for run_id in run_ids:
                    assert await client.wait_run_end(run_id, within=30) == "completed"
            streams = [[e["seq"] for e in c.events] for c in clients]
            head = max(max(s) for s in streams)
            for seqs in streams:  # every socket, on either worker: the same gapless stream
                got = [s for s in seqs if s <= head]
                assert got == list(range(got[0], got[0] + len(got))), seqs
            late = await Client.open(srv, "bob", resume_from=0)
            await late.wait_for(lambda e: e["seq"] == head, within=20)
            assert [e["seq"] for e in late.events[:head]] == list(range(1, head + 1))
            await asyncio.gather(*(c.close() for c in [*clients, late]))

        scenario()
        for i in range(4):  # AG-UI on each worker in turn
            body = json.dumps(
                {
                    "threadId": "t-workers",
                    "runId": f"agui-{i}",
                    "messages": [{"id": f"m{i}", "role": "user", "content": f"add {i} and 1"}],
                }
            )
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
            with workers.only(workers.pids[i % 2]):
                conn.request(
                    "POST",
                    "/agui",
                    body=body,
                    headers={"Authorization": f"Bearer {token('bob')}"},
                )
            with conn.getresponse() as resp:
                frames = [
                    json.loads(line[len(b"data: ") :])
                    for line in resp.read().splitlines()
                    if line.startswith(b"data: ")
                ]
            conn.close()
            assert frames[0]["type"] == "RUN_STARTED"
            assert frames[0]["runId"] == f"agui-{i}"
            assert frames[-1]["type"] == "RUN_FINISHED"
            assert frames[-1]["runId"] == f"agui-{i}"
            assert any(f["type"] == "TOOL_CALL_RESULT" for f in frames)
        assert srv.terminate(timeout=15) == 0
        _no_traceback(srv)
    finally:
        srv.stop()


def test_application_routes_use_the_embedded_runtime(tmp_path: Path) -> None:
    srv = UvicornServer(tmp_path).start()
    try:

        @run_async
        async def scenario() -> str:
            client = await Client.open(srv, "carol")
            run_id = await client.say("hello there")
            assert await client.wait_run_end(run_id) == "completed"
            await client.close()
            return run_id

        run_id = scenario()
        status, body = srv.get("/api/runs", headers={"Authorization": f"Bearer {token('carol')}"})
        assert status == 200, body
        doc = json.loads(body)
        assert [r["run_id"] for r in doc["runs"]] == [run_id]
        assert doc["runs"][0]["state"] == "completed"
        assert srv.get("/api/runs")[0] == 401
        assert verify_token(SECRET.encode(), token("carol"), now=time.time()).user == "carol"
    finally:
        srv.stop()


def test_origin_allowlist_from_the_environment(tmp_path: Path) -> None:
    allowed = "http://app.example:3000"
    srv = UvicornServer(tmp_path, env={"NETRA_ALLOWED_ORIGINS": allowed}).start()
    try:

        @run_async
        async def scenario() -> None:
            ok = await Client.open(srv, "dave", origin=allowed)
            await ok.close()
            with pytest.raises(Exception, match="403"):
                await Client.open(srv, "dave", origin=f"http://127.0.0.1:{srv.port}")

        scenario()
    finally:
        srv.stop()


def _outward_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_on_all_interfaces_dev_sign_in_is_for_loopback_requests_only(tmp_path: Path) -> None:
    outward = _outward_address()
    if outward is None:
        pytest.skip("this machine has no non-loopback IPv4 address to reach the server by")
    srv = UvicornServer(tmp_path, "--host", "0.0.0.0").start()
    try:
        body = b'{"user": "frank"}'
        status, answer = srv.get("/dev/token", method="POST", body=body)
        assert status == 200, answer  # to 127.0.0.1: the local developer's page
        assert srv.get_json("/healthz")[1]["dev_tokens"] is True
        outside = f"http://{outward}:{srv.port}"
        request = urllib.request.Request(f"{outside}/dev/token", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        refused.value.close()
        assert refused.value.code == 404  # to the outward address: no sign-in for anyone
        with urllib.request.urlopen(f"{outside}/healthz", timeout=5) as resp:
            assert json.loads(resp.read())["dev_tokens"] is False

        @run_async
        async def scenario() -> None:  # the page's own origin is the address it was loaded from
            ws_url = f"ws://{outward}:{srv.port}/ws"
            async with connect(ws_url, origin=outside, open_timeout=10) as ws:  # type: ignore[arg-type]
                await ws.send(json.dumps({"type": "hello", "protocol": 1, "token": token("frank")}))
                assert json.loads(await ws.recv())["type"] == "welcome"
            with pytest.raises(Exception, match="403"):
                await connect(ws_url, origin="http://evil.example", open_timeout=10)  # type: ignore[arg-type]

        scenario()
    finally:
        srv.stop()
