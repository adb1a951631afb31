"""The ASGI adapter: :class:`NetraApp`, what ``netra-actors serve`` serves, from any ASGI server.

::

    netra = NetraApp(GatewayConfig(secret=...), runtime_config, agents=[...])
    app = FastAPI(lifespan=netra.lifespan)      # the runtime starts and stops with the app
    app.mount("/", netra)                        # the page, /ws, /agui, /healthz, /metrics

This module owns the application's life cycle: the lifespan runs the runtime as a trio guest
of the server's asyncio loop (:func:`netra_actors.embed`) with a :class:`~._state.ServerState`
— the very state the trio gateway serves with — and hands each request to the HTTP bridge
(:mod:`._asgi_http`) or the WebSocket side (:mod:`._asgi_socket`).

Shutdown: on SIGINT/SIGTERM (the adapter chains to the server's own handler) the state's
shutdown closes every socket with 1001 and ends every AG-UI stream, so the server's graceful
shutdown does not wait for them; at lifespan exit the state drains, then the runtime drains (live
runs get ``shutdown_timeout`` to finish) and stops.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterable
from types import FrameType
from typing import Any

import attrs
from sqlalchemy import MetaData

from .._agent import AgentBase, AgentRegistry
from .._config import RuntimeConfig
from .._embed import EmbeddedRuntime, embed
from .._exceptions import RuntimeClosedError
from ._asgi_http import Receive, Running, Scope, Send, serve_http
from ._asgi_socket import serve_websocket
from ._config import GatewayConfig
from ._metrics import GatewayMetrics
from ._sign_in import Authenticate
from ._state import ServerState

log = logging.getLogger("netra_actors.gateway")


class NetraApp:
    """An ASGI application serving netra's page, ``/ws`` (protocol v1), AG-UI (``/agui``,
    ``/agui/events``), ``/healthz``, ``/metrics`` and development sign-in (``/dev/token``, only
    when ``gateway.dev_tokens`` and only to requests that reach a loopback address).

    ``agents`` are the agent classes served (the page offers them, ``GET /agents`` lists them),
    ``default_agent`` the one a ``say`` without ``agent`` runs (default: the first); ``auth``
    your sign-in function (:class:`~netra_actors.gateway.SignInRequest`; the same as
    ``GatewayConfig(auth=...)``).

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
        auth: Authenticate | None = None,
        handle_signals: bool = True,
    ) -> None:
        if auth is not None:
            gateway = attrs.evolve(gateway, auth=auth)
        self.config = gateway
        """The gateway configuration (``config.secret`` verifies tokens)."""
        self.runtime_config = runtime_config
        self._agents = list(agents)
        AgentRegistry(self._agents, default=default_agent)  # a bad list fails here, not later
        self._default_agent = default_agent
        self._metadata = list(metadata)
        self._handle_signals = handle_signals
        self._running: Running | None = None

    @property
    def embedded(self) -> EmbeddedRuntime:
        """The runtime, for the application's own endpoints (asyncio coroutines)."""
        if self._running is None:
            raise RuntimeError("the netra runtime is not running (is the lifespan set up?)")
        return self._running.embedded

    @property
    def state(self) -> ServerState | None:
        """What the adapter serves with while the lifespan runs (None otherwise)."""
        return self._running.state if self._running is not None else None

    @property
    def metrics(self) -> GatewayMetrics | None:
        """The metrics of the running lifespan (``/metrics``)."""
        return self._running.state.metrics if self._running is not None else None

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
            # a lifespan may run again (tests): a fresh state each time
            running = Running(ServerState(self.config, embedded._runtime), embedded)
            self._running = running
            restore = self._chain_signals(running) if self._handle_signals else None
            try:
                yield
            finally:
                if restore is not None:
                    restore()
                with contextlib.suppress(RuntimeClosedError):  # the runtime already stopped
                    await embedded._call(running.state.drain)
                    # live runs may reach their end (or next commit) within the shutdown timeout
                    await embedded.drain(self.config.shutdown_timeout)
                self._running = None

    def begin_shutdown(self) -> None:
        """Close every WebSocket with 1001 and end every AG-UI stream (from asyncio)."""
        running = self._running
        if running is not None:
            running.embedded._bridge.to_trio(running.state.begin_shutdown)

    def _chain_signals(self, running: Running) -> Callable[[], None] | None:
        """On SIGINT/SIGTERM, close every socket and stream, then call the server's handler."""
        bridge = running.embedded._bridge
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

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._serve_lifespan(receive, send)
        elif kind == "websocket":
            await serve_websocket(self._running, scope, receive, send)
        elif kind == "http":
            await serve_http(self._running, scope, receive, send)

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
