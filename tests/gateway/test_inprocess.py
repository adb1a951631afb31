"""Failures injected into an in-process gateway: one connection's failure is contained (that
socket closes with 1011, everyone else goes on), and a store failure answers ``internal``.

The gateway runs in trio as a guest of asyncio (as in production), over a
:class:`~netra_actors.testing.MemoryStore` that fails on demand; the client is the independent
``websockets`` library on the asyncio host loop, reached through the bridge.
"""

from __future__ import annotations

import json
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import trio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import netra_actors as na
from netra_actors._bridge import Bridge
from netra_actors._uow import UnitOfWork
from netra_actors.demo_agents import DEMO_AGENTS
from netra_actors.gateway import Gateway, GatewayConfig, mint_token
from netra_actors.testing import MemoryStore, guest_test

SECRET = b"in-process-secret-0123456789"
T = TypeVar("T")


class FaultyStore(MemoryStore):
    """Replay raises a bug (not a StoreError) for one user; commits fail for another."""

    async def replay(self, user_id: str, after_seq: int, limit: int) -> list[na.Event]:
        if user_id == "victim":
            raise RuntimeError("a bug in the store's replay")
        return await super().replay(user_id, after_seq, limit)


def fail_units_of(user: str) -> Any:
    def fail_when(user_id: str, unit: UnitOfWork) -> BaseException | None:
        return na.exceptions.StoreError("the disk is full") if user_id == user else None

    return fail_when


async def on_host(coro: Coroutine[Any, Any, T]) -> T:
    return await Bridge.current().run_on_host(coro)


async def open_socket(port: int, user: str, resume_from: int | None = None) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, close_timeout=2)
    hello: dict[str, Any] = {
        "type": "hello",
        "token": mint_token(SECRET, user, 60, now=time.time()),
    }
    if resume_from is not None:
        hello["resume_from"] = resume_from
    await ws.send(json.dumps(hello))
    return ws


async def recv(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def until_closed(ws: ClientConnection) -> int | None:
    try:
        while True:
            await ws.recv()
    except ConnectionClosed:
        return ws.close_code


async def command(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(frame))
    while True:
        answer = await recv(ws)
        if answer["type"] not in ("event", "batch"):
            return answer


@guest_test(timeout=30)
async def test_a_failing_connection_closes_1011_and_others_go_on() -> None:
    store = FaultyStore(fail_when=fail_units_of("doomed"))
    config = na.RuntimeConfig(restart=na.policies.RestartPolicy(backoff_initial=0.01))
    async with na.open_runtime(config, agents=DEMO_AGENTS, store=store) as runtime:
        gateway = Gateway(runtime, GatewayConfig(secret=SECRET, port=0))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            assert gateway.port is not None
            port = gateway.port

            async def scenario() -> None:
                bystander = await open_socket(port, "bystander")
                assert (await recv(bystander))["type"] == "welcome"
                # give the victim some history, then make its replay blow up
                victim = await open_socket(port, "victim")
                assert (await recv(victim))["type"] == "welcome"
                ack = await command(victim, {"type": "say", "id": "s", "text": "hi"})
                assert ack["type"] == "ack"
                resuming = await open_socket(port, "victim", resume_from=0)
                assert (await recv(resuming))["type"] == "welcome"
                assert await until_closed(resuming) == 1011
                # the other sockets, of that user and of others, are untouched
                pong = await command(bystander, {"type": "ping", "id": "p"})
                assert pong == {"type": "pong", "id": "p"}
                assert (await command(victim, {"type": "ping"}))["type"] == "pong"
                # a store failure while committing a command is answered `internal`
                doomed = await open_socket(port, "doomed")
                assert (await recv(doomed))["type"] == "welcome"
                error = await command(doomed, {"type": "say", "id": "d", "text": "lost"})
                assert error["type"] == "error"
                assert error["code"] == "internal"
                assert error["id"] == "d"
                assert (await command(doomed, {"type": "ping"}))["type"] == "pong"
                for ws in (bystander, victim, doomed):
                    await ws.close()

            await on_host(scenario())
            # the failure was counted, by close code
            text = gateway.metrics.render().decode()
            assert 'netra_socket_closes_total{code="1011"} 1.0' in text
            nursery.cancel_scope.cancel()


@guest_test(timeout=30)
async def test_cancellation_closes_open_sockets_with_1001() -> None:
    async with na.open_runtime(agents=DEMO_AGENTS, store=MemoryStore()) as runtime:
        gateway = Gateway(runtime, GatewayConfig(secret=SECRET, port=0, shutdown_timeout=2))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            assert gateway.port is not None
            port = gateway.port
            sockets = []
            for i in range(3):
                ws = await on_host(open_socket(port, f"user-{i}"))
                assert (await on_host(recv(ws)))["type"] == "welcome"
                sockets.append(ws)
            nursery.cancel_scope.cancel()
        assert gateway.open_sockets == 0
    for ws in sockets:
        assert await on_host(until_closed(ws)) == 1001
