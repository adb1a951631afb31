"""The request rules both servers apply (``netra_actors/gateway/_trust.py``): the Origin
allowlist and development sign-in, over requests as each transport builds them — the trio
gateway's ``local`` is its socket's own address, the ASGI adapter's the scope's ``server``."""

from __future__ import annotations

import pytest

from netra_actors.gateway import GatewayConfig
from netra_actors.gateway._asgi_http import request_from_scope
from netra_actors.gateway._http import HttpRequest
from netra_actors.gateway._state import ServerState
from netra_actors.gateway._trust import (
    Origins,
    came_through_proxy,
    default_origins,
    dev_sign_in_allowed,
    is_loopback_host,
    page_origin,
)

SECRET = b"trust-secret-0123456789"


def request(*origins: str, local: tuple[str, int] | None = ("127.0.0.1", 8000)) -> HttpRequest:
    headers = tuple(("origin", o) for o in origins)
    return HttpRequest(method="GET", target="/ws", headers=headers, local=local)


# -- the Origin rule -------------------------------------------------------------------------


def test_a_request_without_origin_passes_and_several_never_do() -> None:
    for origins in (Origins(None), Origins(frozenset({"https://a.example"}))):
        assert origins.allow(request())
        assert not origins.allow(request("https://a.example", "https://a.example"))
        assert not origins.allow(request("http://127.0.0.1:8000", "http://127.0.0.1:8000"))


def test_a_configured_allowlist_replaces_the_page_origins() -> None:
    origins = Origins(frozenset({"https://chat.example.com"}))
    origins.listening(8765)  # the trio gateway: still the configured list
    assert origins.allow(request("https://chat.example.com"))
    assert not origins.allow(request("http://127.0.0.1:8000"))
    assert not origins.allow(request("http://127.0.0.1:8765"))
    assert origins.fixed == frozenset({"https://chat.example.com"})


@pytest.mark.parametrize(
    "origin",
    ["https://127.0.0.1:8000", "http://127.0.0.1:8000/", "http://127.0.0.1:8000.evil.example",
     "null", "http://evil.example", "http://127.0.0.1:8001"],
)  # fmt: skip
def test_the_match_is_exact(origin: str) -> None:
    assert not Origins(None).allow(request(origin))


def test_per_request_the_page_origin_is_the_address_the_request_reached() -> None:
    origins = Origins(None)  # the ASGI adapter: never told where it listens
    lan = ("192.168.1.5", 8000)
    assert origins.allow(request("http://192.168.1.5:8000", local=lan))
    assert origins.allow(request("http://localhost:8000", local=lan))  # loopback names too
    assert not origins.allow(request("http://192.168.1.5:8000"))  # reached 127.0.0.1 instead
    assert origins.for_request(request(local=("::1", 8000))) == default_origins(8000)
    assert origins.for_request(request(local=("fe80::1", 9))) == default_origins(9) | {
        "http://[fe80::1]:9"
    }
    # no known server address: the loopback names on port 0, which no page has
    assert origins.for_request(request(local=None)) == default_origins(0)
    assert origins.fixed is None


def test_a_listening_server_allows_the_loopback_names_on_its_port_only() -> None:
    origins = Origins(None)
    origins.listening(8765)  # the trio gateway, bound to one configured address
    assert origins.fixed == default_origins(8765)
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert origins.allow(request(f"http://{host}:8765", local=("0.0.0.0", 8765)))
    assert not origins.allow(request("http://192.168.1.5:8765", local=("192.168.1.5", 8765)))


def test_page_origin_brackets_ipv6() -> None:
    assert page_origin("::1", 80) == "http://[::1]:80"
    assert page_origin("10.0.0.2", 80) == "http://10.0.0.2:80"


