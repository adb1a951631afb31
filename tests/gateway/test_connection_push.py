"""A connection whose socket has an outbox (the ASGI adapter's ``offer``) takes committed events
pushed into it by the delivering task, with no pump wake-up per unit, and keeps the protocol's
order: a command's answer before anything committed while it ran, every event once, in ``seq``
order. When the outbox has no room the pump sends them, as without push.

The socket is an in-memory fake with the socket interface; the runtime is real (memory store).
"""

from __future__ import annotations

import json
import time
from typing import Any

import trio
import trio.lowlevel
import trio.testing

import netra_actors as na
from netra_actors.gateway import GatewayConfig, mint_token
from netra_actors.gateway._connection import Connection, ConnectionDeps
from netra_actors.gateway._limits import UserLimits
from netra_actors.gateway._metrics import GatewayMetrics
from netra_actors.gateway._transport import SocketClosed
from netra_actors.testing import MemoryStore, guest_test

SECRET = b"connection-push-secret-0123456789"


class Units(na.Agent):
    """Commits one unit, waits for an input, then commits ``input`` more units of two thoughts
    each (while no command runs on the socket)."""

    name = "units"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        assert isinstance(input, int)
        await ctx.think("first")
        await ctx.checkpoint()
        await ctx.receive()
        for i in range(input):
            await ctx.think(f"{i}a")
            await ctx.think(f"{i}b")
            await ctx.checkpoint()
        return input


class OutboxSocket:
    """A socket with an outbox: :meth:`offer` queues frames without waiting (while ``room``);
    every frame is recorded with the way it came (``offer`` or ``send``)."""

    def __init__(self, *, room: bool) -> None:
        self.inbound_tx, self.inbound_rx = trio.open_memory_channel[str](16)
        self.frames: list[tuple[str, dict[str, Any]]] = []
        self.room = room
        self.closed_with: int | None = None
        self.changed = trio.Event()

    @property
    def closed(self) -> bool:
        return self.closed_with is not None

    def _record(self, via: str, text: str) -> None:
        self.frames.append((via, json.loads(text)))
        self.changed.set()

    async def receive(self) -> str | bytes:
        try:
            return await self.inbound_rx.receive()
        except trio.EndOfChannel:
            raise SocketClosed(1000) from None

    async def send(self, message: str | bytes) -> None:
        assert isinstance(message, str)
        self._record("send", message)
        await trio.lowlevel.checkpoint()

    def offer(self, messages: list[str]) -> bool:
        if not self.room or self.closed:
            return False
        for text in messages:
            self._record("offer", text)
        return True

    async def keepalive(self, interval: float, pong_timeout: float) -> None:
        await trio.sleep_forever()

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = code

    async def abort(self) -> None:
        self.closed_with = 1006

    async def wait_for(self, done: Any) -> None:
        with trio.fail_after(20):
            while not done():
                self.changed = trio.Event()
                await self.changed.wait()


def events_of(frames: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for via, frame in frames:
        if frame["type"] == "event":
            out.append((via, frame))
        elif frame["type"] == "batch":
            out.extend((via, event) for event in frame["events"])
    return out


def run_ended(frames: list[tuple[str, dict[str, Any]]], count: int) -> bool:
    done = [
        e
        for _, e in events_of(frames)
        if e["event"] == "run_state" and e["data"]["state"] == "completed"
    ]
    return len(done) >= count


async def session(room: bool) -> tuple[OutboxSocket, list[int]]:
    """Two commands on one socket; the frames and the index of each command's answer."""
    config = GatewayConfig(secret=SECRET)
    async with na.open_runtime(na.RuntimeConfig(), agents=[Units], store=MemoryStore()) as rt:
        deps = ConnectionDeps(
            runtime=rt,
            config=config,
            limits=UserLimits(config.rate, config.max_sockets_per_user),
            metrics=GatewayMetrics(),
        )
        socket = OutboxSocket(room=room)
        connection = Connection(deps, socket, "test")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            token = mint_token(SECRET, "alice", 60, now=time.time())
            await socket.inbound_tx.send(json.dumps({"type": "hello", "token": token}))
            answers = []
            for n in (1, 2):
                await socket.inbound_tx.send(
                    json.dumps({"type": "start_run", "id": f"c{n}", "agent": "units", "input": 6})
                )
                await socket.wait_for(
                    lambda n=n: any(f.get("id") == f"c{n}" for _, f in socket.frames)
                )
                answers.append(
                    next(i for i, (_, f) in enumerate(socket.frames) if f.get("id") == f"c{n}")
                )
                ack = socket.frames[answers[-1]][1]
                await trio.testing.wait_all_tasks_blocked()  # the pump is parked, the answer out
                await rt.send_to_run("alice", ack["run_id"], "go")
                await socket.wait_for(lambda n=n: run_ended(socket.frames, n))
            await socket.inbound_tx.aclose()
    return socket, answers


def check_stream(socket: OutboxSocket, answers: list[int]) -> list[str]:
    """Every event once, gapless, each command's answer before its run's events; the ways the
    events came."""
    assert socket.frames[0][1]["type"] == "welcome"
    events = events_of(socket.frames)
    assert [e["seq"] for _, e in events] == list(range(1, len(events) + 1))
    runs = [f["run_id"] for _, f in socket.frames if f.get("type") == "ack"]
    assert len(runs) == len(answers) == 2
    for run_id, answer in zip(runs, answers, strict=True):
        first = next(
            i
            for i, (_, f) in enumerate(socket.frames)
            if run_id in {e["run_id"] for _, e in events_of([(_, f)])}
        )
        assert answer < first, (answer, first)
    return [via for via, _ in events]


@guest_test(timeout=30)
async def test_events_are_pushed_into_the_outbox_after_the_answer_in_order() -> None:
    socket, answers = await session(room=True)
    ways = check_stream(socket, answers)
    assert "offer" in ways  # the checkpoints' units went straight into the outbox


@guest_test(timeout=30)
async def test_without_room_in_the_outbox_the_pump_sends_them_in_order() -> None:
    socket, answers = await session(room=False)
    ways = check_stream(socket, answers)
    assert set(ways) == {"send"}
