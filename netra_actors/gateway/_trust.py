"""Which requests a server trusts: the ``Origin`` allowlist and development sign-in. Pure.

Both servers — the trio gateway and the ASGI adapter — apply these two rules, and only these, to
decide from *where* a request may come:

* **Origin.** A request with no ``Origin`` (a script, a non-browser client) passes: its token
  authenticates it. One with exactly one ``Origin`` passes if that origin is on the allowlist
  (exact string match); several ``Origin`` headers never pass. The allowlist is
  ``allowed_origins`` when configured, else the page's own origin: the loopback names on the
  server's port — and, for a server that learns its address from each request (the ASGI
  adapter: the ASGI ``server``, never a ``Host`` header), that address too. The trio gateway
  listens on one configured address and knows its port once it listens: its page's origins are
  the loopback names (a page served under another name needs ``allowed_origins``).
* **Development sign-in** (``POST /dev/token``) is served only when ``dev_tokens`` is on and the
  request reached a loopback address of the server — decided per request, so a server on
  ``0.0.0.0`` signs in local clients only. (The trio gateway also refuses ``dev_tokens`` on a
  non-loopback host when it is configured.)
"""

from __future__ import annotations

from ._config import GatewayConfig, default_origins, is_loopback_host
from ._http import HttpRequest

UNKNOWN_ADDRESS = ("127.0.0.1", 0)
"""Where a request without a known server address counts as having arrived (the ASGI ``server``
is optional): the page's origins on port 0, which no browser sends."""


def page_origin(host: str, port: int) -> str:
    """The ``Origin`` of a page loaded from ``host:port`` over plain HTTP."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def dev_sign_in_allowed(config: GatewayConfig, request: HttpRequest) -> bool:
    """True if ``request`` may use development sign-in: it is on, and the request reached a
    loopback address of the server."""
    local = request.local
    return config.dev_tokens and local is not None and is_loopback_host(local[0])


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

    def for_request(self, request: HttpRequest) -> frozenset[str]:
        """The origins allowed for ``request``."""
        if self._fixed is not None:
            return self._fixed
        local = request.local or UNKNOWN_ADDRESS
        origins = self._by_address.get(local)
        if origins is None:  # one set per server address: a handful at most
            host, port = local
            origins = self._by_address[local] = default_origins(port) | {page_origin(host, port)}
        return origins

    def allow(self, request: HttpRequest) -> bool:
        """True if ``request`` has no ``Origin``, or exactly one that is on the allowlist."""
        count = request.header_count("origin")
        if count == 0:
            return True
        return count == 1 and request.header("origin") in self.for_request(request)
