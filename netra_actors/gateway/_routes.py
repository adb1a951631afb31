"""The HTTP routes: the page, ``/agents`` (what the page offers), ``/healthz``, ``/metrics``,
``/dev/token``, AG-UI (``/agui``,
``/agui/events``, with CORS for allowed origins), and the checks an upgrade request to ``/ws``
must pass (path, Origin allowlist, handshake headers).

Shared by the trio gateway and the ASGI adapter: both serve them over one
:class:`~._state.ServerState`, which is this module's :class:`GatewayState`."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Protocol

import attrs
import orjson
import trio

from .._runtime import Runtime
from ._agui_routes import AGUI_EVENTS_PATH, AGUI_PATH, AguiRoutes
from ._agui_stream import SseStream
from ._config import GatewayConfig
from ._http import HttpRequest, HttpResponse, json_response
from ._inspector import INSPECTOR_PATH, inspector_http, is_inspector_path
from ._metrics import CONTENT_TYPE, GatewayMetrics
from ._protocol import PROTOCOL_VERSION
from ._session_rules import STORE_RETRY_AFTER
from ._tokens import check_user_name, mint_token

log = logging.getLogger("netra_actors.gateway")

PAGE = Path(__file__).resolve().parent.parent / "_static" / "index.html"
"""The packaged chat page."""

WS_PATH = "/ws"
AGENTS_PATH = "/agents"
HEALTH_TIMEOUT = 2.0

_PLACEHOLDER = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>netra-actors</title>
<link rel="icon" href="data:,"></head>
<body><h1>netra-actors</h1><p>The chat page is not installed. The WebSocket endpoint is
<code>/ws</code>; see docs/protocol.md.</p></body></html>
"""

_FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<circle cx="8" cy="8" r="7" fill="#3b6ea5"/></svg>'
)


class GatewayState(Protocol):
    """What the routes read of their server: :class:`~._state.ServerState` (structurally: this
    module does not import the state, which holds the routes)."""

    @property
    def config(self) -> GatewayConfig: ...

    @property
    def runtime(self) -> Runtime | None:
        """None in echo mode."""

    @property
    def metrics(self) -> GatewayMetrics: ...

    def origin_allowed(self, request: HttpRequest) -> bool:
        """The Origin rule of :mod:`._trust`."""
        ...

    def dev_tokens_for(self, request: HttpRequest) -> bool:
        """The development sign-in rule of :mod:`._trust`."""
        ...

    @property
    def started_at(self) -> float: ...

    @property
    def shutting_down(self) -> bool: ...

    @property
    def open_sockets(self) -> int: ...

    @property
    def agui(self) -> AguiRoutes | None:
        """None in echo mode."""


_CORS_PREFLIGHT = (
    ("access-control-allow-methods", "GET, POST, OPTIONS"),
    ("access-control-allow-headers", "authorization, content-type, last-event-id"),
    ("access-control-max-age", "600"),
)


