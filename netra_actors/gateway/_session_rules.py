"""One socket's protocol rules: what ends a session, and with which close code. Pure.

The trio :class:`~._connection.Connection` drives these the way wsproto's ``WSConnection``
drives its frame protocol: it receives, asks a rule, and acts on the answer — a
:class:`Close` (with, sometimes, an ``error`` frame to send first) or the go-ahead:

* :func:`check_message` — every inbound message: text only (4400), within the size limit (1009);
* :func:`check_hello` — the first frame: a ``hello`` (4400) with a valid token (4401) — or none,
  when the upgrade request signed the socket in (:mod:`._sign_in`), but never a token of another
  user (4401) — and valid fields (an ``error`` frame, then 4400); :func:`hello_timeout` when
  none comes (4408);
* :class:`Strikes` — rate-limited messages in a row: past ``flood_limit``, 4429;
* :func:`subscription_closed` — the close code when the user's subscription ends.

No I/O and no clock: the time a token is checked at is an argument.
"""

from __future__ import annotations

import attrs

from .._exceptions import StoreError
from ._protocol import FrameError, Hello, hello_features, parse_frame
from ._protocol import check_hello as check_hello_fields
from ._tokens import TokenClaims, TokenError, verify_token

#: Close codes of protocol v1.
NORMAL = 1000
GOING_AWAY = 1001
ABNORMAL = 1006
"""Not a code anyone sends: the connection dropped (or was dropped) without a close frame."""
MESSAGE_TOO_BIG = 1009
INTERNAL = 1011
TRY_AGAIN_LATER = 1013
"""The user's session could not start because the store cannot commit (a full disk, a database
that is down): not a shutdown (1001), nor a bug in this connection (1011). Registered with IANA
as "Try Again Later" (the RFC 6455 §7.4.2 registry); clients back off before reconnecting."""
STORE_RETRY_AFTER = 5
"""Seconds a client is asked to wait (``Retry-After``) when the store is failing."""
STORE_FAILING = "the store is failing (it cannot commit); try again later"
PROTOCOL_VIOLATION = 4400
UNAUTHORIZED = 4401
HELLO_TIMEOUT = 4408
SLOW_CONSUMER = 4409
USER_ERASED = 4410
"""This user's data was erased (``erase-user``): the client drops its local state (events,
seqs, threads) and starts again without ``resume_from``."""
TOO_MANY = 4429

_SUBSCRIPTION_CLOSE = {
    "shutdown": GOING_AWAY,
    "session_failed": INTERNAL,
    "closed": NORMAL,
    "erased": USER_ERASED,
}
_CLOSE_REASONS = {
    GOING_AWAY: "server shutting down",
    USER_ERASED: "this user's data was erased: drop your local state",
}


def store_failed(exc: BaseException) -> bool:
    """Whether a refused session start is the store's failure (a :class:`StoreError`, or the
    runtime's "session stopped" caused by one): 1013 / 503 + ``Retry-After``, not 1001."""
    return isinstance(exc, StoreError) or isinstance(exc.__cause__, StoreError)


@attrs.frozen
class Close:
    """End the session with ``code``; send the ``error`` frame ``(code, message)`` first."""

    code: int
    reason: str
    error: tuple[str, str] | None = None
    token_refused: str | None = None
    """Why a token was refused (``TokenError.reason``), for the log."""


@attrs.frozen
class Session:
    """What an accepted ``hello`` opens."""

    claims: TokenClaims
    resume_from: int | None
    features: frozenset[str]


def check_message(message: str | bytes, max_bytes: int) -> Close | None:
    """A close for a binary or oversized message (the limit is in UTF-8 bytes), else None."""
    if isinstance(message, bytes):
        return Close(PROTOCOL_VIOLATION, "binary frames are not allowed")
    if len(message) * 4 > max_bytes and len(message.encode("utf-8", "surrogatepass")) > max_bytes:
        return Close(MESSAGE_TOO_BIG, f"frames are limited to {max_bytes} bytes")
    return None


def check_hello(
    message: str, secret: bytes, *, now: float, signed_in: TokenClaims | None = None
) -> Session | Close:
    """The session the first frame opens, or the close it deserves.

    ``signed_in``: who the upgrade request signed in as (the server's sign-in function), if
    anyone. Then a ``hello`` without a token opens that user's session, and one with a token
    opens it only when the token is valid and names the same user."""
    try:
        frame = parse_frame(message)
    except FrameError:
        frame = None
    if not isinstance(frame, Hello):
        return Close(PROTOCOL_VIOLATION, "the first frame must be hello")
    if signed_in is not None and frame.token is None:
        claims = signed_in
    else:
        try:
            claims = verify_token(secret, frame.token, now=now)
        except TokenError as exc:
            return Close(UNAUTHORIZED, str(exc), token_refused=exc.reason)
        if signed_in is not None and claims.user != signed_in.user:
            return Close(
                UNAUTHORIZED,
                "the token names another user than the sign-in",
                token_refused="another_user",
            )
        if signed_in is not None:  # both: the session ends with the first to expire
            claims = attrs.evolve(claims, expires_at=min(claims.expires_at, signed_in.expires_at))
    try:
        resume_from = check_hello_fields(frame)
        features = hello_features(frame)
    except FrameError as exc:
        return Close(PROTOCOL_VIOLATION, exc.message, error=(exc.code, exc.message))
    return Session(claims, resume_from, features)


def hello_timeout(timeout: float) -> Close:
    """The close of a socket that sent no ``hello`` within ``timeout`` seconds."""
    return Close(HELLO_TIMEOUT, f"no hello within {timeout:g}s")


def subscription_closed(reason: str) -> Close:
    """The close when the user's subscription ends for ``reason`` (the runtime's)."""
    code = _SUBSCRIPTION_CLOSE.get(reason, INTERNAL)
    return Close(code, _CLOSE_REASONS.get(code, ""))


class Strikes:
    """Rate-limited messages in a row; more than ``limit`` of them close the socket (4429)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def rate_limited(self) -> Close | None:
        """One more message over the rate: the close once past the limit, else None (answer
        it with ``rate_limited``)."""
        self.count += 1
        if self.count > self.limit:
            return Close(TOO_MANY, "too many messages; back off")
        return None

    def allowed(self) -> None:
        """A message within the rate: the strikes start over."""
        self.count = 0
