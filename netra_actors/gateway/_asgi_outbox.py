"""The ASGI adapter's per-socket writer: frames from trio to the ASGI ``send``, in order.

The protocol's :class:`~._connection.Connection` runs in trio, but an ASGI WebSocket is written
with the server's ``send`` coroutine on the asyncio loop. :class:`Outbox` is the crossing: trio
appends frames (no task, no event, no wake-up of trio per frame), and one long-lived asyncio
task per socket (:meth:`Outbox.write`) sends them. Bounded: a sender waits when
:data:`OUTBOX_HIGH` frames are unsent, and a client that does not take a frame within the send
timeout stops the writer (the socket is dropped).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import MutableMapping
from typing import Any

import trio

from .._bridge import Bridge
from ._asgi_http import Send

OUTBOX_HIGH = 64
"""Frames a socket may have queued for the ASGI server before the protocol's sender waits."""


class Outbox:
    """The frames of one socket on their way from trio to the ASGI ``send``, in order.

    A long-lived asyncio task (:meth:`write`) sends them; trio only appends (a frame costs no
    task, no event and no wake-up of trio) and waits only when :data:`OUTBOX_HIGH` frames are
    still unsent, until the writer has drained half of them. A frame the client does not take
    within the send timeout ends the writer (the socket is dropped).
    """

    def __init__(self, bridge: Bridge, send: Send, send_timeout: float) -> None:
        self._bridge = bridge
        self._send = send
        self._send_timeout = send_timeout
        self._frames: deque[MutableMapping[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._room: trio.Event | None = None
        self.finished = trio.Event()
        """Set once the writer has stopped (everything sent, or it failed)."""
        self.failure: str | None = None

    # trio side -------------------------------------------------------------------------------

    async def put(self, frame: MutableMapping[str, Any]) -> bool:
        """Queue a frame; False if the writer has stopped (or did not drain in time)."""
        if self.finished.is_set():
            return False
        self._frames.append(frame)
        if len(self._frames) == 1:
            self._bridge.call_host(self._wake.set)
        if len(self._frames) >= OUTBOX_HIGH:
            room = self._room  # one event for every waiting sender (pump and reader)
            if room is None:
                room = self._room = trio.Event()
            with trio.move_on_after(self._send_timeout):
                await room.wait()
            if not room.is_set():
                self.failure = "send timed out"
                return False
        return not self.finished.is_set()

    def offer(self, frames: list[MutableMapping[str, Any]]) -> bool:
        """Queue frames without waiting: False (nothing queued) if they would fill the outbox
        to :data:`OUTBOX_HIGH` — where :meth:`put` would wait — or the writer has stopped."""
        queued = self._frames
        if self.finished.is_set() or len(queued) + len(frames) >= OUTBOX_HIGH:
            return False
        if not queued:
            self._bridge.call_host(self._wake.set)
        queued.extend(frames)
        return True

    # asyncio side ----------------------------------------------------------------------------

    async def write(self) -> None:
        """Send queued frames until cancelled or the client is gone (an asyncio task)."""
        loop = asyncio.get_running_loop()
        frames, send = self._frames, self._send
        try:
            async with asyncio.timeout(None) as deadline:
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    while frames:
                        deadline.reschedule(loop.time() + self._send_timeout)
                        frame = frames[0]
                        await send(frame)
                        frames.popleft()
                        room = self._room
                        if room is not None and len(frames) <= OUTBOX_HIGH // 2:
                            self._room = None
                            self._bridge.to_trio(room.set)
                        if frame["type"] == "websocket.close":
                            return
                    deadline.reschedule(None)
        except TimeoutError:
            self.failure = "send timed out"
        except (OSError, RuntimeError):  # uvicorn: ClientDisconnected (an OSError)
            self.failure = "disconnected"
        finally:
            frames.clear()
            self._bridge.to_trio(self._stopped)

    def _stopped(self) -> None:
        self.finished.set()
        if self._room is not None:
            self._room.set()
