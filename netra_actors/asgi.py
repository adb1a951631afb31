"""The ASGI adapter: what ``netra-actors serve`` serves, from any ASGI server (uvicorn …).

::

    netra = NetraApp(GatewayConfig(secret=...), runtime_config, agents=[...])
    app = FastAPI(lifespan=netra.lifespan)      # the runtime starts and stops with the app
    app.mount("/", netra)                        # the page, /ws, /agui, /healthz, /metrics

One protocol implementation: the runtime runs as a trio guest of the server's asyncio loop
(:func:`netra_actors.embed`), and every request is handed to trio, where the *same* code as in
the trio gateway serves it — :class:`~netra_actors.gateway._connection.Connection` for ``/ws``,
:class:`~netra_actors.gateway._routes.Routes` for the page, health, metrics and sign-in,
:class:`~netra_actors.gateway._agui_routes.AguiRoutes` for AG-UI. Only the transport differs:
:class:`AsgiSocket` gives the connection the ASGI ``receive``/``send`` of its WebSocket (frames
leave through one asyncio writer task per socket, :class:`_Outbox`), and streamed responses go
out as ``http.response.body`` chunks.

Shutdown: on SIGINT/SIGTERM (the adapter chains to the server's own handler) every socket is
closed with 1001 and every AG-UI stream ends, so the server's graceful shutdown does not wait
for them; then the lifespan stops the runtime. Sockets the server closes itself get 1012.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    MutableMapping,
)
from types import FrameType
from typing import Any, cast

import attrs
import trio
from sqlalchemy import MetaData

from ._agent import AgentBase
from ._bridge import Bridge
from ._config import RuntimeConfig
from ._embed import EmbeddedRuntime, embed
from ._exceptions import RuntimeClosedError
from ._runtime import Runtime
from .gateway._agui_routes import SSE_CONTENT_TYPE, AguiRoutes, SseStream
from .gateway._config import GatewayConfig, default_origins, is_loopback_host
from .gateway._connection import GOING_AWAY, Connection, ConnectionDeps
from .gateway._http import MAX_BODY_BYTES, HttpRequest, HttpResponse
from .gateway._limits import UserLimits
from .gateway._metrics import GatewayMetrics, fullest_mailbox
from .gateway._routes import WS_PATH, Routes
from .gateway._transport import SocketClosed

__all__ = ["AsgiSocket", "NetraApp"]

log = logging.getLogger("netra_actors.gateway")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_UNSENDABLE = frozenset({1005, 1006, 1015})
OUTBOX_HIGH = 64
"""Frames a socket may have queued for the ASGI server before the protocol's sender waits."""


class _Outbox:
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


class AsgiSocket:
    """An accepted ASGI WebSocket, seen from trio: the :class:`Socket` interface the protocol's
    :class:`Connection` uses (bounded sends, a bounded close). Keepalive pings are the ASGI
    server's (uvicorn: ``--ws-ping-interval``)."""

    def __init__(
        self, host: _Host, receive: Receive, outbox: _Outbox, *, close_timeout: float
    ) -> None:
        self._host = host
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
        message = await self._host.run(self._receive())
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


class _Host:
    """Runs asyncio coroutines (the ASGI ``receive``/``send``) from trio, on the host loop."""

    def __init__(self, embedded: EmbeddedRuntime) -> None:
        self._bridge = embedded._bridge

    async def run(self, coro: Awaitable[Any]) -> Any:
        return await self._bridge.run_on_host(cast("Coroutine[Any, Any, Any]", coro))


class _Live:
    __slots__ = ("conn",)

    def __init__(self, conn: Connection | SseStream) -> None:
        self.conn = conn


@attrs.define
class _Bound:
    """What the adapter knows once the runtime runs and the server's address is known."""

    embedded: EmbeddedRuntime
    runtime: Runtime
    host: _Host
    config: GatewayConfig
    deps: ConnectionDeps | None = None
    agui: AguiRoutes | None = None


