"""The server-side state both servers share (``netra_actors/gateway/_state.py``): the table of
running WebSocket handlers and AG-UI streams, and shutdown — every one asked to close with 1001,
new ones closed as they start, the stragglers stopped after ``shutdown_timeout`` — on trio's
virtual clock."""

from __future__ import annotations

from functools import partial

import trio
import trio.testing

from netra_actors.gateway import GatewayConfig
from netra_actors.gateway._state import ServerState

SECRET = b"state-secret-0123456789"


class FakeConn:
    """A handler's connection: records the close it was asked for; ``stubborn`` ignores it."""

    def __init__(self, *, stubborn: bool = False) -> None:
        self.closes: list[tuple[int, str]] = []
        self.asked = trio.Event()
        self.stubborn = stubborn

    def request_close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        self.asked.set()

    async def run(self) -> None:
        if self.stubborn:
            await trio.sleep_forever()
        await self.asked.wait()


def new_state(shutdown_timeout: float = 5.0) -> ServerState:
    config = GatewayConfig(secret=SECRET, echo=True, shutdown_timeout=shutdown_timeout)
    return ServerState(config, None)


async def serve(
    state: ServerState, conn: FakeConn, *, websocket: bool, shielded: bool = False
) -> None:
    """What a transport does for one socket or stream (the trio gateway shields it)."""
    with trio.CancelScope(shield=shielded) as hard:
        with state.running(websocket=websocket, hard=hard if shielded else None) as handler:
            state.attach(handler, conn)
            await conn.run()


def sockets_open(state: ServerState) -> float | None:
    return state.metrics.registry.get_sample_value("netra_sockets_open")


async def test_the_table_counts_websockets_and_forgets_every_handler() -> None:
    state = new_state()
    socket, stream = FakeConn(), FakeConn()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve(state, socket, websocket=True))
        nursery.start_soon(lambda: serve(state, stream, websocket=False))
        await trio.testing.wait_all_tasks_blocked()
        assert state.open_sockets == 1  # AG-UI streams are not sockets
        assert sockets_open(state) == 1
        socket.request_close(1000, "")
        stream.request_close(1000, "")
    assert state.open_sockets == 0
    assert sockets_open(state) == 0
    assert state.socket_mailbox_depth() == 0


async def test_shutdown_closes_every_socket_and_stream_with_1001(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state = new_state()
    conns = [FakeConn(), FakeConn(), FakeConn()]
    async with trio.open_nursery() as nursery:
        for i, conn in enumerate(conns):
            nursery.start_soon(partial(serve, state, conn, websocket=i < 2))
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await state.drain()
        assert trio.current_time() == start  # nothing to wait for: they all ended at once
    assert state.shutting_down
    assert [c.closes for c in conns] == [[(1001, "server shutting down")]] * 3
    state.begin_shutdown()  # idempotent: nobody is asked twice
    assert all(len(c.closes) == 1 for c in conns)


async def test_a_handler_that_starts_during_shutdown_is_closed_at_once() -> None:
    state = new_state()
    state.begin_shutdown()
    late = FakeConn()
    with trio.fail_after(1):
        await serve(state, late, websocket=True)
    assert late.closes == [(1001, "server shutting down")]


async def test_drain_stops_the_stragglers_after_the_shutdown_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state = new_state(shutdown_timeout=5.0)
    polite, stubborn = FakeConn(), FakeConn(stubborn=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve(state, polite, websocket=True, shielded=True))
        nursery.start_soon(lambda: serve(state, stubborn, websocket=True, shielded=True))
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await state.drain()
        assert trio.current_time() - start == 5.0
    assert stubborn.closes == [(1001, "server shutting down")]
    assert state.open_sockets == 0
