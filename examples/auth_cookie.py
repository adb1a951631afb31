"""Sign-in with a signed cookie session: your login route sets it, netra reads it.

The cookie ``netra_session`` holds ``<payload>.<signature>``: the payload is base64url JSON
``{"sub": USER, "exp": EPOCH_SECONDS}``, the signature HMAC-SHA256 of it under
``NETRA_COOKIE_SECRET`` (else the netra secret) — the standard library only. ``examples/
fastapi_app.py`` has the login route (``GET``/``POST /login``, ``POST /logout``) that sets it::

    NETRA_AUTH=examples.auth_cookie:authenticate NETRA_LOGIN_PASSWORD=... \\
        uvicorn examples.fastapi_app:app --port 8000       # open http://127.0.0.1:8000/login

Then the page, its WebSocket (the cookie rides on the upgrade request: ``hello`` needs no
token) and AG-UI requests all sign in with the cookie alone. It is ``HttpOnly`` (scripts cannot
read it) and ``SameSite=Lax``; netra's Origin allowlist is what keeps other sites' pages from
using it (a browser always sends ``Origin`` on a WebSocket and on a cross-site ``POST``); the
login and logout routes refuse a foreign ``Origin`` too (login CSRF).

A request without the cookie gets ``None`` (netra's own tokens are then checked); one with a
cookie that does not verify — forged, expired, malformed — is refused (401 / close 4401).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time

from netra_actors.gateway import SignInRefused, SignInRequest, TokenClaims, resolve_secret

COOKIE_NAME = "netra_session"
SESSION_SECONDS = 8 * 3600.0


def _secret() -> bytes:
    own = os.environ.get("NETRA_COOKIE_SECRET")
    return own.encode() if own else resolve_secret(os.environ.get("NETRA_SECRET"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sign(payload: str) -> str:
    return _b64(hmac.new(_secret(), payload.encode("ascii"), hashlib.sha256).digest())


def session_cookie(user: str, ttl: float = SESSION_SECONDS, *, now: float | None = None) -> str:
    """The cookie value that signs ``user`` in for ``ttl`` seconds."""
    expires = (time.time() if now is None else now) + ttl
    payload = _b64(json.dumps({"sub": user, "exp": round(expires)}).encode())
    return f"{payload}.{_sign(payload)}"


def check_password(user: str, password: str) -> bool:
    """The example's user store: one password for everyone, ``NETRA_LOGIN_PASSWORD`` (unset: no
    one signs in). Replace it with yours."""
    expected = os.environ.get("NETRA_LOGIN_PASSWORD", "")
    return bool(expected and user) and hmac.compare_digest(password.encode(), expected.encode())


def authenticate(request: SignInRequest) -> TokenClaims | None:
    """The user of a valid session cookie; None without one."""
    value = request.cookies.get(COOKIE_NAME)
    if not value:
        return None
    payload, _, signature = value.partition(".")
    if not value.isascii() or not hmac.compare_digest(signature, _sign(payload)):
        raise SignInRefused("the session cookie is not valid; sign in again")
    try:
        session = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        user, expires = session["sub"], float(session["exp"])
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise SignInRefused("the session cookie is malformed; sign in again") from None
    if not isinstance(user, str) or time.time() >= expires:
        raise SignInRefused("the session has expired; sign in again")
    return TokenClaims(user=user, expires_at=expires)
