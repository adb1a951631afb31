"""The HTTP side of the one port: page, health, metrics, 404/405/426, the Origin allowlist
(checked before the upgrade → 403) and development sign-in."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from gwkit import Client, Server, UvicornServer, run_async
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin


def test_page_health_and_unknown_paths(server: Server) -> None:
    status, body = server.get("/")
    assert status == 200
    assert b"<html" in body.lower()
    status, doc = server.get_json("/healthz")
    assert status == 200
    assert doc["status"] == "ok"
    assert doc["store"] == "ok"
    assert doc["store_ok"] is True
    for key in ("active_sessions", "open_sockets", "live_runs", "protocol", "uptime_seconds"):
        assert isinstance(doc[key], int | float), key
    assert server.get("/nope")[0] == 404
    assert server.get("/ws")[0] == 426
    assert server.get("/healthz", method="POST", body=b"")[0] == 405


def test_health_counts_sockets_and_sessions(server: Server, user: str) -> None:
    @run_async
    async def scenario() -> None:
        before = server.get_json("/healthz")[1]["open_sockets"]
        client = await Client.open(server, user)
        await client.command({"type": "ping"})
        doc = server.get_json("/healthz")[1]
        assert doc["open_sockets"] >= before + 1
        assert doc["active_sessions"] >= 1

    scenario()


def test_metrics_expose_gateway_and_runtime_figures(server: Server, user: str) -> None:
    @run_async
    async def scenario() -> None:
        client = await Client.open(server, user)
        run_id = await client.start("crashy", {"crash_times": 1})
        await client.wait_run_end(run_id)

    scenario()
    status, body = server.get("/metrics")
    assert status == 200
    text = body.decode()
    for name in (
        "netra_sockets_open",
        "netra_sockets_opened_total",
        "netra_sessions_active",
        'netra_runs{state="live"}',
        'netra_runs{state="completed"}',
        "netra_events_committed_total",
        "netra_store_last_commit_seconds",
        "netra_commit_to_socket_seconds_bucket",
        'netra_store_commit_seconds_bucket{le="+Inf"}',
        "netra_store_commit_seconds_count",
        "netra_commit_to_mailbox_seconds_bucket",
        "netra_restarts_total",
        "netra_rollbacks_total",
        "netra_mailbox_depth_max",
        "netra_socket_mailbox_depth_max",
        "netra_frames_received_total",
    ):
        assert name in text, name
    restarts = next(line for line in text.splitlines() if line.startswith("netra_restarts_total"))
    assert float(restarts.split()[-1]) >= 1


@pytest.mark.parametrize("origin_host", ["127.0.0.1", "localhost", "[::1]"])
def test_default_origins_are_the_page_itself(server: Server, user: str, origin_host: str) -> None:
    @run_async
    async def scenario() -> None:
        origin = f"http://{origin_host}:{server.port}"
        client = await Client.open(server, user, origin=origin)
        assert (await client.command({"type": "ping"}))["type"] == "pong"

    scenario()


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://127.0.0.1:1",
        "https://127.0.0.1:{port}",
        "http://127.0.0.1:{port}.evil.example",
        "http://127.0.0.1:{port}/",
        "null",
    ],
)
def test_other_origins_get_403_before_the_upgrade(server: Server, origin: str) -> None:
    @run_async
    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as info:
            async with connect(
                server.ws_url, origin=Origin(origin.format(port=server.port)), open_timeout=5
            ):
                pass
        assert info.value.response.status_code == 403

    scenario()


def test_allowed_origin_flag_replaces_the_defaults(make_server: Callable[..., Server]) -> None:
    srv = make_server("--allowed-origin", "https://chat.example.com")

    @run_async
    async def scenario() -> None:
        client = await Client.open(srv, "o-user", origin="https://chat.example.com")
        assert (await client.command({"type": "ping"}))["type"] == "pong"
        with pytest.raises(InvalidStatus) as info:
            async with connect(
                srv.ws_url, origin=Origin(f"http://127.0.0.1:{srv.port}"), open_timeout=5
            ):
                pass
        assert info.value.response.status_code == 403

    scenario()


def test_dev_token_sign_in_on_loopback(server: Server, user: str) -> None:
    status, body = server.get(
        "/dev/token", method="POST", body=json.dumps({"user": user}).encode(),
        headers={"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{server.port}"},
    )  # fmt: skip
    assert status == 200
    doc = json.loads(body)
    assert doc["user"] == user
    assert isinstance(doc["token"], str)

    @run_async
    async def scenario() -> None:
        client = await Client.open(server, tok=doc["token"])
        assert client.welcome is not None
        assert client.welcome["user_id"] == user

    scenario()
    # refused: bad bodies, foreign Origins, the wrong method
    assert server.get("/dev/token", method="POST", body=b"{")[0] == 400
    assert server.get("/dev/token", method="POST", body=b'{"user": ""}')[0] == 400
    assert server.get("/dev/token", method="POST", body=b'{"user": 5}')[0] == 400
    assert server.get("/dev/token", method="POST", body=b"[]")[0] == 400
    evil = {"Origin": "http://evil.example"}
    assert server.get("/dev/token", method="POST", body=b'{"user": "x"}', headers=evil)[0] == 403
    assert server.get("/dev/token")[0] == 405


def test_dev_tokens_can_be_disabled(make_server: Callable[..., Server]) -> None:
    srv = make_server("--no-dev-tokens")
    assert srv.get("/dev/token", method="POST", body=b'{"user": "x"}')[0] == 404
    assert srv.get_json("/healthz")[1]["dev_tokens"] is False
    assert "development sign-in disabled" in srv.out_path.read_text()


def test_banner_says_how_to_start(server: Server) -> None:
    if isinstance(server, UvicornServer):  # uvicorn prints its own banner
        assert f"Uvicorn running on http://127.0.0.1:{server.port}" in server.log_path.read_text()
        return
    out = server.out_path.read_text()
    assert f"http://127.0.0.1:{server.port}/" in out
    assert "development sign-in enabled" in out
    assert "netra-actors token USER" in out