# -- the development sign-in rule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "allowed"),
    [(("127.0.0.1", 1), True), (("127.3.4.5", 1), True), (("::1", 1), True),
     (("localhost", 1), True), (("0.0.0.0", 1), False), (("192.168.1.5", 1), False),
     (("::", 1), False), (None, False)],
)  # fmt: skip
def test_dev_sign_in_only_for_requests_that_reached_a_loopback_address(
    local: tuple[str, int] | None, allowed: bool
) -> None:
    assert dev_sign_in_allowed(True, request(local=local)) is allowed
    assert dev_sign_in_allowed(False, request(local=local)) is False


def sign_in_request(
    *headers: tuple[str, str], local: tuple[str, int] = ("127.0.0.1", 8765)
) -> HttpRequest:
    return HttpRequest(method="POST", target="/dev/token", headers=headers, local=local)


@pytest.mark.parametrize(
    "headers",
    [(("x-forwarded-for", "203.0.113.9"),), (("x-forwarded-proto", "https"),),
     (("x-forwarded-host", "chat.example.com"),), (("forwarded", "for=203.0.113.9"),),
     (("host", "chat.example.com"),), (("host", "chat.example.com:8765"),),
     (("host", "192.168.1.5:8765"),), (("host", "127.0.0.1:8766"),), (("host", "localhost"),),
     (("host", "127.0.0.1:8765"), ("host", "127.0.0.1:8765")), (("host", "[::1:8765"),),
     (("host", "127.0.0.1:http"),), (("host", "127.0.0.1:8765"), ("x-forwarded-for", "::1")),
     (("host", "127.0.0.1:8765"), ("via", "1.1 nginx")),
     (("host", "127.0.0.1:8765"), ("x-real-ip", "203.0.113.9")),
     (("host", "127.0.0.1:8765"), ("true-client-ip", "203.0.113.9")),
     (("host", "127.0.0.1:8765"), ("cf-connecting-ip", "203.0.113.9"))],
)  # fmt: skip
def test_dev_sign_in_is_never_served_through_a_proxy(headers: tuple[tuple[str, str], ...]) -> None:
    assert came_through_proxy(sign_in_request(*headers))
    assert not dev_sign_in_allowed(True, sign_in_request(*headers))


@pytest.mark.parametrize(
    "host", [None, "127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST:8765"]
)
def test_dev_sign_in_is_served_to_a_request_made_on_the_machine(host: str | None) -> None:
    headers = () if host is None else (("host", host),)
    assert not came_through_proxy(sign_in_request(*headers))
    assert dev_sign_in_allowed(True, sign_in_request(*headers))
    port80 = sign_in_request(("host", "localhost"), local=("127.0.0.1", 80))
    assert dev_sign_in_allowed(True, port80)  # no port named: 80


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "LOCALHOST", "app.localhost"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com", "localhost.example.com"):
        assert not is_loopback_host(host), host


# -- the same rules behind both transports ---------------------------------------------------


def test_both_transports_feed_the_rules_the_address_the_request_reached() -> None:
    state = ServerState(GatewayConfig(secret=SECRET, echo=True, dev_tokens=True), None)
    scope = {
        "type": "http",
        "path": "/dev/token",
        "headers": [(b"origin", b"http://192.168.1.5:8000")],
        "server": ("192.168.1.5", 8000),
    }
    lan = request_from_scope(scope, b"")  # what the ASGI adapter builds
    assert lan.local == ("192.168.1.5", 8000)
    assert state.origin_allowed(lan)
    assert not state.dev_tokens_for(lan)
    local = request_from_scope({**scope, "server": ("127.0.0.1", 8000)}, b"")
    assert state.dev_tokens_for(local)
    assert not state.origin_allowed(local)  # the page was loaded from the LAN address
    assert not state.dev_tokens_for(request_from_scope({**scope, "server": None}, b""))
    state.origins.listening(8000)  # the trio gateway, once it listens
    assert not state.origin_allowed(lan)
    assert state.origin_allowed(request("http://localhost:8000"))
