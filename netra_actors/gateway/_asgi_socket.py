"""The ASGI adapter's WebSocket: one ASGI ``websocket`` scope served by the protocol's
:class:`~._connection.Connection`, exactly as in the trio gateway.

:func:`serve_websocket` refuses the upgrade (503 while the runtime is not running or the server
shuts down, 404 off ``/ws``, 403 for an Origin the rule of :mod:`._trust` refuses) or accepts
it and runs the connection in trio. :class:`AsgiSocket` is the connection's socket
(:class:`~._transport.WebSocketLike`): it receives through the ASGI ``receive`` on the host loop
and sends through the socket's :class:`~._asgi_outbox.Outbox`. Keepalive pings and the framing
are the ASGI server's (uvicorn: ``--ws-ping-interval``); sockets it closes itself get 1012.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import trio

from ._asgi_http import Receive, Running, Scope, Send, request_from_scope, send_response
from ._asgi_outbox import Outbox
from ._connection import Connection
from ._http import HttpRequest, HttpResponse
from ._routes import WS_PATH
from ._transport import SocketClosed

log = logging.getLogger("netra_actors.gateway")

_UNSENDABLE = frozenset({1005, 1006, 1015})


class AsgiSocket:
    """An accepted ASGI WebSocket, seen from trio: the socket interface the protocol's
    :class:`Connection` uses (bounded sends, a bounded close)."""

    def __init__(
        self, running: Running, receive: Receive, outbox: Outbox, *, close_timeout: float
    ) -> None:
        self._running = running
        self._receive = receive
        self._outbox = outbox
        self._close_timeout = close_timeout
        self._closed: int | None = None
        self._done = trio.Event()

    @property
    def closed(self) -> bool:
        """True once closed or closing, by either side."""
        return self._closed is not None

    def _ended(self, code: int) -> None:
        if self._closed is None:
            self._closed = code
        self._done.set()

    async def receive(self) -> str | bytes:
        """The next message; :class:`SocketClosed` once the client disconnected."""
        if self._closed is not None:
            raise SocketClosed(self._closed)
        message = await self._running.on_host(self._receive())
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                return str(text)
            return bytes(message.get("bytes") or b"")
        code = int(message.get("code", 1005)) if kind == "websocket.disconnect" else 1006
        self._ended(code)
        raise SocketClosed(code, str(message.get("reason") or "") or None)

    async def send(self, message: str | bytes) -> None:
        """Queue a frame for the socket's writer; a client that does not take the frames within
        the send timeout is dropped (:class:`SocketClosed`)."""
        if self._closed is not None:
            raise SocketClosed(self._closed)
        frame: dict[str, Any] = {"type": "websocket.send"}
        frame["text" if isinstance(message, str) else "bytes"] = message
        if await self._outbox.put(frame):
            return
        if self._outbox.failure == "send timed out":
            log.info("a socket did not take its frames in time; dropping it")
            await self.abort()
            raise SocketClosed(None, "send timed out")
        self._ended(1006)
        raise SocketClosed(1006)

    def offer(self, messages: list[str]) -> bool:
        """Queue text frames now, without waiting, if the outbox has room for all of them
        (False: nothing was queued; :meth:`send` them, which waits for room)."""
        if self._closed is not None:
            return False
        return self._outbox.offer([{"type": "websocket.send", "text": text} for text in messages])

    async def keepalive(self, interval: float, pong_timeout: float) -> None:
        """Returns when the socket is closed (the ASGI server pings)."""
        await self._done.wait()

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code`` (bounded by the close timeout). Safe to call more than once."""
        if self._closed is None and code not in _UNSENDABLE:
            self._closed = code
            frame = {"type": "websocket.close", "code": code, "reason": reason[:120]}
            with trio.move_on_after(self._close_timeout):
                if await self._outbox.put(frame):  # after every frame queued before it
                    await self._outbox.finished.wait()
        self._ended(code)

    async def abort(self) -> None:
        """Give up on the socket: the ASGI server drops it when the handler returns."""
        self._ended(1006)


async def serve_websocket(
    running: Running | None, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve one ASGI ``websocket`` scope: refuse the upgrade, or run the protocol on it."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    request = request_from_scope(scope, b"")
    refusal: HttpResponse | None = None
    if running is None or running.state.deps is None:
        refusal = HttpResponse.text(503, "the runtime is not running")
    elif request.path != WS_PATH:
        refusal = HttpResponse.text(404)
    elif not running.state.origin_allowed(request):
        log.info("refused a WebSocket from Origin %r", request.header("origin"))
        refusal = HttpResponse.text(403, "403 Forbidden: this Origin is not allowed")
    elif running.state.shutting_down:
        refusal = HttpResponse.text(503, "server shutting down")
    if refusal is not None:
        if running is not None:
            running.state.count(request, refusal.status)
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send_response(send, refusal, prefix="websocket.")
        else:
            await send({"type": "websocket.close", "code": 1008})  # the server answers 403
        return
    assert running is not None
    running.state.count(request, 101)
    await send({"type": "websocket.accept"})
    config = running.state.config
    outbox = Outbox(running.embedded._bridge, send, config.send_timeout)
    socket = AsgiSocket(running, receive, outbox, close_timeout=config.close_timeout)
    client = scope.get("client")
    writer = asyncio.ensure_future(outbox.write())
    try:
        with contextlib.suppress(Exception):  # the runtime stopped under it: nothing to send
            await running.embedded._call(_run, running, socket, client, request)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def _run(running: Running, socket: AsgiSocket, client: Any, request: HttpRequest) -> None:
    """In trio: the protocol on an accepted socket, held in the server's table while it runs."""
    state = running.state
    assert state.deps is not None
    peer = f"{client[0]}:{client[1]}" if client else "?"
    with state.running(websocket=True) as handler:
        conn = Connection(state.deps, socket, peer, request)
        state.attach(handler, conn)
        await conn.run()
