"""Which requests a server trusts: the ``Origin`` allowlist and development sign-in. Pure.

Both servers — the trio gateway and the ASGI adapter — apply these rules, and only these, to
decide from *where* a request may come:

* **Origin.** A request with no ``Origin`` (a script, a non-browser client) passes: its token
  authenticates it. One with exactly one ``Origin`` passes if that origin is on the allowlist
  (exact string match); several ``Origin`` headers never pass. The allowlist is
  ``allowed_origins`` when configured, else the page's own origin: the loopback names on the
  server's port (:func:`default_origins`) — and, for a server that learns its address from each
  request (the ASGI adapter: the ASGI ``server``, never a ``Host`` header), that address too.
  The trio gateway listens on one configured address and knows its port once it listens: its
  page's origins are the loopback names (a page served under another name needs
  ``allowed_origins``).
* **Development sign-in** (``POST /dev/token``) is served only when ``dev_tokens`` is on, the
  request reached a loopback address of the server (:func:`is_loopback_host`), and it did not
  come through a proxy: no ``Forwarded``, ``Via``, ``X-Forwarded-*`` or other header that
  proxies add (:data:`PROXY_HEADERS`), and a ``Host`` (if any:
  one) naming a loopback host on the port the request reached (:func:`came_through_proxy`) — decided
  per request, so a server on ``0.0.0.0`` signs in local clients only, and a reverse proxy on
  the same machine relays no sign-in. (A configuration with ``dev_tokens`` on a non-loopback
  host is refused outright.)
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

UNKNOWN_ADDRESS = ("127.0.0.1", 0)
"""Where a request without a known server address counts as having arrived (the ASGI ``server``
is optional): the page's origins on port 0, which no browser sends."""


class Request(Protocol):
    """What the rules read of a request (:class:`~._http.HttpRequest`)."""

    @property
    def local(self) -> tuple[str, int] | None:
        """The server's own address the request reached."""

    def header(self, name: str) -> str | None: ...

    def header_count(self, name: str) -> int: ...

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Every header, names lower-cased."""


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and any loopback address (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def default_origins(port: int) -> frozenset[str]:
    """The default Origin allowlist: the page itself, on the loopback names."""
    return frozenset(
        {f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"}
    )


def page_origin(host: str, port: int) -> str:
    """The ``Origin`` of a page loaded from ``host:port`` over plain HTTP."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


PROXY_HEADERS = frozenset(
    {"forwarded", "via", "x-real-ip", "x-client-ip", "client-ip", "true-client-ip"}
    | {"cf-connecting-ip", "fastly-client-ip", "x-cluster-client-ip", "x-original-forwarded-for"}
)
"""Headers only a proxy (or a CDN) adds, besides ``X-Forwarded-*``: ``Forwarded`` (RFC 7239),
``Via`` (RFC 9110, which every proxy must add — nginx does not), and the client-address headers
of nginx (``X-Real-IP``), Cloudflare, Akamai, Fastly and others."""


def _host_and_port(value: str) -> tuple[str, int | None] | None:
    """The host and port of a ``Host`` header value (None: not one)."""
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep:
            return None
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            return None
    else:
        host, sep, port_text = value.partition(":")
        if not sep:
            port_text = None
    if port_text is None:
        return host, None
    if not port_text.isdigit() or len(port_text) > 5:
        return None
    return host, int(port_text)


def came_through_proxy(request: Request) -> bool:
    """True unless ``request`` was made on the machine straight to the server: a header of
    :data:`PROXY_HEADERS` or ``X-Forwarded-*``, several ``Host`` headers, or a ``Host`` that is not a loopback
    name on the port the request reached (80 when it names none) says a proxy (or a name the
    server does not know itself by) is in between. (A request without ``Host`` — HTTP/1.0 — is
    judged by its headers only: a proxy relaying HTTP/1.1 always sends one.)"""
    for name, _ in request.headers:
        if name in PROXY_HEADERS or name.startswith("x-forwarded-"):
            return True
    count = request.header_count("host")
    if count == 0:
        return False
    parsed = _host_and_port(request.header("host") or "")
    local = request.local
    if count > 1 or parsed is None or local is None:
        return True
    host, port = parsed
    return not is_loopback_host(host) or (80 if port is None else port) != local[1]


def dev_sign_in_allowed(enabled: bool, request: Request) -> bool:
    """True if ``request`` may use development sign-in: it is ``enabled``, the request reached a
    loopback address of the server, and it did not come through a proxy."""
    local = request.local
    return (
        enabled
        and local is not None
        and is_loopback_host(local[0])
        and not came_through_proxy(request)
    )


class Origins:
    """The ``Origin`` allowlist of one server (see the module doc)."""

    def __init__(self, allowed: frozenset[str] | None) -> None:
        self._allowed = allowed
        self._fixed: frozenset[str] | None = allowed
        self._by_address: dict[tuple[str, int], frozenset[str]] = {}

    def listening(self, port: int) -> None:
        """The server listens on ``port`` of one configured address (the trio gateway): its page's
        own origins are the loopback names on that port, whatever address a request reached."""
        if self._allowed is None:
            self._fixed = default_origins(port)

    @property
    def fixed(self) -> frozenset[str] | None:
        """The allowlist when it is the same for every request (configured, or listening)."""
        return self._fixed

    def for_request(self, request: Request) -> frozenset[str]:
        """The origins allowed for ``request``."""
        if self._fixed is not None:
            return self._fixed
        local = request.local or UNKNOWN_ADDRESS
        origins = self._by_address.get(local)
        if origins is None:  # one set per server address: a handful at most
            host, port = local
            origins = self._by_address[local] = default_origins(port) | {page_origin(host, port)}
        return origins

    def allow(self, request: Request) -> bool:
        """True if ``request`` has no ``Origin``, or exactly one that is on the allowlist."""
        count = request.header_count("origin")
        if count == 0:
            return True
        return count == 1 and request.header("origin") in self.for_request(request)
