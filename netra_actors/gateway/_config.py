"""The gateway's configuration: one frozen value, validated when it is built."""

from __future__ import annotations

from pathlib import Path

import attrs

from .._exceptions import ConfigError
from .._validate import non_negative_int, positive, positive_int
from ._limits import RateLimit
from ._sign_in import Authenticate
from ._tokens import MIN_SECRET_BYTES
from ._trust import is_loopback_host

DEFAULT_PORT = 8765


def _port(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"port must be an integer in 0..65535, got {value!r}")


def _secret(_inst: object, _attr: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) < MIN_SECRET_BYTES:
        raise ConfigError(f"secret must be bytes, at least {MIN_SECRET_BYTES} long")


def _origins(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigError("allowed_origins must be a collection of origins, not one string")
    origins = frozenset(str(o) for o in value)  # type: ignore[attr-defined]
    for origin in origins:
        if "://" not in origin or origin.endswith("/"):
            raise ConfigError(
                f"origin {origin!r} must look like 'http://host:port' (scheme, host, optional "
                "port, no path or trailing slash)"
            )
    return origins


MIN_ADMIN_TOKEN_CHARS = 16


def _admin_token(_inst: object, _attr: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (
        not isinstance(value, str) or len(value) < MIN_ADMIN_TOKEN_CHARS or not value.isprintable()
    ):
        raise ConfigError(
            f"admin_token must be printable text, at least {MIN_ADMIN_TOKEN_CHARS} characters"
        )


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """Everything the gateway needs. Every limit is bounded; times are in seconds."""

    secret: bytes = attrs.field(validator=_secret, repr=False)
    """The HMAC key tokens are signed with."""
    host: str = "127.0.0.1"
    port: int = attrs.field(default=DEFAULT_PORT, validator=_port)
    """0 picks a free port (read it back from :meth:`Gateway.port`)."""
    allowed_origins: frozenset[str] | None = attrs.field(default=None, converter=_origins)
    """Exact ``Origin`` values allowed to open a socket; None: the page's own origin
    (:mod:`._trust`)."""
    dev_tokens: bool = False
    """Serve ``POST /dev/token`` (local development sign-in). Refused on a non-loopback host."""
    auth: Authenticate | None = None
    """Your sign-in function (:mod:`._sign_in`): given a request's headers and cookies, the user
    id, or None (then netra's own tokens are checked), or it raises ``SignInRefused``. Applied
    to the WebSocket upgrade, ``POST /agui`` and ``GET /agui/events``."""
    dev_token_ttl: float = attrs.field(default=24 * 3600.0, validator=positive)
    hello_timeout: float = attrs.field(default=10.0, validator=positive)
    max_message_size: int = attrs.field(default=64 * 1024, validator=positive_int)
    """Inbound WebSocket message limit (characters of text / bytes of binary); larger → 1009."""
    ping_interval: float = attrs.field(default=20.0, validator=positive)
    pong_timeout: float = attrs.field(default=20.0, validator=positive)
    send_timeout: float = attrs.field(default=10.0, validator=positive)
    """Longest a single frame may take to reach the kernel before the socket is dropped."""
    close_timeout: float = attrs.field(default=3.0, validator=positive)
    """Longest the closing handshake may take before the TCP connection is dropped."""
    command_timeout: float = attrs.field(default=30.0, validator=positive)
    request_timeout: float = attrs.field(default=10.0, validator=positive)
    """Longest an HTTP request (headers and body) may take to arrive."""
    shutdown_timeout: float = attrs.field(default=5.0, validator=positive)
    """Graceful stop: sockets get this long to close with 1001 before they are dropped."""
    max_connections: int = attrs.field(default=10_000, validator=positive_int)
    """Open TCP connections in all (counted from accept to close); more are refused at once."""
    max_connections_per_ip: int = attrs.field(default=64, validator=non_negative_int)
    """Open TCP connections per peer address (from accept to close): one client cannot hold
    every slot with half-sent requests. 0: no per-address cap."""
    uncapped_peers: frozenset[str] = attrs.field(
        default=frozenset({"127.0.0.1", "::1"}), converter=frozenset
    )
    """Peer addresses exempt from ``max_connections_per_ip``: a reverse proxy on this host
    connects from these, for every client (cap clients at the proxy then)."""
    max_sockets_per_user: int = attrs.field(default=16, validator=positive_int)
    rate: RateLimit = attrs.field(factory=RateLimit)
    """Inbound commands per user (shared by the user's sockets)."""
    flood_limit: int = attrs.field(default=20, validator=positive_int)
    """``rate_limited`` answers in a row after which the socket is closed with 4429."""
    batch_max_bytes: int = attrs.field(default=256 * 1024, validator=positive_int)
    """Largest ``batch`` frame the gateway builds (an event larger than this travels alone)."""
    batch_max_events: int = attrs.field(default=256, validator=positive_int)
    page: Path | None = None
    """The chat page served at ``GET /``; None: the packaged page."""
    echo: bool = False
    """Testing mode: ``/ws`` echoes every message, nothing else (WebSocket conformance runs)."""
    admin_token: str | None = attrs.field(default=None, validator=_admin_token, repr=False)
    """The inspector's credential (``docs/inspector.md``); None: no inspector (404)."""
    agui_on_disconnect: str = attrs.field(
        default="continue", validator=attrs.validators.in_(("continue", "cancel"))
    )
    """What closing a ``POST /agui`` stream does to its run when the request does not say
    (``forwardedProps.onDisconnect``): ``continue`` (runs survive disconnects) or ``cancel``."""

    def __attrs_post_init__(self) -> None:
        if self.auth is not None and not callable(self.auth):
            raise ConfigError(f"auth must be a callable (a sign-in function), got {self.auth!r}")
        if self.dev_tokens and not is_loopback_host(self.host):
            raise ConfigError(
                f"development sign-in (dev_tokens) is refused on the non-loopback host "
                f"{self.host!r}: anyone who can reach it could sign in as anyone. Mint tokens "
                "with 'netra-actors token USER' instead."
            )
