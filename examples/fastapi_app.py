"""netra_actors inside a FastAPI application, served by uvicorn.

Everything ``netra-actors serve`` serves — the chat page at ``/``, protocol v1 at ``/ws``,
AG-UI at ``/agui`` and ``/agui/events``, ``/healthz``, ``/metrics`` — comes from the package's
ASGI adapter (:class:`netra_actors.asgi.NetraApp`), next to the application's own routes (here
``GET /api/runs``, which uses the embedded runtime directly). Run it from the repository root::

    uvicorn examples.fastapi_app:app --port 8000             # then open http://127.0.0.1:8000/
    uvicorn examples.fastapi_app:app --port 8000 --workers 2  # two processes: one cluster

Facing clients directly (no reverse proxy in front that enforces its own limits), run it with
safe settings — ``python -m examples.fastapi_app`` does (see :data:`SAFE_UVICORN`), or::

    uvicorn examples.fastapi_app:app --port 8000 \
        --http examples.fastapi_app:HeadTimeoutH11Protocol \
        --h11-max-incomplete-event-size 16384 --timeout-keep-alive 5 --limit-concurrency 1000

uvicorn's defaults let a client hold a connection forever with a request head it never finishes
(no timer runs until the first request has arrived) and, with httptools (``--http auto`` picks
it when installed), send headers of any size. The h11 protocol refuses heads over
``--h11-max-incomplete-event-size`` bytes (431/400); :class:`HeadTimeoutH11Protocol` (uvicorn's
h11 protocol plus two timers) drops a connection whose request head has not arrived within
:data:`HEAD_TIMEOUT` seconds, or that leaves the server's output unread for :data:`WRITE_TIMEOUT`; ``--limit-concurrency`` answers 503 past that many connections.

Environment: ``NETRA_SECRET`` (the token secret; default: the one ``netra-actors`` keeps in
``~/.netra-actors/secret``), ``NETRA_DB`` (a SQLAlchemy URL or a SQLite path; default
``./netra.db``), ``NETRA_ALLOWED_ORIGINS`` (comma-separated exact origins; default the page's own
origin, from the address uvicorn listens on), ``NETRA_HELLO_TIMEOUT`` (seconds a socket has to
send ``hello``; default 10), ``NETRA_DEV_TOKENS`` (``0`` turns development sign-in off, e.g.
behind a reverse proxy on the same host), ``NETRA_ADMIN_TOKEN`` (serves the inspector at
``/inspector`` to this credential; docs/inspector.md), ``NETRA_LOG_FORMAT`` (``text`` or ``json``:
how netra's and uvicorn's log lines are written; docs/observability.md). Development sign-in
(``/dev/token``) is only served to requests that reach a loopback address straight (never through
a proxy). Ctrl-C (or SIGTERM) closes every socket with 1001 and exits.

Your own agents and sign-in, like ``netra-actors serve --agents/--default-agent/--auth``:
``NETRA_AGENTS`` (``MODULE:ATTRIBUTE``, comma-separated: lists of agent classes; default the
demo agents), ``NETRA_DEFAULT_AGENT``, ``NETRA_AUTH`` (``MODULE:CALLABLE``, a sign-in function,
e.g. ``examples.auth_cookie:authenticate`` or ``examples.auth_jwt:authenticate``; development
sign-in is then off unless ``NETRA_DEV_TOKENS=1``). ``GET``/``POST /login`` and
``POST /logout`` set and clear the session cookie of ``examples/auth_cookie.py`` (with
``NETRA_LOGIN_PASSWORD`` as everyone's password: replace it with your user store).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs

import h11
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

import netra_actors as na
from netra_actors.asgi import NetraApp
from netra_actors.demo_agents import DEMO_AGENTS, demo_metadata
from netra_actors.gateway import (
    GatewayConfig,
    TokenError,
    load_agents,
    load_sign_in,
    resolve_secret,
    verify_token,
)

# netra's records (crashes with their tracebacks) next to uvicorn's, in one format
na.configure_logging("json" if os.environ.get("NETRA_LOG_FORMAT") == "json" else "text")

auth_cookie: ModuleType = importlib.import_module("examples.auth_cookie")
"""The cookie session the login routes below set (by name: ``examples/`` is not a package)."""


def _list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


origins = _list("NETRA_ALLOWED_ORIGINS")
default_agent = os.environ.get("NETRA_DEFAULT_AGENT") or None
agents = load_agents(_list("NETRA_AGENTS"), default_agent) if _list("NETRA_AGENTS") else DEMO_AGENTS
auth = load_sign_in(os.environ["NETRA_AUTH"]) if os.environ.get("NETRA_AUTH") else None

netra = NetraApp(
    GatewayConfig(
        secret=resolve_secret(os.environ.get("NETRA_SECRET")),
        allowed_origins=origins or None,  # None: the page's own origin
        # only ever served to requests that reach a loopback address of the server, straight
        dev_tokens=os.environ.get("NETRA_DEV_TOKENS", "1" if auth is None else "0") != "0",
        hello_timeout=float(os.environ.get("NETRA_HELLO_TIMEOUT", "10")),
        admin_token=os.environ.get("NETRA_ADMIN_TOKEN") or None,  # the inspector, /inspector
    ),
    na.RuntimeConfig(database_url=na.database_url(os.environ.get("NETRA_DB", "netra.db"))),
    agents=agents,
    default_agent=default_agent,
    metadata=[demo_metadata] if agents is DEMO_AGENTS else [],
    auth=auth,
)

app = FastAPI(title="netra_actors in FastAPI", lifespan=netra.lifespan)

_LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in</title>
</head><body><h1>Sign in</h1><form method="post" action="/login">
<label>Name <input name="user" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required>
</label><button type="submit">Sign in</button></form></body></html>"""


