"""The ASGI adapter's per-socket writer (``netra_actors.gateway._asgi_outbox.Outbox``), against
a fake ASGI ``send``: frames leave in order, the close frame comes after every frame queued before it, and
a client that stops taking frames — or is gone — stops the writer instead of blocking trio."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import trio
import trio.lowlevel

from netra_actors._bridge import Bridge
from netra_actors.gateway._asgi_outbox import OUTBOX_HIGH, Outbox
from netra_actors.testing import guest_test


class FakeClient:
    """An ASGI ``send`` that records frames; ``stuck`` makes it block, ``gone_after`` fail."""

    def __init__(self, gone_after: int | None = None) -> None:
        self.frames: list[MutableMapping[str, Any]] = []
        self.stuck = False
        self.gone_after = gone_after
        """Fail every send once this many frames were taken."""

    async def send(self, frame: MutableMapping[str, Any]) -> None:
        if self.gone_after is not None and len(self.frames) >= self.gone_after:
            raise OSError("the client went away")  # what uvicorn raises: ClientDisconnected
        if self.stuck:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        self.frames.append(frame)


def text(i: int) -> dict[str, Any]:
    return {"type": "websocket.send", "text": f"frame {i}"}


async def with_writer(outbox: Outbox, bridge: Bridge) -> asyncio.Task[None]:
    task = bridge.loop.create_task(outbox.write())
    await trio.lowlevel.checkpoint()
    return task


@guest_test(timeout=20)
async def test_frames_go_out_in_order_and_the_close_last() -> None:
    bridge = Bridge.current()
    client = FakeClient()
    outbox = Outbox(bridge, client.send, send_timeout=5.0)
    task = await with_writer(outbox, bridge)
    for i in range(3 * OUTBOX_HIGH):  # more than the high-water mark: put waits for room
        assert await outbox.put(text(i))
    assert await outbox.put({"type": "websocket.close", "code": 1001, "reason": ""})
    with trio.fail_after(5):
        await outbox.finished.wait()
    assert [f.get("text") for f in client.frames[:-1]] == [
        f"frame {i}" for i in range(3 * OUTBOX_HIGH)
    ]
    assert client.frames[-1]["type"] == "websocket.close"
    assert outbox.failure is None
    assert task.done()
    assert not await outbox.put(text(-1))  # nothing is taken after the writer stopped


@guest_test(timeout=20)
async def test_a_client_that_stops_reading_stops_the_writer_within_the_send_timeout() -> None:
    bridge = Bridge.current()
    client = FakeClient()
    client.stuck = True
    outbox = Outbox(bridge, client.send, send_timeout=0.3)
    task = await with_writer(outbox, bridge)
    started = trio.current_time()
    results = [await outbox.put(text(i)) for i in range(OUTBOX_HIGH)]
    assert results[:-1] == [True] * (OUTBOX_HIGH - 1)
    assert results[-1] is False  # past the high-water mark: no room came within the timeout
    assert trio.current_time() - started < 3
    assert outbox.failure == "send timed out"
    with trio.fail_after(5):
        await outbox.finished.wait()
    assert task.done()
    assert client.frames == []


@guest_test(timeout=20)
async def test_a_departed_client_stops_the_writer() -> None:
    bridge = Bridge.current()
    client = FakeClient(gone_after=1)
    outbox = Outbox(bridge, client.send, send_timeout=5.0)
    task = await with_writer(outbox, bridge)
    assert await outbox.put(text(0))
    assert await outbox.put(text(1))  # queued; the writer then fails on it
    with trio.fail_after(5):
        await outbox.finished.wait()
    assert outbox.failure == "disconnected"
    assert [f["text"] for f in client.frames] == ["frame 0"]
    assert not await outbox.put(text(2))
    assert task.done()


@guest_test(timeout=20)
async def test_two_senders_waiting_for_room_both_get_it() -> None:
    """The protocol's pump and its reader (an error answer) may both wait past the high-water
    mark: the drain wakes both (one waiter's event must not replace the other's)."""
    bridge = Bridge.current()
    client = FakeClient()
    gate = asyncio.Event()
    plain_send = client.send

    async def gated(frame: MutableMapping[str, Any]) -> None:
        await gate.wait()
        await plain_send(frame)

    outbox = Outbox(bridge, gated, send_timeout=5.0)
    task = await with_writer(outbox, bridge)
    for i in range(OUTBOX_HIGH - 1):
        assert await outbox.put(text(i))
    results: list[bool] = []

    async def sender(i: int) -> None:
        results.append(await outbox.put(text(i)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender, 1000)
        nursery.start_soon(sender, 1001)
        await trio.sleep(0.2)  # both are waiting for room now
        bridge.call_host(gate.set)
    assert results == [True, True]
    assert outbox.failure is None
    assert await outbox.put({"type": "websocket.close", "code": 1000, "reason": ""})
    with trio.fail_after(5):
        await outbox.finished.wait()
    assert len(client.frames) == OUTBOX_HIGH + 2
    assert task.done()
