"""The inspector's HTTP answers: the admin page and its read-only JSON (``docs/inspector.md``).

``GET /inspector`` serves the page; ``GET /inspector/api/overview`` (this node, the cluster's
nodes and leases, the users), ``/inspector/api/runs?user=U`` (a user's recent runs) and
``/inspector/api/run?user=U&run=R`` (one run's attempts as a timeline, and its events) answer
only a request carrying ``Authorization: Bearer <admin token>`` (compared in constant time; a
user's token is never enough). Without an admin token configured, every path is 404.

:func:`inspector_http` is the whole of it: a request, the configured token and the runtime in,
a response out. Both servers call it from their shared routes (``_routes.py``).
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import attrs
import orjson
import trio

from .._store._inspect import AdminReads
from .._timeline import runs_json, timeline
from ._http import HttpRequest, HttpResponse, json_response

if TYPE_CHECKING:
    from .._runtime import Runtime

log = logging.getLogger("netra_actors.gateway")

INSPECTOR_PATH = "/inspector"
API_PREFIX = "/inspector/api/"
PAGE = Path(__file__).resolve().parent.parent / "_static" / "inspector.html"

USERS_LIMIT = 100
LEASES_LIMIT = 200
RUNS_LIMIT = 50
EVENTS_LIMIT = 2000
MAX_PARAM = 256
"""Longest ``user`` / ``run`` / ``q`` parameter accepted (longer: 400)."""

_PAGE_HEADERS = (
    ("cache-control", "no-store"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; frame-ancestors 'none'",
    ),
)
_API_HEADERS = (("cache-control", "no-store"),)
_CHALLENGE = (("www-authenticate", 'Bearer realm="netra inspector"'),)


def is_inspector_path(path: str) -> bool:
    """True for the page and its API."""
    return path == INSPECTOR_PATH or path.startswith(API_PREFIX)


def authorized(request: HttpRequest, admin_token: str) -> bool:
    """True if the request carries exactly one ``Authorization: Bearer <admin_token>``."""
    if request.header_count("authorization") != 1:
        return False
    scheme, _, credential = (request.header("authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credential.strip().encode(), admin_token.encode())


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return json_response(status, orjson.dumps({"error": message}), _API_HEADERS + headers)


def _ok(doc: object) -> HttpResponse:
    return json_response(200, orjson.dumps(doc), _API_HEADERS)


async def inspector_http(
    request: HttpRequest, admin_token: str | None, runtime: Runtime | None
) -> HttpResponse:
    """Answer a request to :data:`INSPECTOR_PATH` or under :data:`API_PREFIX`."""
    if admin_token is None or runtime is None:
        return HttpResponse.text(404)
    if request.method != "GET":
        return HttpResponse(
            status=405, body=b"405 Method Not Allowed\n", headers=(("allow", "GET"),)
        )
    if request.path == INSPECTOR_PATH:
        body = await trio.Path(PAGE).read_bytes()
        return HttpResponse(
            status=200, body=body, content_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
        )
    if not authorized(request, admin_token):
        return _error(401, "the inspector needs the admin token", _CHALLENGE)
    store = runtime.store
    if not isinstance(store, AdminReads):
        return _error(501, "this store does not support the inspector")
    query = parse_qs(request.target.partition("?")[2], max_num_fields=8)
    params = {key: values[-1] for key, values in query.items()}
    if any(len(value) > MAX_PARAM for value in params.values()):
        return _error(400, f"a parameter is longer than {MAX_PARAM} characters")
    try:
        return await _api(request.path[len(API_PREFIX) :], params, runtime, store)
    except Exception as exc:  # a read failed: say so, keep serving
        log.warning("inspector: a store read failed: %s: %s", type(exc).__name__, exc)
        return _error(503, "the store failed to answer")


async def _api(
    name: str, params: dict[str, str], runtime: Runtime, store: AdminReads
) -> HttpResponse:
    if name == "overview":
        return _ok(await _overview(params.get("q", ""), runtime, store))
    user = params.get("user")
    if not user:
        return _error(400, "the user parameter is required")
    if name == "runs":
        runs = await runtime.store.list_runs(user, RUNS_LIMIT)
        return _ok({"user_id": user, "runs": runs_json(runs), "limit": RUNS_LIMIT})
    if name == "run":
        run_id = params.get("run")
        if not run_id:
            return _error(400, "the run parameter is required")
        run = await runtime.store.get_run(user, run_id)
        if run is None:
            return _error(404, "no such run for this user")
        events = await store.admin_run_events(user, run_id, EVENTS_LIMIT + 1)
        truncated = len(events) > EVENTS_LIMIT
        return _ok(timeline(run, events[:EVENTS_LIMIT], truncated=truncated))
    return _error(404, "no such inspector endpoint")


async def _overview(prefix: str, runtime: Runtime, store: AdminReads) -> dict[str, object]:
    stats = runtime.statistics()
    cluster = await store.admin_cluster(LEASES_LIMIT)
    users = await store.admin_users(prefix, USERS_LIMIT)
    return {
        "this_node": {
            "node": getattr(runtime.store, "node", None),
            "clustered": stats.node is not None,
            "active_sessions": stats.active_sessions,
            "live_runs": stats.live_runs,
            "subscriptions": stats.subscriptions,
            "owned_users": stats.owned_users,
            "events_committed": stats.store.events_committed,
            "lease_ttl": getattr(runtime.store, "lease_ttl", None),
        },
        "db_now": cluster.now,
        "nodes": [_attrs(n) for n in cluster.nodes],
        "leases": [_attrs(lease) for lease in cluster.leases],
        "users": [_attrs(u) for u in users],
        "limits": {"users": USERS_LIMIT, "leases": LEASES_LIMIT},
    }


def _attrs(value: object) -> dict[str, object]:
    return attrs.asdict(value)  # type: ignore[arg-type]
