"""Sign-in with a JWT: ``Authorization: Bearer <JWT>`` (HS256, a shared secret), ``sub`` is the user.

Your identity provider (or your own login service) issues the JWT; netra only verifies it.
Serve with it::

    pip install 'netra-actors[auth]'                      # PyJWT
    NETRA_JWT_SECRET=... netra-actors serve --auth examples.auth_jwt:authenticate
    NETRA_JWT_SECRET=... NETRA_AUTH=examples.auth_jwt:authenticate \\
        uvicorn examples.fastapi_app:app                 # the same under uvicorn

Clients send the JWT as ``Authorization: Bearer <JWT>``: AG-UI clients on every request, and
WebSocket clients on the upgrade request (then ``hello`` needs no ``token``). A browser cannot
put a header on a WebSocket upgrade; a page signs in with a cookie instead
(``examples/auth_cookie.py``).

A request without a Bearer header gets ``None`` (netra's own tokens are then checked, e.g. from
``netra-actors token``); one with a JWT that does not verify — forged, expired, no ``sub`` — is
refused (HTTP 401, WebSocket close 4401). The socket or stream of a valid JWT ends when it
expires (its ``exp``).
"""

from __future__ import annotations

import os

import jwt

from netra_actors.gateway import SignInRefused, SignInRequest, TokenClaims

AUDIENCE = os.environ.get("NETRA_JWT_AUDIENCE") or None
"""Checked when set (the ``aud`` your issuer puts in its tokens)."""


def _secret() -> str:
    secret = os.environ.get("NETRA_JWT_SECRET", "")
    if not secret:
        raise SignInRefused("the server has no NETRA_JWT_SECRET to verify JWTs with")
    return secret


def authenticate(request: SignInRequest) -> TokenClaims | None:
    """The user (``sub``) of a valid ``Authorization: Bearer <JWT>``; None without one."""
    token = request.bearer
    if token is None or token.count(".") != 2:  # no JWT (a netra token has one dot)
        return None
    try:
        claims = jwt.decode(
            token,
            _secret(),
            algorithms=["HS256"],  # never "none", never what the token says
            audience=AUDIENCE,
            options={"require": ["sub", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise SignInRefused("the JWT has expired") from None
    except jwt.InvalidTokenError as exc:
        raise SignInRefused(f"the JWT is not valid: {exc}") from None
    user = claims["sub"]
    # netra's user names: 1-64 printable characters, not all spaces (else the sign-in "fails")
    if not isinstance(user, str) or not 0 < len(user) <= 64 or not user.isprintable():
        raise SignInRefused("the JWT's sub is not a user id")
    if not user.strip():
        raise SignInRefused("the JWT's sub is not a user id")
    return TokenClaims(user=user, expires_at=float(claims["exp"]))
