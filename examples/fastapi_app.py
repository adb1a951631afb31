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
behind a reverse proxy on the same host), ``NETRA_ADMIN_TOKEN`` (serves the inspector at
``/inspector`` to this credential; docs/inspector.md), ``NETRA_LOG_FORMAT`` (``text`` or ``json``:
how netra's and uvicorn's log lines are written; docs/observability.md). Development sign-in (``/dev/token``) is only served to
requests that reach a loopback address. Ctrl-C (or SIGTERM) closes every socket with 1001 and
exits.
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI, Header, HTTPException

import netra_actors as na
from netra_actors.asgi import NetraApp
from netra_actors.demo_agents import DEMO_AGENTS, demo_metadata
from netra_actors.gateway import GatewayConfig, TokenError, resolve_secret, verify_token

# netra's records (crashes with their tracebacks) next to uvicorn's, in one format
na.configure_logging("json" if os.environ.get("NETRA_LOG_FORMAT") == "json" else "text")

origins = [o.strip() for o in os.environ.get("NETRA_ALLOWED_ORIGINS", "").split(",") if o.strip()]

netra = NetraApp(
    GatewayConfig(
        secret=resolve_secret(os.environ.get("NETRA_SECRET")),
        allowed_origins=origins or None,  # None: the page's own origin
        # only ever served to requests that reach a loopback address of the server
        dev_tokens=os.environ.get("NETRA_DEV_TOKENS", "1") != "0",
        hello_timeout=float(os.environ.get("NETRA_HELLO_TIMEOUT", "10")),
        admin_token=os.environ.get("NETRA_ADMIN_TOKEN") or None,  # the inspector, /inspector
    ),
    na.RuntimeConfig(database_url=na.database_url(os.environ.get("NETRA_DB", "netra.db"))),
    agents=DEMO_AGENTS,
    metadata=[demo_metadata],
)

app = FastAPI(title="netra_actors in FastAPI", lifespan=netra.lifespan)


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
