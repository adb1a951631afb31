"""Pluggable sign-in: your function decides who a request is (docs/server.md, "Sign-in").

``GatewayConfig(auth=...)`` (``netra-actors serve --auth MODULE:CALLABLE``) names an
:data:`Authenticate` function. Both servers call it, through :class:`SignIn`, once per request
that needs a user — the WebSocket upgrade request of ``/ws``, every ``POST /agui`` and
``GET /agui/events`` — with a :class:`SignInRequest` (the headers and cookies). It answers:

* a user id (a ``str``), or a :class:`~._tokens.TokenClaims` when the credential expires (a
  socket or stream is then closed at ``expires_at``, as for netra's own tokens): signed in;
* ``None``: the request carries no credential of yours — netra's own tokens (``hello``'s
  ``token``, ``Authorization: Bearer``) are checked as without ``auth``;
* it raises :class:`SignInRefused`: refused (HTTP 401, WebSocket close 4401), whatever else the
  request carries.

How it runs: an ``async def`` runs on the asyncio event loop both servers run on (trio is its
guest: ``netra-actors serve`` and the ASGI adapter alike), so it may use asyncio libraries; a
plain ``def`` runs in a worker thread, so it may block (a database, a key server). Either is
bounded by ``request_timeout``; a function that fails otherwise (an exception, a bad return) is
logged with its traceback and the request answered 500 (WebSocket: 1011), never signed in.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import trio

from .._bridge import Bridge, in_worker_thread
from .._exceptions import NetraError, RuntimeClosedError
from ._http import HttpRequest
from ._tokens import TokenClaims, check_user_name

log = logging.getLogger("netra_actors.gateway")

NO_EXPIRY = math.inf
"""The ``expires_at`` of a sign-in whose function gave a bare user id."""


class SignInRefused(NetraError):
    """Raised by an :data:`Authenticate` function: the request's credential is not good
    (forged, expired, revoked). The message is logged and sent with the 401 or 4401."""


class SignInFailed(Exception):
    """The sign-in function itself failed (an exception, a timeout, a bad return): logged,
    answered 500 or 1011."""


def parse_cookies(headers: tuple[tuple[str, str], ...]) -> Mapping[str, str]:
    """The cookies of every ``Cookie`` header: ``name=value`` pairs split at ``;``; the first of
    two cookies with one name wins (browsers send the most specific first)."""
    cookies: dict[str, str] = {}
    for name, value in headers:
        if name != "cookie":
            continue
        for pair in value.split(";"):
            key, sep, val = pair.strip().partition("=")
            if sep and key and key not in cookies:
                val = val.strip()
                if len(val) >= 2 and val[0] == val[-1] == '"':
                    val = val[1:-1]
                cookies[key] = val
    return MappingProxyType(cookies)


@attrs.frozen(kw_only=True)
class SignInRequest:
    """What a sign-in function reads of a request (never its body)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    """Header names lower-cased, values as sent, in order."""
    cookies: Mapping[str, str]
    """The request's cookies by name."""

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), if present."""
        name = name.lower()
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    @property
    def bearer(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
        scheme, _, token = (self.header("authorization") or "").partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None

    @classmethod
    def of(cls, request: HttpRequest) -> SignInRequest:
        """The sign-in view of an HTTP request."""
        return cls(
            method=request.method,
            path=request.path,
            headers=request.headers,
            cookies=parse_cookies(request.headers),
        )


Authenticate = Callable[
    [SignInRequest], "str | TokenClaims | Awaitable[str | TokenClaims | None] | None"
]
"""A sign-in function: ``def f(request: SignInRequest) -> str | TokenClaims | None`` (or
``async def``); raises :class:`SignInRefused` to refuse."""


class SignIn:
    """Runs one server's sign-in function (see the module doc). From trio."""

    def __init__(self, authenticate: Authenticate, timeout: float) -> None:
        self._authenticate = authenticate
        self._timeout = timeout
        self._is_async = inspect.iscoroutinefunction(authenticate) or (
            inspect.iscoroutinefunction(getattr(authenticate, "__call__", None))  # noqa: B004
        )

    async def __call__(self, request: HttpRequest) -> TokenClaims | None:
        """The claims the function signs ``request`` in with; None: no credential of its own.
        Raises :class:`SignInRefused` or :class:`SignInFailed`."""
        view = SignInRequest.of(request)
        try:
            with trio.fail_after(self._timeout):
                answer = await self._call(view)
            return _claims(answer)
        except SignInRefused:
            raise
        except trio.TooSlowError:
            log.warning("sign-in: the function took more than %gs; refusing", self._timeout)
            raise SignInFailed("sign-in timed out") from None
        except Exception as exc:
            log.exception("sign-in: the function failed on %s %s", view.method, view.path)
            raise SignInFailed("sign-in failed") from exc

    async def _call(self, view: SignInRequest) -> object:
        if not self._is_async:
            return await in_worker_thread(self._authenticate, view)
        coro: Any = self._authenticate(view)
        try:
            bridge = Bridge.current()
        except RuntimeClosedError:  # a bare trio.run (tests): no asyncio loop to run it on
            return await coro
        return await bridge.run_on_host(coro)


def _claims(answer: object) -> TokenClaims | None:
    if answer is None:
        return None
    if isinstance(answer, TokenClaims):
        check_user_name(answer.user)
        return answer
    if isinstance(answer, str):
        return TokenClaims(user=check_user_name(answer), expires_at=NO_EXPIRY)
    raise TypeError(f"a sign-in function must return str, TokenClaims or None, not {answer!r}")
