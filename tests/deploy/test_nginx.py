"""docs/deployment.md, run: a real nginx (the Debian package) with the guide's configuration, TLS
included, in front of two ``netra-actors serve`` processes on one SQLite file started with the
guide's flags. Through it: the page, a WebSocket, an AG-UI stream that arrives unbuffered, resume
(``resume_from`` and ``Last-Event-ID``) across a restart of each server in turn, and the read
timeout against the servers' keepalive.

Which server nginx picks is never asserted: the restart test restarts both, so whichever one a
client was on, it is cut and resumes. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
import pytest
from proxykit import (
    NGINX,
    OPENSSL,
    PUBLIC_NAME,
    Client,
    Nginx,
    Server,
    StreamChecker,
    adapt,
    assert_gapless,
    bounded,
    event_is,
    events,
    events_of,
    free_port,
    guide_serve_args,
    is_final_state,
    post,
    run_async,
    run_input,
    self_signed,
    seq_is,
)
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

if NGINX is None:
    pytest.skip("nginx is missing (apt-get install -y nginx)", allow_module_level=True)
if OPENSSL is None:
    pytest.skip("openssl is missing (apt-get install -y openssl)", allow_module_level=True)

T = TypeVar("T")

PING_INTERVAL = 3
"""The servers' ``--ping-interval`` here (the guide keeps the default, 20 s): the timeout test
then needs seconds, not minutes."""
SERVER_FLAGS = ("--ping-interval", str(PING_INTERVAL), "--shutdown-timeout", "2")


class Site(NamedTuple):
    proxy: Nginx
    servers: tuple[Server, Server]
    cert: Path
    key: Path
    tmp: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """nginx on ``https://127.0.0.1:PORT`` in front of two servers on one database, as the guide
    runs them; clients trust the test certificate as they would a CA's (``SSL_CERT_FILE``)."""
    tmp = tmp_path_factory.mktemp("deploy")
    cert, key = self_signed(tmp)
    port = free_port()
    origin = f"https://127.0.0.1:{port}"
    args = adapt(" ".join(guide_serve_args()), {f"https://{PUBLIC_NAME}": origin}).split()
    servers = (Server(tmp, *args, *SERVER_FLAGS), Server(tmp, *args, *SERVER_FLAGS))
    proxy = Nginx(tmp / "nginx", servers, cert=cert, key=key, port=port)
    assert proxy.origin == origin
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SSL_CERT_FILE", str(cert))
        try:
            for server in servers:
                server.start()
            proxy.start()
            yield Site(proxy, servers, cert, key, tmp)
        finally:
            proxy.stop()
            for server in servers:
                server.stop()


@pytest.fixture
def user() -> str:
    return f"u-{uuid.uuid4().hex[:12]}"


# -- the page, /ws and /agui through the proxy ---------------------------------------------------


