"""Close codes over real sockets: 1000, 1001, 1009, 4400, 4401, 4408, 4409, 4429 (1011 is in
``test_inprocess.py``, where a failure can be injected), plus keepalive and shutdown."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from gwkit import SECRET, Client, Server, assert_gapless, run_async, seq_is, token
from websockets.exceptions import ConnectionClosed

from netra_actors.gateway import mint_token


async def hello_then_close(server: Server, frame: Any) -> int | None:
    client = await Client.open(server, hello=False)
    await client.send(frame)
    return await client.closed()


@run_async
async def test_4400_first_frame_not_hello(server: Server, user: str) -> None:
    assert await hello_then_close(server, {"type": "ping", "id": "p"}) == 4400
    assert await hello_then_close(server, "not json") == 4400
    assert await hello_then_close(server, {"type": "say", "text": "hi"}) == 4400


@run_async
async def test_4400_binary_frame_first_or_later(server: Server, user: str) -> None:
    client = await Client.open(server, hello=False)
    await client.ws.send(b'{"type": "hello"}')
    assert await client.closed() == 4400
    client = await Client.open(server, user)
    await client.ws.send(b"\x00\x01")
    assert await client.closed() == 4400


@run_async
async def test_4400_second_hello(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    await client.send({"type": "hello", "protocol": 1, "token": token(user)})
    assert await client.closed() == 4400


@run_async
async def test_4401_missing_invalid_or_expired_token(server: Server, user: str) -> None:
    assert await hello_then_close(server, {"type": "hello", "protocol": 1}) == 4401
    assert await hello_then_close(server, {"type": "hello", "protocol": 1, "token": 42}) == 4401
    assert await hello_then_close(server, {"type": "hello", "protocol": 1, "token": "abc"}) == 4401
    forged = mint_token(b"another-secret-0123456789", user, 60, now=time.time())
    assert await hello_then_close(server, {"type": "hello", "protocol": 1, "token": forged}) == 4401
    expired = mint_token(SECRET.encode(), user, 5, now=time.time() - 60)
    assert (
        await hello_then_close(server, {"type": "hello", "protocol": 1, "token": expired}) == 4401
    )
    tampered = token(user)
    tampered = tampered[:5] + ("A" if tampered[5] != "A" else "B") + tampered[6:]
    assert (
        await hello_then_close(server, {"type": "hello", "protocol": 1, "token": tampered}) == 4401
    )


@run_async
async def test_4401_when_the_token_expires_while_connected(server: Server, user: str) -> None:
    ttl = 1.5
    start = time.monotonic()
    client = await Client.open(server, tok=token(user, ttl=ttl))
    await client.command({"type": "ping", "id": "p"})
    assert await client.closed(within=ttl + 5) == 4401
    elapsed = time.monotonic() - start
    assert ttl - 0.5 <= elapsed <= ttl + 3, elapsed


@run_async
async def test_4408_no_hello_within_the_hello_timeout(server: Server) -> None:
    # the shared server runs with --hello-timeout 1.5
    start = time.monotonic()
    client = await Client.open(server, hello=False)
    assert await client.closed(within=10) == 4408
    assert 1.2 <= time.monotonic() - start <= 5


@run_async
async def test_1009_frame_over_the_inbound_limit(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    # just under 64 KiB is a normal (refused) command, not a protocol failure
    await client.send({"type": "say", "id": "big", "text": "x" * 60_000})
    answer = await client.reply()
    assert answer["code"] == "too_large"
    await client.send({"type": "say", "id": "huge", "text": "x" * 70_000})
    assert await client.closed() == 1009
    # the limit is in bytes: 30,000 three-byte characters are 90,000 bytes
    client = await Client.open(server, user)
    await client.send({"type": "say", "id": "euro", "text": "€" * 30_000})
    assert await client.closed() == 1009
    # the server is fine
    other = await Client.open(server, user)
    assert (await other.command({"type": "ping"}))["type"] == "pong"


@run_async
async def test_1000_client_close_is_answered(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    await client.ws.close(1000, "bye")
    assert client.ws.close_code == 1000


def test_4429_too_many_sockets(make_server: Callable[..., Server], user: str) -> None:
    srv = make_server("--max-sockets-per-user", "2")

    @run_async
    async def scenario() -> None:
        a = await Client.open(srv, user)
        await Client.open(srv, user)
        third = await Client.open(srv, hello=False)
        await third.send({"type": "hello", "protocol": 1, "token": token(user)})
        assert await third.closed() == 4429
        # another user is not affected, and a freed slot can be used again
        await Client.open(srv, user + "-x")
        await a.close()
        # the server forgets the closed socket right after the closing handshake: poll briefly
        for _ in range(50):
            again = await Client.open(srv, hello=False)
            await again.send({"type": "hello", "protocol": 1, "token": token(user)})
            try:
                frame = await again.next_frame()
            except ConnectionClosed:
                assert again.ws.close_code == 4429
                await asyncio.sleep(0.1)
                continue
            assert frame["type"] == "welcome"
            break
        else:
            raise AssertionError("the freed socket slot was never reused")

    scenario()


def test_rate_limited_then_4429_on_a_flood(make_server: Callable[..., Server], user: str) -> None:
    srv = make_server("--rate", "2", "--burst", "5")

    @run_async
    async def scenario() -> None:
        client = await Client.open(srv, user)
        for i in range(8):
            await client.send({"type": "ping", "id": f"p{i}"})
        answers = [await client.reply() for _ in range(8)]
        assert [a["type"] for a in answers[:5]] == ["pong"] * 5
        assert all(a["type"] == "error" and a["code"] == "rate_limited" for a in answers[5:])
        assert [a["id"] for a in answers] == [f"p{i}" for i in range(8)]
        # backing off works: the bucket refills at 2/s
        await asyncio.sleep(0.6)
        assert (await client.command({"type": "ping", "id": "later"}))["type"] == "pong"
        # a flood that goes on past the limit closes the socket
        for i in range(60):
            try:
                await client.send({"type": "ping", "id": f"f{i}"})
            except ConnectionClosed:
                break
        assert await client.closed() == 4429
        # the limit is per user: a different user is served
        other = await Client.open(srv, user + "-b")
        assert (await other.command({"type": "ping"}))["type"] == "pong"

    scenario()


def test_4409_slow_consumer_never_holds_back_the_others(
    make_server: Callable[..., Server], user: str
) -> None:
    srv = make_server("--subscriber-buffer", "32", "--send-timeout", "60")

    @run_async
    async def scenario() -> None:
        fast = await Client.open(srv, user)
        # a socket that stops reading: its client buffers at most one message, then TCP fills
        slow = await Client.open(srv, user, max_queue=1)
        text = "z" * 16_000
        started = time.monotonic()
        for i in range(60):  # ~2 MB of events, far more than the kernel buffers hold
            run_id = await fast.say(f"{i} {text}")
            assert await fast.wait_run_end(run_id, within=30) == "completed"
        # the stalled socket did not slow its user's other socket down
        assert time.monotonic() - started < 20
        assert_gapless(fast.events)
        # now read the slow socket: a gapless prefix of the stream, then 4409
        assert await slow.closed(within=30) == 4409
        assert_gapless(slow.events)
        assert len(slow.events) < len(fast.events)
        # it catches up through resume_from
        last = slow.events[-1]["seq"] if slow.events else 0
        again = await Client.open(srv, user, resume_from=last)
        head = fast.events[-1]["seq"]
        await again.wait_for(seq_is(head))
        assert slow.events + again.events == fast.events

    scenario()


def test_sigterm_closes_sockets_with_1001_and_exits(
    make_server: Callable[..., Server], user: str
) -> None:
    srv = make_server("--shutdown-timeout", "3")

    @run_async
    async def scenario() -> None:
        clients = [await Client.open(srv, user) for _ in range(3)]
        run_id = await clients[0].start("slow", {"seconds": 60})
        await clients[0].wait_for(lambda e: e["event"] == "agent_thinking")
        start = time.monotonic()
        assert srv.proc is not None
        srv.proc.terminate()
        for client in clients:
            assert await client.closed(within=10) == 1001
        code = await asyncio.to_thread(srv.proc.wait, 15)
        assert code == 0
        assert time.monotonic() - start < 10
        # after a restart, the handed-over run goes on (rolled back lost, recovered), and resume
        # is exact
        last = clients[0].events[-1]["seq"]
        await asyncio.to_thread(srv.start)
        client = await Client.open(srv, user, resume_from=last)
        await client.wait_for(
            lambda e: (
                e["run_id"] == run_id
                and e["event"] == "run_state"
                and e["data"].get("reason") == "recovered"
            )
        )
        rollback = next(e for e in client.events if e["event"] == "run_rolled_back")
        assert rollback["data"]["reason"] == "lost"
        assert rollback["data"]["will_restart"] is True
        await client.command({"type": "cancel_run", "run_id": run_id, "id": "c"})
        assert await client.wait_run_end(run_id) == "cancelled"
        assert_gapless(clients[0].events + client.events)

    scenario()


# -- keepalive, with a hand-made client that never answers pings ----------------------------------


def _frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _raw_session(port: int, user: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    hello = f'{{"type":"hello","protocol":1,"token":"{token(user)}"}}'.encode()
    sock.sendall(_frame(0x1, hello))
    return sock


def test_keepalive_drops_a_peer_that_never_answers_pings(
    make_server: Callable[..., Server], user: str
) -> None:
    srv = make_server("--ping-interval", "0.3", "--pong-timeout", "0.5")
    sock = _raw_session(srv.port, user)
    start = time.monotonic()
    saw_ping = False
    try:
        sock.settimeout(10)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            saw_ping = saw_ping or b"\x89" in data
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    assert saw_ping
    assert time.monotonic() - start < 5

    # a client that answers pings (websockets does) stays connected across many intervals
    @run_async
    async def scenario() -> None:
        client = await Client.open(srv, user)
        await asyncio.sleep(1.2)  # four ping intervals
        assert (await client.command({"type": "ping", "id": "still"}))["type"] == "pong"

    scenario()
