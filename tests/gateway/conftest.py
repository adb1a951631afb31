"""Fixtures of the gateway tests: example servers as subprocesses on real sockets."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gwkit import Server, UvicornServer


@pytest.fixture(scope="session", params=["gateway", "asgi"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One example server shared by the tests that need no special flags (users keep them apart):
    every such test runs against ``netra-actors serve`` (its hello timeout short, so that the 4408
    test stays fast) and against ``uvicorn examples.fastapi_app:app`` (the ASGI adapter)."""
    tmp = tmp_path_factory.mktemp(f"shared-{request.param}")
    if request.param == "gateway":
        srv: Server = Server(tmp, "--hello-timeout", "1.5")
    else:
        srv = UvicornServer(tmp, env={"NETRA_HELLO_TIMEOUT": "1.5"})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start a dedicated server with extra flags: ``make_server("--rate", "1")``."""
    started: list[Server] = []

    def make(*args: str, port: int | None = None, start: bool = True) -> Server:
        srv = Server(tmp_path, *args, port=port)
        started.append(srv)
        return srv.start() if start else srv

    try:
        yield make
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture
def user() -> str:
    """A fresh user name."""
    return f"u-{uuid.uuid4().hex[:12]}"
