"""netra_actors inside a FastAPI application, served by uvicorn.

Everything ``netra-actors serve`` serves — the chat page at ``/``, protocol v1 at ``/ws``,
AG-UI at ``/agui`` and ``/agui/events``, ``/healthz``, ``/metrics`` — comes from the package's
ASGI adapter (:class:`netra_actors.asgi.NetraApp`), next to the application's own routes (here
``GET /api/runs``, which uses the embedded runtime directly). Run it from the repository root::

    uvicorn examples.fastapi_app:app --port 8000             # then open http://127.0.0.1:8000/
    uvicorn examples.fastapi_app:app --port 8000 --workers 2  # two processes: one cluster

Environment: ``NETRA_SECRET`` (the token secret; default: the one ``netra-actors`` keeps in
``~/.netra-actors/secret``), ``NETRA_DB`` (a SQLAlchemy URL or a SQLite path; default
``./netra.db``), ``NETRA_ALLOWED_ORIGINS`` (comma-separated exact origins; default the page's own
origin, from the address uvicorn listens on), ``NETRA_HELLO_TIMEOUT`` (seconds a socket has to
send ``hello``; default 10), ``NETRA_DEV_TOKENS`` (``0`` turns development sign-in off, e.g.
behind a reverse proxy on the same host). Development sign-in (``/dev/token``) is only served to
requests that reach a loopback address straight (never through a proxy). Ctrl-C (or SIGTERM)
closes every socket with 1001 and exits.

Your own agents and sign-in, like ``netra-actors serve --agents/--default-agent/--auth``:
``NETRA_AGENTS`` (``MODULE:ATTRIBUTE``, comma-separated: lists of agent classes; default the
demo agents), ``NETRA_DEFAULT_AGENT``, ``NETRA_AUTH`` (``MODULE:CALLABLE``, a sign-in function,
e.g. ``examples.auth_cookie:authenticate`` or ``examples.auth_jwt:authenticate``; development
sign-in is then off unless ``NETRA_DEV_TOKENS=1``). ``GET``/``POST /login`` and
``POST /logout`` set and clear the session cookie of ``examples/auth_cookie.py`` (with
``NETRA_LOGIN_PASSWORD`` as everyone's password: replace it with your user store).
"""

from __future__ import annotations

import importlib
import os
import time
from types import ModuleType
from urllib.parse import parse_qs

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

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


@app.post("/login")
async def login(request: Request) -> RedirectResponse:
    """Check the form's name and password, set the session cookie (``examples/auth_cookie.py``),
    go to the page."""
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
async def logout() -> RedirectResponse:
    """Clear the session cookie."""
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
