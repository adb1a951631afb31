"""The gateway: one port for the page, health, metrics and the WebSocket; graceful shutdown.

:class:`Gateway` owns the listening sockets, the table of open WebSocket connections and the
per-user limits. HTTP routes live in :mod:`._routes`; one socket's protocol in
:mod:`._connection`.

Shutdown is cancellation of :meth:`Gateway.serve` (``netra_actors.run`` turns SIGINT/SIGTERM into
it): the listeners close at once, every open socket is asked to close with 1001, and sockets that
have not closed within ``shutdown_timeout`` are dropped. WebSocket handlers run shielded from that
cancellation so that they can still send their close frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

import trio

from .._runtime import Runtime
from ._agui_routes import SSE_CONTENT_TYPE, AguiRoutes, SseStream
from ._config import GatewayConfig
from ._connection import GOING_AWAY, Connection, ConnectionDeps
from ._echo import EchoConnection
from ._http import HttpRequest, HttpResponse, serve_http_connection
from ._limits import UserLimits
from ._metrics import GatewayMetrics, fullest_mailbox
from ._routes import Routes
from ._transport import accept_websocket

log = logging.getLogger("netra_actors.gateway")


class _Stoppable(Protocol):
    def request_close(self, code: int, reason: str) -> None: ...


class _Live:
    """A WebSocket handler (or an AG-UI event stream) the gateway may have to stop."""

    __slots__ = ("conn", "hard")

    def __init__(self, hard: trio.CancelScope) -> None:
        self.hard = hard
        self.conn: _Stoppable | None = None


def _peer(stream: trio.abc.Stream) -> str:
    if isinstance(stream, trio.SocketStream):
        try:
            host, port, *_ = stream.socket.getpeername()
            return f"{host}:{port}"
        except OSError:
            pass
    return "?"


class Gateway:
    """The WebSocket gateway and its HTTP front. Run it with :meth:`serve`.

    ``runtime`` may be None only with ``config.echo`` (the WebSocket conformance mode).
    """

    def __init__(self, runtime: Runtime | None, config: GatewayConfig) -> None:
        if runtime is None and not config.echo:
            raise ValueError("a runtime is required (unless config.echo)")
        self.config = config
        self.runtime = runtime
        self.metrics = GatewayMetrics()
        self.limits = UserLimits(config.rate, config.max_sockets_per_user)
        self.port: int | None = None
        """The listening port, once :meth:`serve` has started."""
        self.origins: frozenset[str] = frozenset()
        self.started_at = time.time()
        self.shutting_down = False
        self._live: set[_Live] = set()
        self._connections = 0
        self._idle = trio.Event()
        self._routes = Routes(self)
        self._deps: ConnectionDeps | None = None
        self.agui: AguiRoutes | None = None
        if runtime is not None:
            self._deps = ConnectionDeps(
                runtime=runtime, config=config, limits=self.limits, metrics=self.metrics
            )
            self.agui = AguiRoutes(self._deps)
            self.metrics.attach_runtime(runtime, self.socket_mailbox_depth)

    # -- observation ------------------------------------------------------------------------

    def origins_for(self, request: HttpRequest) -> frozenset[str]:
        """The Origin allowlist (one for every request)."""
        return self.origins

    def dev_tokens_for(self, request: HttpRequest) -> bool:
        """Development sign-in as configured (refused on non-loopback hosts at configuration)."""
        return self.config.dev_tokens

    @property
    def open_sockets(self) -> int:
        """WebSocket connections open right now."""
        return len(self._live)

    def socket_mailbox_depth(self) -> int:
        """Events waiting in the fullest socket mailbox."""
        return fullest_mailbox(live.conn for live in self._live)

    # -- serving ----------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; then shut down gracefully (see the module doc)."""
        config = self.config
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        self.port = listeners[0].socket.getsockname()[1]
        self.origins = config.origins_for(self.port)
        log.info("gateway listening on %s:%d", config.host, self.port)
        async with trio.open_nursery() as handlers:
            try:
                async with trio.open_nursery() as acceptors:
                    await acceptors.start(
                        partial(
                            trio.serve_listeners,
                            self._handle_stream,
                            listeners,
                            handler_nursery=handlers,
                        )
                    )
                    task_status.started(self)
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await trio.aclose_forcefully(listener)
                    await self._shutdown()

    async def _shutdown(self) -> None:
        self.shutting_down = True
        if not self._live:
            return
        log.info("closing %d socket(s) with 1001", len(self._live))
        for live in list(self._live):
            if live.conn is not None:
                live.conn.request_close(GOING_AWAY, "server shutting down")
        with trio.move_on_after(self.config.shutdown_timeout):
            await self._idle.wait()
        for live in list(self._live):
            live.hard.cancel()

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        if self._connections >= self.config.max_connections:
            log.warning("connection limit (%d) reached; refusing one", self.config.max_connections)
            await trio.aclose_forcefully(stream)
            return
        self._connections += 1
        try:
            await serve_http_connection(
                stream,
                self,
                request_timeout=self.config.request_timeout,
                send_timeout=self.config.send_timeout,
            )
        finally:
            self._connections -= 1

    # -- the HttpApp interface --------------------------------------------------------------

    async def http(self, request: HttpRequest) -> HttpResponse:
        """Answer a plain HTTP request (see :mod:`._routes`)."""
        response = await self._routes.http(request)
        if isinstance(response, SseStream):
            response = self._streamed(response)
        self._count(request, response)
        return response

    def _streamed(self, sse: SseStream) -> HttpResponse:
        """An AG-UI event stream as a streamed response, stopped like a socket at shutdown."""

        async def body(send: Callable[[bytes], Awaitable[None]]) -> bool:
            with trio.CancelScope(shield=True) as hard:
                live = _Live(hard)
                live.conn = sse
                self._live.add(live)
                try:
                    if self.shutting_down:
                        sse.request_close()
                    return await sse.run(send)
                finally:
                    self._live.discard(live)
                    if self.shutting_down and not self._live:
                        self._idle.set()
            return False  # cancelled from outside (a cancel scope may swallow it)

        return HttpResponse(
            status=200,
            content_type=SSE_CONTENT_TYPE,
            headers=sse.headers,
            stream=body,
            on_client_gone=sse.discard,
        )

    async def websocket(
        self, request: HttpRequest, stream: trio.abc.Stream, prefix: bytes
    ) -> HttpResponse | None:
        """Check the upgrade request (path, Origin, headers), then run the WebSocket."""
        refusal = self._routes.check_upgrade(request)
        if refusal is None and self.shutting_down:
            refusal = HttpResponse.text(503, "server shutting down")
        if refusal is not None:
            self._count(request, refusal)
            return refusal
        self._count(request, None)
        with trio.CancelScope(shield=True) as hard:
            live = _Live(hard)
            self._live.add(live)
            self.metrics.sockets_open.inc()
            try:
                await self._run_socket(live, stream, prefix)
            finally:
                self._live.discard(live)
                self.metrics.sockets_open.dec()
                if self.shutting_down and not self._live:
                    self._idle.set()
        return None

    async def _run_socket(self, live: _Live, stream: trio.abc.Stream, prefix: bytes) -> None:
        config = self.config
        async with trio.open_nursery() as nursery:
            socket = await accept_websocket(
                nursery,
                stream,
                prefix,
                max_message_size=config.max_message_size,
                handshake_timeout=config.request_timeout,
                send_timeout=config.send_timeout,
                close_timeout=config.close_timeout,
            )
            if socket is not None:
                self.metrics.sockets_opened.inc()
                conn: EchoConnection | Connection
                if self._deps is None:
                    conn = EchoConnection(socket, config.ping_interval, config.pong_timeout)
                else:
                    conn = Connection(self._deps, socket, _peer(stream))
                live.conn = conn
                if self.shutting_down:
                    conn.request_close(GOING_AWAY, "server shutting down")
                await conn.run()
            nursery.cancel_scope.cancel()  # trio-websocket's reader task

    def _count(self, request: HttpRequest, response: HttpResponse | None) -> None:
        route = request.path if request.path in self._routes.known else "other"
        status = "101" if response is None else str(response.status)
        self.metrics.http_requests.labels(route, status).inc()


async def serve_gateway(
    runtime: Runtime | None,
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``runtime`` with a :class:`Gateway` until cancelled (``nursery.start`` gives it)."""
    await Gateway(runtime, config).serve(task_status=task_status)
