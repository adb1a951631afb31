"""Issue 20: the FastAPI example under uvicorn with the safe settings its docstring (and
docs/embedding.md) give: an 8 MB request head is refused without being buffered, a request head
that never completes is cut at the head timeout, and WebSockets and normal requests still work
past that timeout."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from gwkit import SAFE_UVICORN, UVICORN_HEAD_TIMEOUT, UvicornServer, run_async, token
from websockets.asyncio.client import connect

SAFE_ARGS = SAFE_UVICORN
HEAD_TIMEOUT = UVICORN_HEAD_TIMEOUT


def huge_head(port: int, size: int = 8 * 1024 * 1024) -> tuple[int, bytes]:
    """Send a request whose one header is ``size`` bytes; (bytes the server took, its answer)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk = b"a" * 65536
        try:
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: it stopped reading
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
    return sent, answer


@pytest.mark.timeout(90)
def test_the_documented_uvicorn_settings_bound_request_heads(tmp_path: Path) -> None:
    srv = UvicornServer(tmp_path, *SAFE_ARGS)
    srv.start()
    try:
        sent, answer = huge_head(srv.port)
        assert sent < 8 * 1024 * 1024 or not answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert answer == b"" or answer.split(b" ")[1] in (b"400", b"413", b"431"), answer[:200]

        @run_async
        async def scenario() -> None:
            # a head that never completes, and a WebSocket that outlives the head timeout
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            await writer.drain()
            started = time.monotonic()
            async with connect(f"ws://127.0.0.1:{srv.port}/ws", open_timeout=10) as ws:
                await ws.send(json.dumps({"type": "hello", "protocol": 1, "token": token("u1")}))
                assert json.loads(await ws.recv())["type"] == "welcome"
                for _ in range(30):  # a header byte a second: never the end of the head
                    try:
                        data = await asyncio.wait_for(reader.read(1024), 1.0)
                    except TimeoutError:
                        writer.write(b"x")
                        await writer.drain()
                        continue
                    if not data:
                        break
                cut_after = time.monotonic() - started
                assert HEAD_TIMEOUT - 1 <= cut_after <= HEAD_TIMEOUT + 5, cut_after
                # the WebSocket is still served past the head timeout
                await ws.send(json.dumps({"type": "ping", "id": "p"}))
                assert json.loads(await ws.recv())["type"] == "pong"
            writer.close()

        scenario()
        status, _ = srv.get("/healthz")
        assert status == 200
    finally:
        srv.stop()
