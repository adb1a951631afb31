"""The server-side state both servers share, and their shutdown.

The trio gateway (:mod:`._server`) and the ASGI adapter (:mod:`._asgi_app`) are transports: they
accept connections and move bytes. Everything else a server holds is one :class:`ServerState`:
the configuration, the runtime, metrics and per-user limits, the request rules of
:mod:`._trust`, the HTTP routes, and the table of running WebSocket handlers and AG-UI streams.

Shutdown is the same on both: :meth:`ServerState.begin_shutdown` asks every socket to close with
1001 and ends every AG-UI stream (new ones are refused, or closed as they start);
:meth:`ServerState.drain` waits for them within ``shutdown_timeout`` and then stops what is left.
Then the transport stops the runtime. Everything here runs in trio (the ASGI adapter reaches it
through the bridge).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import trio

from .._runtime import Runtime
from ._agui_routes import AguiRoutes
from ._config import GatewayConfig
from ._connection import ConnectionDeps
from ._http import HttpRequest
from ._limits import UserLimits
from ._metrics import GatewayMetrics, fullest_mailbox
from ._routes import Routes
from ._session_rules import GOING_AWAY
from ._sign_in import SignIn
from ._trust import Origins, dev_sign_in_allowed

log = logging.getLogger("netra_actors.gateway")


class Stoppable(Protocol):
    """A WebSocket connection (protocol or echo) or an AG-UI stream: asked to end by shutdown."""

    def request_close(self, code: int, reason: str) -> None: ...


class Handler:
    """One running WebSocket handler or AG-UI stream, as the server's table holds it."""

    __slots__ = ("conn", "hard", "websocket")

    def __init__(self, websocket: bool, hard: trio.CancelScope | None) -> None:
        self.websocket = websocket
        self.hard = hard
        """Cancelled when the handler has not ended within the shutdown timeout (the trio
        gateway runs its handlers shielded from its own cancellation)."""
        self.conn: Stoppable | None = None
        """What shutdown asks to end; None while a WebSocket handshake is still under way."""


class ServerState:
    """What one server holds while it serves ``runtime`` (None: the echo mode of the trio
    gateway). The HTTP routes read it as their :class:`~._routes.GatewayState`."""

    def __init__(self, config: GatewayConfig, runtime: Runtime | None) -> None:
        self.config = config
        self.runtime = runtime
        self.metrics = GatewayMetrics()
        self.limits = UserLimits(config.rate, config.max_sockets_per_user)
        self.origins = Origins(config.allowed_origins)
        self.started_at = time.time()
        self.shutting_down = False
        self.deps: ConnectionDeps | None = None
        """What every protocol connection shares; None in echo mode."""
        self.agui: AguiRoutes | None = None
        self.routes = Routes(self)
        self._handlers: set[Handler] = set()
        self._idle = trio.Event()
        """Set when the last handler ended after shutdown began."""
        if runtime is not None:
            sign_in = None if config.auth is None else SignIn(config.auth, config.request_timeout)
            self.deps = ConnectionDeps(
                runtime=runtime,
                config=config,
                limits=self.limits,
                metrics=self.metrics,
                sign_in=sign_in,
            )
            self.agui = AguiRoutes(self.deps)
            self.metrics.attach_runtime(runtime, self.socket_mailbox_depth)

    # -- the request rules ------------------------------------------------------------------

    def origin_allowed(self, request: HttpRequest) -> bool:
        """The Origin rule (:class:`~._trust.Origins`)."""
        return self.origins.allow(request)

    def dev_tokens_for(self, request: HttpRequest) -> bool:
        """The development sign-in rule (:func:`~._trust.dev_sign_in_allowed`)."""
        return dev_sign_in_allowed(self.config.dev_tokens, request)

    def count(self, request: HttpRequest, status: int) -> None:
        """Count an answered request (101: an accepted WebSocket) by route and status."""
        route = request.path if request.path in Routes.known else "other"
        self.metrics.http_requests.labels(route, str(status)).inc()

    # -- the running handlers ---------------------------------------------------------------

    @property
    def open_sockets(self) -> int:
        """WebSocket connections open right now (handshakes under way included)."""
        return sum(1 for handler in self._handlers if handler.websocket)

    def socket_mailbox_depth(self) -> int:
        """Events waiting in the fullest socket (or stream) mailbox."""
        return fullest_mailbox(handler.conn for handler in self._handlers)

    @contextmanager
    def running(
        self, *, websocket: bool, hard: trio.CancelScope | None = None
    ) -> Iterator[Handler]:
        """Hold a WebSocket handler (``websocket``) or an AG-UI stream in the table while it runs;
        :meth:`attach` its connection once there is one."""
        handler = Handler(websocket, hard)
        self._handlers.add(handler)
        if websocket:
            self.metrics.sockets_open.inc()
        try:
            yield handler
        finally:
            self._handlers.discard(handler)
            if websocket:
                self.metrics.sockets_open.dec()
            if self.shutting_down and not self._handlers:
                self._idle.set()

    def attach(self, handler: Handler, conn: Stoppable) -> None:
        """``conn`` runs for ``handler`` (a socket: accepted); ended at once during shutdown."""
        handler.conn = conn
        if handler.websocket:
            self.metrics.sockets_opened.inc()
        if self.shutting_down:
            conn.request_close(GOING_AWAY, "server shutting down")

    # -- shutdown ---------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Close every socket with 1001 and end every AG-UI stream. Idempotent."""
        if self.shutting_down:
            return
        self.shutting_down = True
        if not self._handlers:
            self._idle.set()
            return
        log.info("closing %d socket(s) and stream(s) with 1001", len(self._handlers))
        for handler in list(self._handlers):
            if handler.conn is not None:
                handler.conn.request_close(GOING_AWAY, "server shutting down")

    async def drain(self) -> None:
        """:meth:`begin_shutdown`, then give the handlers ``shutdown_timeout`` to end; stop the
        ones that did not (those the transport can stop)."""
        self.begin_shutdown()
        with trio.move_on_after(self.config.shutdown_timeout):
            await self._idle.wait()
        for handler in list(self._handlers):
            if handler.hard is not None:
                handler.hard.cancel()
