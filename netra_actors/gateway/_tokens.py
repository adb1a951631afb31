"""Signed, expiring session tokens (HMAC-SHA256). Pure: time is an argument.

A token is ``<payload>.<signature>``, both base64url without padding — exactly as minted: any
other spelling of the same bytes (padding, the standard alphabet, stray low bits) is refused, so
one token is one string. The payload is the JSON
object ``{"v": 1, "sub": USER, "exp": EPOCH_SECONDS}``; the signature is HMAC-SHA256 over the
ASCII payload part, keyed with the server secret. Tokens never go in a URL: the client sends one
in its ``hello`` frame.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math

import attrs
import orjson

from .._exceptions import NetraError

TOKEN_VERSION = 1
MAX_TOKEN_LENGTH = 2048
"""Longer strings are refused before any decoding."""
MAX_USER_LENGTH = 64
"""User names in tokens are 1..64 printable characters."""
MIN_SECRET_BYTES = 1
"""Any non-empty secret is accepted (tests and demos use short ones)..."""
RECOMMENDED_SECRET_BYTES = 16
"""... but anything shorter than this is easy to guess; the CLI warns about it."""


class TokenError(NetraError):
    """A token was refused. ``reason`` is ``malformed``, ``bad_signature`` or ``expired``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@attrs.frozen(kw_only=True)
class TokenClaims:
    """What a valid token says."""

    user: str
    """The user the token was issued for."""
    expires_at: float
    """Expiry, seconds since the epoch."""


def check_user_name(user: object) -> str:
    """Return ``user`` if it is a usable user name, else raise ``ValueError`` saying why."""
    if not isinstance(user, str):
        raise ValueError("the user name must be a string")  # noqa: TRY004
    if not user or not user.strip():
        raise ValueError("the user name must not be empty")
    if len(user) > MAX_USER_LENGTH:
        raise ValueError(f"the user name must be at most {MAX_USER_LENGTH} characters")
    if not user.isprintable():
        raise ValueError("the user name must contain printable characters only")
    return user


def check_secret(secret: bytes) -> bytes:
    """Return ``secret`` if it is long enough to sign tokens, else raise ``ValueError``."""
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError("the token secret must not be empty")
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload_part: str) -> bytes:
    return hmac.new(secret, payload_part.encode("ascii"), hashlib.sha256).digest()


def mint_token(secret: bytes, user: str, ttl: float, *, now: float) -> str:
    """A token for ``user`` that expires ``ttl`` seconds after ``now`` (epoch seconds)."""
    check_secret(secret)
    check_user_name(user)
    if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
    payload = {"v": TOKEN_VERSION, "sub": user, "exp": round(now + ttl, 3)}
    payload_part = _b64(orjson.dumps(payload))
    return f"{payload_part}.{_b64(_sign(secret, payload_part))}"


def verify_token(secret: bytes, token: object, *, now: float) -> TokenClaims:
    """The claims of a valid, unexpired token; :class:`TokenError` otherwise."""
    if not isinstance(token, str) or not token:
        raise TokenError("malformed", "a token is required")
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1 or not token.isascii():
        raise TokenError("malformed", "the token is malformed")
    payload_part, signature_part = token.split(".")
    try:
        signature = _unb64(signature_part)
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "the token is malformed") from None
    if _b64(signature) != signature_part:
        # padded, standard-alphabet or stray-bit spellings of the same bytes: one token has one
        # string (the payload part is what the signature covers, so it is canonical by then)
        raise TokenError("malformed", "the token is not in its canonical encoding")
    if not hmac.compare_digest(signature, _sign(secret, payload_part)):
        raise TokenError("bad_signature", "the token's signature is not valid")
    try:
        payload = orjson.loads(_unb64(payload_part))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "the token is malformed") from None
    if not isinstance(payload, dict) or payload.get("v") != TOKEN_VERSION:
        raise TokenError("malformed", "the token's version is not supported")
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise TokenError("malformed", "the token has no valid expiry")
    try:
        user = check_user_name(payload.get("sub"))
    except ValueError:
        raise TokenError("malformed", "the token names no valid user") from None
    if now >= exp:
        raise TokenError("expired", "the token has expired; get a new one")
    return TokenClaims(user=user, expires_at=float(exp))