class Routes:
    """HTTP answers of one gateway."""

    known = frozenset(
        {"/", "/index.html", "/healthz", "/metrics", "/dev/token", WS_PATH, AGUI_PATH}
        | {AGUI_EVENTS_PATH, INSPECTOR_PATH, AGENTS_PATH}
    )

    def __init__(self, gateway: GatewayState) -> None:
        self._gateway = gateway

    # -- WebSocket upgrade checks -----------------------------------------------------------

    def check_upgrade(self, request: HttpRequest) -> HttpResponse | None:
        """A response refusing the upgrade, or None if it may proceed."""
        if request.path != WS_PATH:
            return HttpResponse.text(404)
        if request.method != "GET":
            return HttpResponse.text(405)
        if not self._gateway.origin_allowed(request):
            log.info("refused a WebSocket from Origin %r", request.header("origin"))
            return HttpResponse.text(403, "403 Forbidden: this Origin is not allowed")
        if request.header("sec-websocket-version") != "13":
            return HttpResponse(
                status=426,
                body=b"426 Upgrade Required: WebSocket version 13\n",
                headers=(("sec-websocket-version", "13"),),
            )
        if (
            not request.header("sec-websocket-key")
            or "upgrade" not in (request.header("connection") or "").lower()
        ):
            return HttpResponse.text(400, "400 Bad Request: not a valid WebSocket handshake")
        return None

    # -- plain HTTP -------------------------------------------------------------------------

    async def http(self, request: HttpRequest) -> HttpResponse | SseStream:
        """Route a plain HTTP request (AG-UI requests may become an :class:`SseStream`)."""
        path, method = request.path, request.method
        if path in (AGUI_PATH, AGUI_EVENTS_PATH):
            return await self._agui(request)
        if path in ("/", "/index.html"):
            return await self._page() if method == "GET" else _not_allowed("GET")
        if path == "/healthz":
            return await self._health(request) if method == "GET" else _not_allowed("GET")
        if path == "/metrics":
            return self._metrics() if method == "GET" else _not_allowed("GET")
        if path == AGENTS_PATH:
            return self._agents(request) if method == "GET" else _not_allowed("GET")
        if path == "/favicon.ico" and method == "GET":
            return HttpResponse(status=200, body=_FAVICON, content_type="image/svg+xml")
        if path == "/dev/token" and self._gateway.dev_tokens_for(request):
            return self._dev_token(request) if method == "POST" else _not_allowed("POST")
        if is_inspector_path(path):
            gateway = self._gateway
            return await inspector_http(request, gateway.config.admin_token, gateway.runtime)
        if path == WS_PATH:
            return HttpResponse(
                status=426,
                body=b"426 Upgrade Required: /ws is a WebSocket endpoint\n",
                headers=(("upgrade", "websocket"),),
            )
        return HttpResponse.text(404)

    async def _agui(self, request: HttpRequest) -> HttpResponse | SseStream:
        agui, path, method = self._gateway.agui, request.path, request.method
        origin = request.header("origin")
        if agui is None:
            return HttpResponse.text(404)
        if not self._gateway.origin_allowed(request):
            log.info("refused an AG-UI request from Origin %r", origin)
            return json_response(403, orjson.dumps({"error": "this Origin is not allowed"}))
        cors: tuple[tuple[str, str], ...] = ()
        if origin is not None:
            cors = (("access-control-allow-origin", origin), ("vary", "origin"))
        expected = "POST" if path == AGUI_PATH else "GET"
        if method == "OPTIONS":
            return HttpResponse(status=204, headers=cors + _CORS_PREFLIGHT)
        if method != expected:
            return _not_allowed(expected)
        if self._gateway.shutting_down:
            return json_response(503, orjson.dumps({"error": "server shutting down"}))
        answer = await (agui.post(request) if path == AGUI_PATH else agui.events(request))
        if isinstance(answer, SseStream):
            answer.cors = cors
        elif cors:
            answer = attrs.evolve(answer, headers=answer.headers + cors)
        return answer

    async def _page(self) -> HttpResponse:
        page = self._gateway.config.page or PAGE
        try:
            body = await trio.Path(page).read_bytes()
        except OSError:
            body = _PLACEHOLDER
        return HttpResponse(status=200, body=body, content_type="text/html; charset=utf-8")

    async def _health(self, request: HttpRequest) -> HttpResponse:
        gateway = self._gateway
        doc: dict[str, object] = {
            "protocol": PROTOCOL_VERSION,
            "open_sockets": gateway.open_sockets,
            "uptime_seconds": round(time.time() - gateway.started_at, 3),
            "shutting_down": gateway.shutting_down,
        }
        ok = not gateway.shutting_down
        runtime = gateway.runtime
        if runtime is None:
            doc["mode"] = "echo"
        else:
            store_ok, store_error = True, None
            try:
                with trio.fail_after(HEALTH_TIMEOUT):
                    await runtime.check()
            except Exception as exc:
                store_ok, store_error = False, f"{type(exc).__name__}: {exc}"[:200]
            stats = runtime.statistics()
            doc.update(
                store="ok" if store_ok else "error",
                store_ok=store_ok,
                active_sessions=stats.active_sessions,
                live_runs=stats.live_runs,
                subscriptions=stats.subscriptions,
                events_committed=stats.store.events_committed,
                dev_tokens=gateway.dev_tokens_for(request),
            )
            if stats.node is not None:  # a cluster member (the SQL store holds leases)
                doc.update(
                    node=stats.node,
                    owned_users=stats.owned_users,
                    followed_users=stats.followed_users,
                    leases_held=stats.store.leases_held,
                    lease_renewals_failing=stats.store.lease_renewals_failing,
                )
            failing = stats.store.commits_failing
            if failing:  # it answers reads, but cannot commit: no session can start
                doc["commits_failing"] = failing
                store_ok, store_error = False, store_error or stats.store.last_commit_error
                doc.update(store="error", store_ok=False)
            if store_error is not None:
                doc["store_error"] = store_error
            ok = ok and store_ok
        doc = {"status": "ok" if ok else "unavailable", **doc}
        retry = () if ok else (("retry-after", str(STORE_RETRY_AFTER)),)
        return json_response(200 if ok else 503, orjson.dumps(doc), retry)

    def _agents(self, request: HttpRequest) -> HttpResponse:
        """The agents served (the page builds its menu from them) and how the page signs in."""
        runtime = self._gateway.runtime
        if runtime is None:
            return HttpResponse.text(404)
        agents: list[dict[str, object]] = []
        for name in runtime.agents:
            cls = runtime.agents.get(name)
            assert cls is not None
            agent: dict[str, object] = {"name": name, "description": cls.description}
            if cls.example_input is not None:
                try:
                    orjson.dumps(cls.example_input)
                    agent["example_input"] = cls.example_input
                except TypeError:  # not a JSON value: the page offers none
                    log.warning("agent %r: example_input is not a JSON value", name)
            agents.append(agent)
        doc = {
            "default": runtime.agents.default,
            "agents": agents,
            "sign_in": "app" if self._gateway.config.auth is not None else "token",
            "dev_tokens": self._gateway.dev_tokens_for(request),
        }
        return json_response(200, orjson.dumps(doc))

    def _metrics(self) -> HttpResponse:
        return HttpResponse(
            status=200, body=self._gateway.metrics.render(), content_type=CONTENT_TYPE
        )

    def _dev_token(self, request: HttpRequest) -> HttpResponse:
        if not self._gateway.origin_allowed(request):
            return json_response(403, orjson.dumps({"error": "this Origin is not allowed"}))
        try:
            body = orjson.loads(request.body)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")  # noqa: TRY004
            user = check_user_name(body.get("user"))
        except (orjson.JSONDecodeError, ValueError) as exc:
            message = (
                "the body must be JSON" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
            )
            return json_response(400, orjson.dumps({"error": message}))
        config = self._gateway.config
        now = time.time()
        token = mint_token(config.secret, user, config.dev_token_ttl, now=now)
        log.info("development sign-in: minted a token for %r", user)
        return json_response(
            200,
            orjson.dumps({"token": token, "user": user, "expires_at": now + config.dev_token_ttl}),
        )


def _not_allowed(allow: str) -> HttpResponse:
    return HttpResponse(status=405, body=b"405 Method Not Allowed\n", headers=(("allow", allow),))