def test_the_page_and_health_come_through_the_proxy(site: Site) -> None:
    status, body = site.proxy.get("/")
    assert status == 200
    assert "<title>netra actors · chat</title>" in body.decode()
    status, body = site.proxy.get("/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    # plain HTTP only redirects to HTTPS
    conn = http.client.HTTPConnection("127.0.0.1", site.proxy.http_port, timeout=5)
    conn.request("GET", "/ws?x=1")
    answer = conn.getresponse()
    assert answer.status == 301
    assert answer.getheader("location") == "https://127.0.0.1/ws?x=1"
    conn.close()
    # the guide's servers have no development sign-in
    status, _ = site.proxy.get(
        "/dev/token", method="POST", body=b'{"user": "mallory"}',
        headers={"Origin": site.proxy.origin, "Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 404


@run_async
async def test_a_websocket_through_the_proxy_gets_the_whole_stream(site: Site, user: str) -> None:
    proxy = site.proxy
    client = await Client.open(proxy, user, resume_from=0, origin=proxy.origin)
    run_id = await client.say("hello through the proxy")
    assert await client.wait_run_end(run_id) == "completed"
    assert_gapless(client.events, 1)
    run = client.run_events(run_id)
    assert run[0]["event"] == "message"
    assert run[0]["data"]["role"] == "user"
    assert any(e["event"] == "message" and e["data"]["role"] == "assistant" for e in run)
    # the origin allowlist holds through the proxy: the public https origin, exactly
    for origin in ("https://evil.example", f"http://127.0.0.1:{proxy.port}"):
        with pytest.raises(InvalidStatus) as refused:
            await Client.open(proxy, user, origin=origin)
        assert refused.value.response.status_code == 403, origin
    # the frame limit is the server's, after the upgrade nginx only relays
    big = await Client.open(proxy, user, origin=proxy.origin)
    await big.send({"type": "say", "text": "x" * 70_000})
    assert await big.closed() == 1009


@run_async
async def test_an_agui_stream_arrives_before_its_run_ends(site: Site, user: str) -> None:
    """A ``slow`` run thinks about once a second for 3 s: its first thought must reach the
    client while the run goes on (seconds before the response ends), so nginx does not hold the
    stream back. A buffering proxy delivers everything at once, at the end."""
    proxy = site.proxy
    origin = {"Origin": proxy.origin}
    body = run_input("take your time", agent="slow", input={"seconds": 3})
    stream = await post(proxy, user, body, headers=origin)
    async with stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        await stream.until(lambda f: f.type.startswith("REASONING"))
        first_thought = time.monotonic()
        frames = await stream.to_end()  # the server ends the response after RUN_FINISHED
        ended = time.monotonic()
    assert frames[0].type == "RUN_STARTED"
    assert frames[-1].type == "RUN_FINISHED"
    assert ended - first_thought > 1.0, "the stream arrived all at once: buffered"


# -- resume across restarts ----------------------------------------------------------------------


RETRY = (OSError, TimeoutError, InvalidMessage, ConnectionClosed, httpx.TransportError)
"""What a client meets while a server restarts: refused, cut, or nginx's 502 (no live upstream)."""


def unavailable(exc: Exception) -> bool:
    """A refusal a client retries: a transport failure, or 502/503/504 from nginx or a draining
    server."""
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code in (502, 503, 504)
    if isinstance(exc, AssertionError):  # aguikit's Stream.open on a status other than 200
        return any(f": {code} " in str(exc) for code in (502, 503, 504))
    return isinstance(exc, RETRY)


async def retrying(opener: Callable[[], Awaitable[T]], within: float = 30.0) -> T:
    """``opener()``, again every 0.2 s while no server answers (a client's reconnect loop)."""
    async with asyncio.timeout(within):
        while True:
            try:
                return await opener()
            except Exception as exc:
                if not unavailable(exc):
                    raise
            await asyncio.sleep(0.2)


class Follower:
    """One user's WebSocket through the proxy, as the page keeps it: whenever it is closed it
    reconnects with ``resume_from`` = the last seq it holds (retrying while no server answers).
    It keeps every event it receives, across connections, in order."""

    def __init__(self, proxy: Nginx, user: str) -> None:
        self.proxy, self.user = proxy, user
        self.events: list[dict[str, Any]] = []
        self.closes: list[int | None] = []
        self.connections = 0

    @property
    def last(self) -> int:
        seq: int = self.events[-1]["seq"] if self.events else 0
        return seq

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((e for e in self.events if predicate(e)), None)

    async def run(self) -> None:
        while True:
            client = await retrying(
                lambda: Client.open(
                    self.proxy, self.user, resume_from=self.last, origin=self.proxy.origin
                )
            )
            self.connections += 1
            with contextlib.suppress(ConnectionClosed):
                async for raw in client.ws:
                    self.events.extend(events_of(json.loads(raw)))
            self.closes.append(client.ws.close_code)


class SseFollower:
    """The same for ``GET /agui/events``: reconnects with ``Last-Event-ID`` = the last id it
    received; one checker across its streams (AG-UI order rules, ids that only increase)."""

    def __init__(self, proxy: Nginx, user: str) -> None:
        self.proxy, self.user = proxy, user
        self.checker = StreamChecker()
        self.streams = 0

    @property
    def last_id(self) -> str | None:
        durable = self.checker.durable()
        return durable[-1].id if durable else None

    def seqs(self) -> list[int]:
        """The seq of every whole group received (the frame with the bare id ``k``)."""
        return [int(f.id) for f in self.checker.durable() if f.id is not None and "." not in f.id]

    async def run(self) -> None:
        while True:
            stream = await retrying(
                lambda: events(
                    self.proxy,
                    self.user,
                    self.last_id,
                    headers={"Origin": self.proxy.origin},
                    checker=self.checker,
                )
            )
            self.streams += 1
            async with stream:
                while await stream.next(3600) is not None:
                    pass


async def until(
    done: Callable[[], bool], tasks: list[asyncio.Task[None]], what: str, within: float = 30.0
) -> None:
    """Poll ``done`` until true; a follower that failed fails the test at once."""
    async with asyncio.timeout(within):
        while not done():
            for task in tasks:
                if task.done():
                    task.result()
                    raise AssertionError(f"a follower stopped before {what}")
            await asyncio.sleep(0.05)


@bounded(150)
async def test_clients_resume_exactly_across_a_restart_of_each_server(
    site: Site, user: str
) -> None:
    proxy = site.proxy
    ws, sse = Follower(proxy, user), SseFollower(proxy, user)
    tasks = [asyncio.create_task(ws.run()), asyncio.create_task(sse.run())]
    try:
        await until(lambda: ws.connections > 0 and sse.streams > 0, tasks, "connecting")
        client = await retrying(lambda: Client.open(proxy, user, origin=proxy.origin))
        before = await client.say("before the deploy")
        slow = await client.start("slow", {"seconds": 3})
        await client.close()
        await until(lambda: ws.find(lambda e: is_final_state(e, before)) is not None, tasks, "a")
        await until(lambda: ws.find(event_is(slow, "agent_started")) is not None, tasks, "b")
        for server in site.servers:  # a rolling restart: whichever a client is on, it is cut
            assert server.terminate() == 0, server.log()
            server.start()
        client = await retrying(lambda: Client.open(proxy, user, origin=proxy.origin))
        after = await client.say("after the deploy")
        await client.close()
        await until(lambda: ws.find(lambda e: is_final_state(e, after)) is not None, tasks, "c")
        await until(lambda: ws.find(lambda e: is_final_state(e, slow)) is not None, tasks, "d")
        head = ws.last
        await until(lambda: bool(sse.seqs()) and sse.seqs()[-1] >= head, tasks, "the SSE head")
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if not isinstance(result, asyncio.CancelledError | type(None)):
            raise result
    assert 1001 in ws.closes, ws.closes  # its server drained, and it came back
    assert ws.connections >= 2, ws.connections
    assert sse.streams >= 2, sse.streams
    assert_gapless(ws.events, 1)  # no gap, no repeat across the reconnects
    assert sse.seqs() == list(range(1, len(sse.seqs()) + 1)), sse.seqs()
    # a fresh reader gets from the database what the followers got, event for event
    fresh = await Client.open(proxy, user, resume_from=0, origin=proxy.origin)
    await fresh.wait_for(seq_is(head))
    assert fresh.events[:head] == ws.events[:head]
    # and a resume from k, before the restarts, is exactly what follows k
    k = next(e["seq"] for e in ws.events if is_final_state(e, before))
    again = await Client.open(proxy, user, resume_from=k, origin=proxy.origin)
    await again.wait_for(seq_is(head))
    assert again.events[: head - k] == ws.events[k:head]


# -- the read timeout against the servers' keepalive -----------------------------------------


@pytest.mark.parametrize(
    ("read_timeout", "idle", "survives"),
    [pytest.param("5s", 6.0, True, id="longer-than-the-ping"),
     pytest.param("1500ms", 0.0, False, id="shorter-than-the-ping")],
)  # fmt: skip
@run_async
async def test_idle_connections_live_while_the_read_timeout_exceeds_the_ping_interval(
    site: Site, user: str, read_timeout: str, idle: float, survives: bool
) -> None:
    """With ``proxy_read_timeout`` longer than ``--ping-interval`` an idle socket and an idle
    event stream outlive it (pings and keepalives are traffic); shorter, nginx cuts both."""
    proxy = Nginx(
        site.tmp / f"nginx-{read_timeout}", site.servers, cert=site.cert, key=site.key,
        changes={"proxy_read_timeout 60s;": f"proxy_read_timeout {read_timeout};"},
    )  # fmt: skip
    # the servers allow the origin of the main proxy only: these clients send none
    proxy.start()
    try:
        client = await Client.open(proxy, user)
        stream = await events(proxy, user)
        async with stream:
            await asyncio.sleep(idle)
            if survives:
                assert (await client.command({"type": "ping", "id": "p"}))["type"] == "pong"
                assert "keepalive" in stream.parser.comments
                assert not stream.ended
                assert stream.frames == []
            else:
                assert await client.closed(within=5) == 1006
                assert await stream.next(5) is None  # the response was cut
    finally:
        proxy.stop()


# -- development sign-in behind a proxy ------------------------------------------------------


def test_development_sign_in_is_not_served_through_the_proxy(site: Site) -> None:
    """A server started without ``--no-dev-tokens`` (on loopback, its default is on) behind the
    guide's proxy must not mint tokens for the public: only for requests made on the machine."""
    args = [a for a in guide_serve_args() if a != "--no-dev-tokens"]
    tmp = site.tmp / "dev"
    tmp.mkdir()
    server = Server(tmp, *args).start()
    proxy = Nginx(tmp / "nginx", (server, server), cert=site.cert, key=site.key)
    try:
        proxy.start()
        body, headers = b'{"user": "mallory"}', {"Content-Type": "application/json"}
        status, _ = server.get("/dev/token", method="POST", body=body, headers=headers)
        assert status == 200, "development sign-in, on the machine itself, is on"
        status, answer = proxy.get("/dev/token", method="POST", body=body, headers=headers)
        assert status != 200, (status, answer)
        assert b"token" not in answer, answer
    finally:
        proxy.stop()
        server.stop()