@app.get("/login", response_class=HTMLResponse)
async def login_page() -> str:
    """The example's login form (it posts to ``POST /login``)."""
    return _LOGIN_PAGE


def _refuse_other_origins(request: Request) -> None:
    """Login and logout CSRF: a browser sends ``Origin`` with every cross-site ``POST``; only the
    page's own origin (or ``NETRA_ALLOWED_ORIGINS``) may sign someone in or out. A request
    without ``Origin`` is not a browser's cross-site one (curl, a script): it passes."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    allowed = set(origins) or {f"{request.url.scheme}://{request.headers.get('host', '')}"}
    if origin not in allowed:
        raise HTTPException(status_code=403, detail="this Origin is not allowed")


@app.post("/login")
async def login(request: Request) -> RedirectResponse:
    """Check the form's name and password, set the session cookie (``examples/auth_cookie.py``),
    go to the page."""
    _refuse_other_origins(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    user, password = form.get("user", [""])[0], form.get("password", [""])[0]
    if len(user) > 64 or not user.isprintable():
        raise HTTPException(status_code=400, detail="a name is 1 to 64 printable characters")
    if not auth_cookie.check_password(user, password):
        raise HTTPException(status_code=401, detail="wrong name or password")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        auth_cookie.COOKIE_NAME,
        auth_cookie.session_cookie(user),
        max_age=int(auth_cookie.SESSION_SECONDS),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@app.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    """Clear the session cookie."""
    _refuse_other_origins(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth_cookie.COOKIE_NAME)
    return response


@app.get("/api/runs")
async def recent_runs(authorization: str = Header(default="")) -> dict[str, object]:
    """The caller's recent runs: the application's own endpoint on the embedded runtime."""
    try:
        token = authorization.removeprefix("Bearer ")
        user = verify_token(netra.config.secret, token, now=time.time()).user
    except TokenError as exc:
        raise HTTPException(status_code=401, detail=str(exc)) from None
    snapshot = await netra.embedded.get_runs(user, limit=10)
    return {"head_seq": snapshot.head_seq, "runs": [run.to_wire() for run in snapshot.runs]}


app.mount("/", netra)  # last: the application's own routes come first


HEAD_TIMEOUT = 10.0
"""Seconds a connection has to send a complete request head (the first one, and each next one
on a kept-alive connection)."""


WRITE_TIMEOUT = 10.0
"""Seconds a client may leave the server's writes unread (an SSE stream it stopped reading)."""


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request head (slow-drip protection) and
    for a stalled write: a client that has not taken the server's buffered output (an AG-UI
    stream it stopped reading) within :data:`WRITE_TIMEOUT` is dropped. (The adapter gives up on
    such a stream at its send timeout, but uvicorn's ``transport.close()`` waits for the unread
    buffer to drain: without this timer the connection and its buffers are held forever.)"""

    _head_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None
    _armed_cycle: object = None
    """The request cycle when the timer was armed: a new cycle means a new head arrived."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and self.cycle is not self._armed_cycle:
            self._head_timer.cancel()  # the head arrived in time
            self._head_timer = None

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        if self._head_timer is not None:  # the head arrived: the WebSocket has its own timers
            self._head_timer.cancel()
            self._head_timer = None
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()  # the next request's head has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._write_timer = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(WRITE_TIMEOUT, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:  # the client reads: the deadline starts over
            self._write_timer.cancel()
            self._write_timer = None

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._armed_cycle = self.cycle
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


SAFE_UVICORN: dict[str, Any] = {
    "http": HeadTimeoutH11Protocol,  # h11 (bounded heads) + a head deadline
    "h11_max_incomplete_event_size": 16 * 1024,  # request line + headers: larger is refused
    "timeout_keep_alive": 5,  # an idle kept-alive connection is closed after 5 s
    "limit_concurrency": 1000,  # connections + tasks; past it, new requests get 503
}
"""The settings ``python -m examples.fastapi_app`` runs uvicorn with."""


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        "examples.fastapi_app:app",
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        **SAFE_UVICORN,
    )
