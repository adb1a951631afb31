"""The WebSocket transport: trio-websocket, hardened.

trio-websocket speaks the protocol (it passes the Autobahn cases) but leaves the rest to its user:
this module adds what the gateway needs around one :class:`trio_websocket.WebSocketConnection`:

* the handshake on a stream whose first bytes the HTTP front already read (:class:`ReplayStream`);
* every send bounded by a timeout — a peer that stops reading is dropped, never waited on;
* keepalive pings with a pong timeout;
* a closing handshake bounded by a timeout, after which the TCP connection is closed regardless
  (trio-websocket leaves it open after some closes, e.g. its own 1009).
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

log = logging.getLogger("netra_actors.gateway")

_UNSENDABLE = frozenset({1005, 1006, 1015})
"""Close codes that only describe a closure; they never go on the wire."""

INBOUND_QUEUE = 4
"""Messages trio-websocket may hold between its reader task and ours (backpressure beyond)."""

CLOSING_READ_BUDGET = 16 * 1024
"""Bytes still read (and parsed) from a peer after our close frame while waiting for its own.
A polite peer's close frame comes well within it; a peer that keeps sending (a flood, a client
told 4429 or 4400) is not parsed for the whole close timeout: past the budget the connection
counts as ended and is dropped."""


class ReplayStream(trio.abc.Stream):
    """A stream that first yields ``prefix`` (bytes already read), then reads from ``inner``."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = memoryview(prefix)
        self._budget: int | None = None

    def limit_reads(self, max_bytes: int) -> None:
        """Yield at most ``max_bytes`` more from now on, then end of stream."""
        self._budget = max_bytes

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            n = len(self._prefix) if max_bytes is None else max(1, max_bytes)
            chunk, self._prefix = bytes(self._prefix[:n]), self._prefix[n:]
            await trio.lowlevel.checkpoint()
            return chunk
        if self._budget is None:
            return bytes(await self._inner.receive_some(max_bytes))
        if self._budget <= 0:
            await trio.lowlevel.checkpoint()
            return b""
        limit = self._budget if max_bytes is None else min(max_bytes, self._budget)
        data = bytes(await self._inner.receive_some(limit))
        self._budget -= len(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._inner.aclose()


class SocketClosed(Exception):
    """The WebSocket is closed. ``code`` is the close code if one is known."""

    def __init__(self, code: int | None, reason: str | None = None) -> None:
        super().__init__(f"socket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class WebSocketLike(Protocol):
    """What a :class:`~._connection.Connection` needs of its WebSocket: :class:`Socket` (trio
    gateway) and :class:`~._asgi_socket.AsgiSocket` (ASGI servers) are the two."""

    @property
    def closed(self) -> bool: ...

    async def receive(self) -> str | bytes: ...

    async def send(self, message: str | bytes) -> None: ...

    async def keepalive(self, interval: float, pong_timeout: float) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...

    async def abort(self) -> None: ...


class Socket:
    """One accepted WebSocket with bounded sends, keepalive and a bounded close."""

    def __init__(
        self,
        ws: WebSocketConnection,
        stream: ReplayStream,
        *,
        send_timeout: float,
        close_timeout: float,
    ) -> None:
        self._ws = ws
        self._stream = stream
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._aborted = False

    @property
    def closed(self) -> bool:
        """True once closed or closing, by either side."""
        return self._aborted or self._ws.closed is not None

    async def receive(self) -> str | bytes:
        """The next message (``str`` for text, ``bytes`` for binary); :class:`SocketClosed`."""
        try:
            return await self._ws.get_message()
        except ConnectionClosed as exc:
            reason = exc.reason
            raise SocketClosed(
                reason.code if reason else None, reason.reason if reason else None
            ) from None

    async def send(self, message: str | bytes) -> None:
        """Send a message (text for ``str``) within the send timeout.

        A peer that does not take it in time is dropped (a half-written frame cannot be followed
        by a close frame) and :class:`SocketClosed` is raised, as for any closed socket.
        """
        if self.closed:
            raise SocketClosed(self._ws.closed.code if self._ws.closed else None)
        with trio.move_on_after(self._send_timeout) as scope:
            try:
                await self._ws.send_message(message)
            except ConnectionClosed as exc:
                raise SocketClosed(exc.reason.code if exc.reason else None) from None
        if scope.cancelled_caught:
            log.info("a socket did not take a frame within %.1fs; dropping it", self._send_timeout)
            await self.abort()
            raise SocketClosed(None, "send timed out")

    async def keepalive(self, interval: float, pong_timeout: float) -> None:
        """Ping every ``interval`` seconds; drop the socket if a pong takes over ``pong_timeout``.

        Returns when the socket is closed or dropped.
        """
        while not self.closed:
            await trio.sleep(interval)
            with trio.move_on_after(pong_timeout) as scope:
                try:
                    await self._ws.ping()
                except ConnectionClosed:
                    return
            if scope.cancelled_caught:
                log.info("no pong within %.1fs; dropping the socket", pong_timeout)
                await self.abort()
                return

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code``: the closing handshake within the close timeout, then the TCP
        connection. Safe to call more than once, and when the peer already closed."""
        if not self._aborted and code not in _UNSENDABLE:
            # trio-websocket parses whatever the peer sends until its close frame comes: bound it
            self._stream.limit_reads(CLOSING_READ_BUDGET)
            with trio.move_on_after(self._close_timeout):
                await self._ws.aclose(code, reason[:120] or None)
        await self.abort()

    async def abort(self) -> None:
        """Drop the TCP connection now (no closing handshake)."""
        self._aborted = True
        await trio.aclose_forcefully(self._stream)


async def accept_websocket(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    prefix: bytes,
    *,
    max_message_size: int,
    handshake_timeout: float,
    send_timeout: float,
    close_timeout: float,
) -> Socket | None:
    """Complete the opening handshake on ``stream``; None if it does not complete in time.

    trio-websocket's reader task runs in ``nursery``: cancel it once the socket is done.
    """
    replay = ReplayStream(stream, prefix)
    with trio.move_on_after(handshake_timeout):
        request = await wrap_server_stream(
            nursery,
            replay,
            message_queue_size=INBOUND_QUEUE,
            max_message_size=max_message_size,
        )
        ws = await request.accept()
        return Socket(ws, replay, send_timeout=send_timeout, close_timeout=close_timeout)
    return None