class NetraApp:
    """An ASGI application serving netra's page, ``/ws`` (protocol v1), AG-UI (``/agui``,
    ``/agui/events``), ``/healthz``, ``/metrics`` and development sign-in (``/dev/token``, only
    when ``gateway.dev_tokens`` and only to requests that reach a loopback address).

    Start it with :meth:`lifespan` (FastAPI/Starlette ``lifespan=``), or let the ASGI server
    send it the ``lifespan`` scope when it is the top-level app. ``gateway.host``/``port`` are
    ignored: the Origin allowlist defaults to the page's own origin, taken from the server
    address each request came to (the ASGI ``server``), never from a ``Host`` header.
    """

    def __init__(
        self,
        gateway: GatewayConfig,
        runtime_config: RuntimeConfig | None = None,
        *,
        agents: Iterable[type[AgentBase]] = (),
        default_agent: str | None = None,
        metadata: Iterable[MetaData] = (),
        handle_signals: bool = True,
    ) -> None:
        self.gateway_config = gateway
        self.runtime_config = runtime_config
        self._agents = list(agents)
        self._default_agent = default_agent
        self._metadata = list(metadata)
        self._handle_signals = handle_signals
        self.metrics = GatewayMetrics()
        self.limits = UserLimits(gateway.rate, gateway.max_sockets_per_user)
        self.started_at = time.time()
        self.shutting_down = False
        self._bound: _Bound | None = None
        self._live: set[_Live] = set()
        self._routes = Routes(self)
        self._idle = asyncio.Event()
        """Set when the last socket or stream ended after shutdown began."""
        self._origins: dict[tuple[str, int], frozenset[str]] = {}

    # -- the GatewayState the shared routes read --------------------------------------------

    @property
    def config(self) -> GatewayConfig:
        return self._bound.config if self._bound is not None else self.gateway_config

    @property
    def runtime(self) -> Runtime | None:
        return self._bound.runtime if self._bound is not None else None

    @property
    def embedded(self) -> EmbeddedRuntime:
        """The runtime, for the application's own endpoints (asyncio coroutines)."""
        if self._bound is None:
            raise RuntimeError("the netra runtime is not running (is the lifespan set up?)")
        return self._bound.embedded

    @property
    def open_sockets(self) -> int:
        return sum(1 for live in self._live if isinstance(live.conn, Connection))

    @property
    def agui(self) -> AguiRoutes | None:
        return self._bound.agui if self._bound is not None else None

    # -- life cycle ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run the runtime while the application runs (``FastAPI(lifespan=netra.lifespan)``)."""
        async with embed(
            self.runtime_config,
            agents=self._agents,
            default_agent=self._default_agent,
            metadata=self._metadata,
        ) as embedded:
            runtime = embedded._runtime
            self._bound = _Bound(
                embedded=embedded, runtime=runtime, host=_Host(embedded), config=self.gateway_config
            )
            self.metrics = GatewayMetrics()  # a lifespan may run again (tests): fresh metrics
            self.metrics.attach_runtime(runtime, self._socket_depth)
            self.shutting_down = False
            self._idle = asyncio.Event()
            restore = self._chain_signals() if self._handle_signals else None
            try:
                yield
            finally:
                if restore is not None:
                    restore()
                await self._drain()
                self._bound = None

    def _chain_signals(self) -> Callable[[], None] | None:
        """On SIGINT/SIGTERM, close every socket and stream, then call the server's handler."""
        assert self._bound is not None
        bridge = self._bound.embedded._bridge
        previous: dict[int, Any] = {}

        def handler(sig: int, frame: FrameType | None) -> None:
            bridge.call_host_threadsafe(self.begin_shutdown)
            before = previous.get(sig)
            if callable(before):
                before(sig, frame)
            elif before == signal.SIG_DFL and sig == signal.SIGINT:
                raise KeyboardInterrupt

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
        except ValueError:  # not the main thread: the server handles signals as it likes
            return None

        def restore() -> None:
            for sig, before in previous.items():
                if signal.getsignal(sig) is handler:
                    signal.signal(sig, before)

        return restore

    def begin_shutdown(self) -> None:
        """Close every WebSocket with 1001 and end every AG-UI stream (from asyncio)."""
        if self.shutting_down:
            return
        self.shutting_down = True
        bound = self._bound
        if bound is None:
            return
        if self._live:
            log.info("closing %d socket(s) and stream(s) with 1001", len(self._live))
        bound.embedded._bridge.to_trio(self._close_all)

    def _close_all(self) -> None:
        for live in list(self._live):
            live.conn.request_close(GOING_AWAY, "server shutting down")

    async def _drain(self) -> None:
        """At lifespan exit: close what is still open, give it the shutdown timeout."""
        self.begin_shutdown()
        if self._live:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.gateway_config.shutdown_timeout)

    def _forget(self, live: _Live) -> None:
        self._live.discard(live)
        if self.shutting_down and not self._live and self._bound is not None:
            self._bound.embedded._bridge.call_host(self._idle.set)

    def _socket_depth(self) -> int:
        return fullest_mailbox(live.conn for live in self._live)

    def origins_for(self, request: HttpRequest) -> frozenset[str]:
        """``allowed_origins``, else the page's own origin: from the server address the request
        came to (the ASGI ``server``, not the client's ``Host`` header)."""
        configured = self.gateway_config.allowed_origins
        if configured is not None:
            return configured
        local = request.local or ("127.0.0.1", 0)
        origins = self._origins.get(local)
        if origins is None:
            host, port = local
            shown = f"[{host}]" if ":" in host else host
            origins = self._origins[local] = default_origins(port) | {f"http://{shown}:{port}"}
        return origins

    def dev_tokens_for(self, request: HttpRequest) -> bool:
        """Development sign-in only for requests to a loopback address of the server (a server
        on 0.0.0.0 serves it to local clients only)."""
        local = request.local
        return self.gateway_config.dev_tokens and local is not None and is_loopback_host(local[0])

    def _bind(self, scope: Scope) -> _Bound | None:
        """The bound runtime (its connection dependencies made on first use)."""
        bound = self._bound
        if bound is None or bound.deps is not None:
            return bound
        bound.deps = ConnectionDeps(
            runtime=bound.runtime, config=bound.config, limits=self.limits, metrics=self.metrics
        )
        bound.agui = AguiRoutes(bound.deps)
        return bound

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._serve_lifespan(receive, send)
            return
        bound = self._bind(scope)
        if kind == "websocket":
            await self._websocket(bound, scope, receive, send)
        elif kind == "http":
            await self._http(bound, scope, receive, send)

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            async with self.lifespan():
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
        except Exception as exc:
            log.exception("the netra runtime failed")
            kind = "startup" if message["type"] == "lifespan.startup" else "shutdown"
            await send({"type": f"lifespan.{kind}.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})

    async def _websocket(
        self, bound: _Bound | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        request = _request(scope, b"")
        refusal: HttpResponse | None = None
        if bound is None or bound.deps is None:
            refusal = HttpResponse.text(503, "the runtime is not running")
        elif request.path != WS_PATH:
            refusal = HttpResponse.text(404)
        elif not self._routes.origin_allowed(request):
            log.info("refused a WebSocket from Origin %r", request.header("origin"))
            refusal = HttpResponse.text(403, "403 Forbidden: this Origin is not allowed")
        elif self.shutting_down:
            refusal = HttpResponse.text(503, "server shutting down")
        if refusal is not None:
            self._count(request, refusal.status)
            if "websocket.http.response" in (scope.get("extensions") or {}):
                await _send_response(send, refusal, prefix="websocket.")
            else:
                await send({"type": "websocket.close", "code": 1008})  # the server answers 403
            return
        assert bound is not None
        assert bound.deps is not None
        self._count(request, 101)
        await send({"type": "websocket.accept"})
        config = bound.config
        outbox = _Outbox(bound.embedded._bridge, send, config.send_timeout)
        socket = AsgiSocket(bound.host, receive, outbox, close_timeout=config.close_timeout)
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "?"
        conn = Connection(bound.deps, socket, peer)
        writer = asyncio.ensure_future(outbox.write())
        try:
            with contextlib.suppress(Exception):  # the runtime stopped under it: nothing to send
                await bound.embedded._call(self._run_socket, conn)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _run_socket(self, conn: Connection) -> None:
        live = _Live(conn)
        self._live.add(live)
        self.metrics.sockets_open.inc()
        self.metrics.sockets_opened.inc()
        try:
            if self.shutting_down:
                conn.request_close(GOING_AWAY, "server shutting down")
            await conn.run()
        finally:
            self._forget(live)
            self.metrics.sockets_open.dec()

    async def _http(self, bound: _Bound | None, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _send_response(send, HttpResponse.text(413))
                return
            if not message.get("more_body"):
                break
        request = _request(scope, bytes(body))
        if bound is None:
            await _send_response(send, HttpResponse.text(503, "the runtime is not running"))
            return
        started: list[bool] = []  # set once the response head went out
        served = asyncio.ensure_future(
            bound.embedded._call(self._serve, bound, request, send, started)
        )
        disconnect = asyncio.ensure_future(_disconnected(receive))
        try:  # a client that goes away ends a stream (its trio task is cancelled)
            await asyncio.wait({served, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (served, disconnect):
                task.cancel()
            outcomes = await asyncio.gather(served, disconnect, return_exceptions=True)
        failure = outcomes[0]
        if isinstance(failure, BaseException) and not started:
            if isinstance(failure, RuntimeClosedError):
                answer = HttpResponse.text(503, "server shutting down")
            elif isinstance(failure, asyncio.CancelledError):
                return  # the client went away first
            else:
                log.error("an HTTP request failed", exc_info=failure)
                answer = HttpResponse.text(500)
            self._count(request, answer.status)
            with contextlib.suppress(OSError, RuntimeError):
                await _send_response(send, answer)

    async def _serve(
        self, bound: _Bound, request: HttpRequest, send: Send, started: list[bool]
    ) -> None:
        """In trio: route the request; send the answer, or run the AG-UI stream it became."""
        answer = await self._routes.http(request)
        host, timeout = bound.host, bound.config.send_timeout
        if isinstance(answer, HttpResponse):
            self._count(request, answer.status)
            started.append(True)
            with trio.move_on_after(timeout):
                await host.run(_send_response(send, answer))
            return
        self._count(request, 200)
        live = _Live(answer)
        self._live.add(live)
        try:  # from here on the stream is discarded on every way out
            head = _headers(SSE_CONTENT_TYPE, None, answer.headers)
            started.append(True)
            with trio.fail_after(timeout):
                await host.run(
                    send({"type": "http.response.start", "status": 200, "headers": head})
                )

            async def chunk(data: bytes) -> None:
                with trio.fail_after(timeout):
                    await host.run(
                        send({"type": "http.response.body", "body": data, "more_body": True})
                    )

            if self.shutting_down:
                answer.request_close()
            if await answer.run(chunk):
                with trio.move_on_after(timeout):  # a client that stopped reading: drop it
                    await host.run(send({"type": "http.response.body", "body": b""}))
        except (OSError, RuntimeError, trio.TooSlowError):
            pass  # the client went away, or stopped reading: the connection is dropped
        finally:
            answer.discard()
            self._forget(live)

    def _count(self, request: HttpRequest, status: int) -> None:
        route = request.path if request.path in self._routes.known else "other"
        self.metrics.http_requests.labels(route, str(status)).inc()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _request(scope: Scope, body: bytes) -> HttpRequest:
    path = scope.get("path", "/")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    query = scope.get("query_string", b"")
    target = path + ("?" + query.decode("latin-1") if query else "")
    headers = tuple(
        (bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1"))
        for k, v in scope.get("headers", ())
    )
    method = scope.get("method", "GET")
    server = scope.get("server")
    local = (str(server[0]), int(server[1] or 0)) if server else None
    return HttpRequest(method=method, target=target, headers=headers, body=body, local=local)


def _headers(
    content_type: str, length: int | None, extra: Iterable[tuple[str, str]]
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", content_type.encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    seen = {b"cache-control"}
    for key, value in extra:
        name = key.lower().encode("latin-1")
        if name in seen:
            headers = [(k, v) for k, v in headers if k != name]
        headers.append((name, value.encode("latin-1")))
    return headers


async def _send_response(send: Send, response: HttpResponse, *, prefix: str = "") -> None:
    """A complete response (``prefix`` ``websocket.``: the refusal of an upgrade)."""
    kind = "websocket.http.response" if prefix else "http.response"
    await send(
        {
            "type": f"{kind}.start",
            "status": response.status,
            "headers": _headers(response.content_type, len(response.body), response.headers),
        }
    )
    await send({"type": f"{kind}.body", "body": response.body, "more_body": False})
