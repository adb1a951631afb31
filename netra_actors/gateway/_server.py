"""The trio gateway: one port for the page, health, metrics, AG-UI and the WebSocket.

:class:`Gateway` is a transport over a :class:`~._state.ServerState` (what it serves, its rules,
its table of running handlers, shutdown): it owns the listening sockets and the count of open TCP
connections — in all (``max_connections``) and per peer address (``max_connections_per_ip``,
counted from accept to close, so that one client cannot hold every slot with half-sent
requests; a request must arrive within ``request_timeout``) — reads each connection's request with the h11 front (:mod:`._http`), and runs a
WebSocket with trio-websocket (:mod:`._transport`) or an AG-UI stream as a streamed response.

Shutdown is cancellation of :meth:`Gateway.serve` (``netra_actors.run`` turns SIGINT/SIGTERM into
it): the listeners close at once, then :meth:`ServerState.drain` closes every socket with 1001,
ends every stream and drops what has not ended within ``shutdown_timeout``. Handlers run shielded
from that cancellation so that they can still send their close frame.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from .._logs import RateLimiter, log_limited
from .._runtime import Runtime
from ._agui_stream import SSE_CONTENT_TYPE, SseStream
from ._config import GatewayConfig
from ._connection import Connection
from ._echo import EchoConnection
from ._http import HttpRequest, HttpResponse, serve_http_connection
from ._metrics import GatewayMetrics
from ._state import Handler, ServerState
from ._transport import accept_websocket

log = logging.getLogger("netra_actors.gateway")
_REFUSALS = RateLimiter(10.0)
"""Refused connections: one line per peer address per period, however many are refused."""


def _address(stream: trio.abc.Stream, *, peer: bool) -> tuple[str, int] | None:
    """The peer's (or, with ``peer`` False, our own) address of a TCP stream."""
    if isinstance(stream, trio.SocketStream):
        sock = stream.socket
        try:
            host, port, *_ = sock.getpeername() if peer else sock.getsockname()
            return str(host), int(port)
        except OSError:
            pass
    return None


class Gateway:
    """The WebSocket gateway and its HTTP front. Run it with :meth:`serve`.

    ``runtime`` may be None only with ``config.echo`` (the WebSocket conformance mode).
    """

    def __init__(self, runtime: Runtime | None, config: GatewayConfig) -> None:
        if runtime is None and not config.echo:
            raise ValueError("a runtime is required (unless config.echo)")
        self.state = ServerState(config, runtime)
        self.port: int | None = None
        """The listening port, once :meth:`serve` has started."""
        self._connections = 0
        self._per_ip: dict[str, int] = {}
        """Open connections by peer address (those subject to the per-IP cap)."""

    @property
    def config(self) -> GatewayConfig:
        return self.state.config

    @property
    def runtime(self) -> Runtime | None:
        return self.state.runtime

    @property
    def metrics(self) -> GatewayMetrics:
        return self.state.metrics

    @property
    def origins(self) -> frozenset[str]:
        """The Origin allowlist (empty until :meth:`serve` listens)."""
        return self.state.origins.fixed or frozenset()

    @property
    def open_sockets(self) -> int:
        """WebSocket connections open right now."""
        return self.state.open_sockets

    # -- serving ----------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; then shut down gracefully (see the module doc)."""
        config = self.config
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        self.port = listeners[0].socket.getsockname()[1]
        self.state.origins.listening(self.port)
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
                    await self.state.drain()

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        config = self.config
        peer = _address(stream, peer=True)
        ip = peer[0] if peer is not None else "?"
        capped = config.max_connections_per_ip > 0 and ip not in config.uncapped_peers
        refusal = None
        if self._connections >= config.max_connections:
            refusal = f"the connection limit ({config.max_connections}) is reached"
        elif capped and self._per_ip.get(ip, 0) >= config.max_connections_per_ip:
            refusal = f"{ip} holds {config.max_connections_per_ip} connections (its limit)"
        if refusal is not None:
            log_limited(
                log, logging.WARNING, ip, "refusing connections: %s", refusal, limiter=_REFUSALS
            )
            await trio.aclose_forcefully(stream)
            return
        self._connections += 1
        if capped:
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        try:
            await serve_http_connection(
                stream,
                self,
                request_timeout=config.request_timeout,
                send_timeout=config.send_timeout,
                local=_address(stream, peer=False),
            )
        finally:
            self._connections -= 1
            if capped:
                left = self._per_ip[ip] - 1
                if left:
                    self._per_ip[ip] = left
                else:
                    del self._per_ip[ip]

    # -- the HttpApp interface --------------------------------------------------------------

    async def http(self, request: HttpRequest) -> HttpResponse:
        """Answer a plain HTTP request (see :mod:`._routes`)."""
        response = await self.state.routes.http(request)
        if isinstance(response, SseStream):
            response = self._streamed(response)
        self.state.count(request, response.status)
        return response

    def _streamed(self, sse: SseStream) -> HttpResponse:
        """An AG-UI event stream as a streamed response, stopped like a socket at shutdown."""

        async def body(send: Callable[[bytes], Awaitable[None]]) -> bool:
            with (
                trio.CancelScope(shield=True) as hard,
                self.state.running(websocket=False, hard=hard) as handler,
            ):
                self.state.attach(handler, sse)
                return await sse.run(send)
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
        state = self.state
        refusal = state.routes.check_upgrade(request)
        if refusal is None and state.shutting_down:
            refusal = HttpResponse.text(503, "server shutting down")
        if refusal is not None:
            state.count(request, refusal.status)
            return refusal
        state.count(request, 101)
        with (
            trio.CancelScope(shield=True) as hard,
            state.running(websocket=True, hard=hard) as handler,
        ):
            await self._run_socket(handler, request, stream, prefix)
        return None

    async def _run_socket(
        self, handler: Handler, request: HttpRequest, stream: trio.abc.Stream, prefix: bytes
    ) -> None:
        config, deps = self.config, self.state.deps
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
                conn: EchoConnection | Connection
                if deps is None:
                    conn = EchoConnection(socket, config.ping_interval, config.pong_timeout)
                else:
                    peer = _address(stream, peer=True)
                    shown = f"{peer[0]}:{peer[1]}" if peer else "?"
                    conn = Connection(deps, socket, shown, request)
                self.state.attach(handler, conn)
                await conn.run()
            nursery.cancel_scope.cancel()  # trio-websocket's reader task


async def serve_gateway(
    runtime: Runtime | None,
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``runtime`` with a :class:`Gateway` until cancelled (``nursery.start`` gives it)."""
    await Gateway(runtime, config).serve(task_status=task_status)
