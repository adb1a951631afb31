"""Echo mode: the gateway's transport with an echo handler, for WebSocket conformance runs.

Started with the hidden ``netra-actors serve --echo``: ``/ws`` echoes every text and binary
message, through the same HTTP front, handshake, bounded sends and closing logic as the real
gateway, so that an Autobahn run (kosoku) tests exactly that transport.
"""

from __future__ import annotations

import logging

import trio

from ._transport import Socket, SocketClosed

log = logging.getLogger("netra_actors.gateway")


class EchoConnection:
    """Echo every message back until the peer closes."""

    def __init__(self, socket: Socket, ping_interval: float, pong_timeout: float) -> None:
        self.socket = socket
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._scope = trio.CancelScope()
        self._close: tuple[int, str] | None = None

    def request_close(self, code: int, reason: str) -> None:
        """Stop echoing and close with ``code``."""
        if self._close is None:
            self._close = (code, reason)
        self._scope.cancel()

    async def run(self) -> None:
        """Echo until the peer closes (or :meth:`request_close`)."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        self.socket.keepalive, self._ping_interval, self._pong_timeout
                    )
                    await self._echo()
                    nursery.cancel_scope.cancel()
        except Exception:
            log.exception("echo connection failed")
            self.request_close(1011, "internal error")
        finally:
            code, reason = self._close or (1000, "")
            with trio.CancelScope(shield=True):
                await self.socket.close(code, reason)

    async def _echo(self) -> None:
        try:
            while True:
                await self.socket.send(await self.socket.receive())
        except SocketClosed:
            return
