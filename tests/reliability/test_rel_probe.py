"""Issue 20, goal A: a black-box security probe of both servers over loopback.

Both servers run as real processes the way the docs say to run them facing clients, with every
sign-in surface on at once: ``netra-actors serve --auth examples.auth_jwt:authenticate
--admin-token … --dev-tokens``, and ``uvicorn examples.fastapi_app:app`` with the documented safe
settings (docs/embedding.md, "Safe uvicorn settings") and ``NETRA_AUTH`` / ``NETRA_ADMIN_TOKEN``
/ ``NETRA_DEV_TOKENS=1``. Each attack's answer is asserted on both. What the other suites already
prove is not repeated here: forged/expired/other-user JWTs and cookie forgery
(``tests/gateway/test_sign_in.py``), token respellings and seq cursors past 2^63
(``test_edge_input.py``), cross-origin upgrades (``test_http.py``), the inspector's credential
(``test_inspector_http.py``), WebSocket frame fuzzing (``test_rel_fuzz.py``), cross-user commands
over ``/ws`` (``test_rel_isolation.py``), the trio server's per-IP cap and head timeout
(``test_rel_per_ip.py``, ``test_rel_hostile.py``), uvicorn's head limits
(``test_uvicorn_limits.py``) and a full disk (``test_rel_disk_full.py``). Added:

* **auth** — JWTs with ``alg: none``, another HMAC algorithm, the netra token secret as the key
  (key confusion), no ``exp``, no or a non-string ``sub``; the admin token used as a user
  credential; a user's JWT on the inspector;
* **isolation** — AG-UI threads: another user's ``threadId`` (following, posting into, resuming
  with their ``Last-Event-ID``) never yields their events; their message ids are not theirs;
* **Origin / CSRF** — CORS preflight and ``/dev/token`` from a foreign page, ``Origin: null``;
  login and logout CSRF on the cookie example;
* **bad input** on AG-UI — malformed, non-UTF-8, deeply nested, huge-number and oversized bodies,
  thread names like ``../``, ``%2e%2e``, NUL, unicode; ``Last-Event-ID`` oddities; ``history``'s
  ``before_seq`` extremes over ``/ws``;
* **traversal** on the static routes, raw on the socket (no client normalises the path);
* **slowloris** under uvicorn: a crowd of half-sent heads from 127.0.0.2 while 127.0.0.1 is
  served; an SSE reader that never reads is released;
* **proxies** — development sign-in with the other headers proxies add (``Via``,
  ``X-Real-IP`` …) and ``Host`` spellings.

After each server's probe its log has no traceback but the ones asserted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from relkit import SECRET, ConnectionClosed, Peer, bounded, new_user, token

from gwkit import SAFE_UVICORN, UVICORN_HEAD_TIMEOUT, Client, Server, UvicornServer  # isort: skip

JWT_SECRET = "probe-jwt-secret-0123456789abcdef"
ADMIN = "probe-admin-token-0123456789abcdef"
PASSWORD = "probe password"
HEAD_TIMEOUT = UVICORN_HEAD_TIMEOUT
EVIL = "http://evil.example"


@pytest.fixture(scope="module", params=["gateway", "asgi"])
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server with every sign-in surface on: a JWT sign-in, the admin token, dev tokens."""
    tmp = tmp_path_factory.mktemp(f"probe-{request.param}")
    saved = os.environ.get("NETRA_JWT_SECRET")
    os.environ["NETRA_JWT_SECRET"] = JWT_SECRET
    server: Server
    if request.param == "gateway":
        server = Server(
            tmp, "--auth", "examples.auth_jwt:authenticate", "--admin-token", ADMIN, "--dev-tokens"
        )
    else:
        env = {
            "NETRA_AUTH": "examples.auth_jwt:authenticate",
            "NETRA_ADMIN_TOKEN": ADMIN,
            "NETRA_DEV_TOKENS": "1",
        }
        server = UvicornServer(tmp, *SAFE_UVICORN, env=env)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if saved is None:
            os.environ.pop("NETRA_JWT_SECRET", None)
        else:
            os.environ["NETRA_JWT_SECRET"] = saved
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


# -- plain HTTP, raw ----------------------------------------------------------------------------


def raw(
    port: int, head: bytes, body: bytes = b"", *, source: str = "127.0.0.1"
) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, without the blank line) and ``body`` as they are;
    (status, body) of the answer (0: the connection closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        if body:
            head += f"\r\nContent-Length: {len(body)}".encode()
        data = b""
        with contextlib.suppress(OSError):  # it stopped reading (an oversized body): its answer
            s.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
    if not data.startswith(b"HTTP/1."):
        return 0, data
    head_part, _, rest = data.partition(b"\r\n\r\n")
    return int(head_part.split(b" ")[1]), rest


def request(
    srv: Server, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, bytes]:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return raw(srv.port, "\r\n".join(lines).encode(), body)


def a_jwt(claims: dict[str, Any], key: str = JWT_SECRET, alg: str = "HS256") -> str:
    with warnings.catch_warnings():  # PyJWT warns of short keys: the attacker's choice here
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key, algorithm=alg)


def unsigned_jwt(claims: dict[str, Any]) -> str:
    def b64(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def agui_input(thread: str = "t1", text: str = "hello", message_id: str | None = None) -> bytes:
    doc = {
        "threadId": thread,
        "runId": f"r-{time.monotonic_ns()}",
        "messages": [
            {"id": message_id or f"m-{time.monotonic_ns()}", "role": "user", "content": text}
        ],
    }
    return json.dumps(doc).encode()


def sse_body(
    srv: Server, headers: dict[str, str], path: str = "/agui/events", wait: float = 1.5
) -> bytes:
    """What a ``GET`` SSE stream sent within ``wait`` seconds."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=wait) as s:
        s.sendall("\r\n".join(lines).encode() + b"\r\n\r\n")
        data, deadline = b"", time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    return data


# -- auth -------------------------------------------------------------------------------------


def test_jwts_that_must_never_sign_in(srv: Server) -> None:
    exp = int(time.time()) + 600
    refused = {
        "alg none": unsigned_jwt({"sub": "ada", "exp": exp}),
        "alg none, capitalised": unsigned_jwt({"sub": "ada", "exp": exp}).replace(
            unsigned_jwt({"sub": "ada", "exp": exp}).split(".")[0],
            base64.urlsafe_b64encode(b'{"alg":"None","typ":"JWT"}').rstrip(b"=").decode(),
        ),
        "HS512, same secret": a_jwt({"sub": "ada", "exp": exp}, alg="HS512"),
        "the netra token secret as key": a_jwt({"sub": "ada", "exp": exp}, key=SECRET),
        "the admin token as key": a_jwt({"sub": "ada", "exp": exp}, key=ADMIN),
        "no exp": a_jwt({"sub": "ada"}),
        "no sub": a_jwt({"exp": exp}),
        "sub not a string": a_jwt({"sub": 42, "exp": exp}),
        "empty sub": a_jwt({"sub": "", "exp": exp}),
        "sub too long for a user id": a_jwt({"sub": "a" * 65, "exp": exp}),
        "sub with a control character": a_jwt({"sub": "ada\n", "exp": exp}),
        "exp in the past": a_jwt({"sub": "ada", "exp": int(time.time()) - 60}),
        "exp not a number": a_jwt({"sub": "ada", "exp": "tomorrow"}),
        "nbf in the future": a_jwt({"sub": "ada", "exp": exp, "nbf": exp - 10}),
        "truncated": a_jwt({"sub": "ada", "exp": exp})[:-10],
        "three dots": a_jwt({"sub": "ada", "exp": exp}) + ".x",
    }
    for why, credential in refused.items():
        status, body = request(srv, "GET", "/agui/events", headers=bearer(credential))
        if why == "three dots":  # not a JWT to the example: netra's token check refuses it
            assert status == 401, (why, body)
            continue
        assert status == 401, (why, status, body)
        status, body = request(srv, "POST", "/agui", headers=bearer(credential), body=agui_input())
        assert status == 401, (why, status, body)

    @bounded(60)
    async def over_ws() -> None:
        for why, credential in refused.items():
            client = await Client.open(srv, hello=False, additional_headers=bearer(credential))
            with contextlib.suppress(ConnectionClosed):  # refused at once: the upgrade said it all
                await client.send({"type": "hello", "protocol": 1})
            assert await client.closed() == 4401, why

    over_ws()


def test_the_admin_token_is_no_user_credential_and_a_user_is_no_admin(srv: Server) -> None:
    for path in ("/agui/events",):
        assert request(srv, "GET", path, headers=bearer(ADMIN))[0] == 401
    assert request(srv, "POST", "/agui", headers=bearer(ADMIN), body=agui_input())[0] == 401
    good_jwt = a_jwt({"sub": "ada", "exp": int(time.time()) + 600})
    for credential in (
        good_jwt,
        token("ada"),
        ADMIN.upper(),
        ADMIN[:-1],
        ADMIN + "x",
        f"{ADMIN},{ADMIN}",
    ):
        for path in ("/inspector/api/overview", "/inspector/api/runs?user=ada"):
            status, _ = request(srv, "GET", path, headers=bearer(credential))
            assert status == 401, (credential, path)
    # the admin token by cookie or query string is not the admin token
    assert request(srv, "GET", f"/inspector/api/overview?token={ADMIN}")[0] == 401
    status, _ = request(srv, "GET", "/inspector/api/overview", headers={"Cookie": f"token={ADMIN}"})
    assert status == 401
    assert request(srv, "GET", "/inspector/api/overview", headers=bearer(ADMIN))[0] == 200

    @bounded(30)
    async def over_ws() -> None:
        client = await Client.open(srv, hello=False)
        await client.send({"type": "hello", "protocol": 1, "token": ADMIN})
        assert await client.closed() == 4401
        client = await Client.open(srv, hello=False, additional_headers=bearer(ADMIN))
        with contextlib.suppress(ConnectionClosed):
            await client.send({"type": "hello", "protocol": 1})
        assert await client.closed() == 4401

    over_ws()


# -- isolation over AG-UI threads -------------------------------------------------------------


def test_another_users_thread_yields_nothing_of_theirs(srv: Server) -> None:
    ada, bob = new_user("ada"), new_user("bob")
    thread, secret_text = "shared-name", f"ada's secret {new_user()}"
    status, body = request(
        srv, "POST", "/agui", headers=bearer(token(ada)),
        body=agui_input(thread, secret_text, message_id="m-ada-1"),
    )  # fmt: skip
    assert (status, b"RUN_FINISHED" in body) == (200, True), body[-500:]
    # Bob follows a thread of the same name, resuming from "Ada's" cursor: only his own events
    seen = sse_body(
        srv, {**bearer(token(bob)), "Last-Event-ID": "0"}, f"/agui/events?threadId={thread}"
    )
    assert seen.startswith(b"HTTP/1.1 200"), seen[:300]
    assert secret_text.encode() not in seen
    # Bob posts into a thread of that name, reusing Ada's message id: his own run, her text absent
    status, body = request(
        srv, "POST", "/agui", headers=bearer(token(bob)),
        body=agui_input(thread, "bob here", message_id="m-ada-1"),
    )  # fmt: skip
    assert (status, b"RUN_FINISHED" in body) == (200, True), body[-500:]
    assert secret_text.encode() not in body
    seen = sse_body(srv, {**bearer(token(bob)), "Last-Event-ID": "0"})
    assert b"bob here" in seen
    assert secret_text.encode() not in seen

    @bounded(30)
    async def over_ws() -> None:
        client = await Client.open(srv, bob)
        history = await client.command({"type": "history", "thread": thread, "id": "h"})
        assert secret_text not in json.dumps(history)
        threads = await client.command({"type": "threads", "id": "t"})
        assert secret_text[:20] not in json.dumps(threads)
        await client.close()

    over_ws()


# -- Origin and CSRF ----------------------------------------------------------------------------


def test_foreign_pages_get_no_cors_no_token_and_no_socket(srv: Server) -> None:
    for origin in (
        EVIL,
        "null",
        f"http://127.0.0.1:{srv.port}.evil.example",
        f"http://127.0.0.1:{srv.port + 1}",
    ):
        status, _ = request(
            srv, "OPTIONS", "/agui",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )  # fmt: skip
        assert status == 403, origin
        status, body = request(
            srv, "POST", "/dev/token", headers={"Origin": origin, "Content-Type": "text/plain"},
            body=b'{"user": "mallory"}',
        )  # fmt: skip
        assert (status, b'"token"' in body) == (403, False), (origin, body)
        status, _ = request(
            srv, "POST", "/agui", headers={**bearer(token("ada")), "Origin": origin},
            body=agui_input(),
        )  # fmt: skip
        assert status == 403, origin
    own = f"http://127.0.0.1:{srv.port}"
    status, _ = request(
        srv, "OPTIONS", "/agui", headers={"Origin": own, "Access-Control-Request-Method": "POST"}
    )
    assert status == 204


def login(srv: Server, user: str, headers: dict[str, str]) -> tuple[int, bytes]:
    form = urllib.parse.urlencode({"user": user, "password": PASSWORD}).encode()
    kind = {"Content-Type": "application/x-www-form-urlencoded"}
    lines = ["POST /login HTTP/1.1", f"Host: 127.0.0.1:{srv.port}"]
    lines += [f"{k}: {v}" for k, v in {**kind, **headers}.items()]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(
            "\r\n".join(lines).encode()
            + f"\r\nContent-Length: {len(form)}\r\nConnection: close\r\n\r\n".encode()
            + form
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0]
    return int(head.split(b" ")[1]), head


def test_login_and_logout_csrf_on_the_cookie_example(tmp_path: Path) -> None:
    env = {"NETRA_AUTH": "examples.auth_cookie:authenticate", "NETRA_LOGIN_PASSWORD": PASSWORD}
    srv = UvicornServer(tmp_path, *SAFE_UVICORN, env=env).start()
    try:
        # a foreign page that posts the attacker's name and password: no session cookie set
        for origin in (EVIL, "null"):
            status, head = login(srv, "mallory", {"Origin": origin})
            assert status == 403, head
            assert b"set-cookie" not in head.lower()
            status, head = request(srv, "POST", "/logout", headers={"Origin": origin})
            assert status == 403, head
        # the page itself, and a client without Origin (curl): signed in
        status, head = login(srv, "ada", {"Origin": f"http://127.0.0.1:{srv.port}"})
        assert (status, b"netra_session=" in head) == (303, True), head
        status, head = login(srv, "ada", {})
        assert (status, b"netra_session=" in head) == (303, True), head
        assert (
            request(srv, "POST", "/logout", headers={"Origin": f"http://127.0.0.1:{srv.port}"})[0]
            == 303
        )
    finally:
        srv.stop()


# -- bad input --------------------------------------------------------------------------------


def test_bad_agui_bodies_are_400_or_413_and_the_server_serves_on(srv: Server) -> None:
    auth = {**bearer(token("ada")), "Content-Type": "application/json"}
    bodies = {
        "not json": b"{not json",
        "invalid utf-8": b'{"threadId": "\xff\xfe", "runId": "r", "messages": []}',
        "a lone surrogate": b'{"threadId": "\\ud800", "runId": "r", "messages": []}',
        "an array": b"[]",
        "deep nesting": b'{"threadId": "t", "runId": "r", "messages": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
        "a huge number": b'{"threadId": "t", "runId": "r", "messages": [], "x": 1'
        + b"0" * 5000
        + b"}",
        "an infinite number": b'{"threadId": "t", "runId": "r", "messages": [], "x": 1e999}',
        "NaN": b'{"threadId": "t", "runId": "r", "messages": [], "x": NaN}',
        "empty": b"",
    }
    for why, body in bodies.items():
        status, answer = request(srv, "POST", "/agui", headers=auth, body=body)
        assert status == 400, (why, status, answer[:300])
    status, answer = request(srv, "POST", "/agui", headers=auth, body=b" " * (9 * 1024 * 1024))
    assert status in (0, 413), (status, answer[:300])
    for thread in (
        "../../etc/passwd",
        "%2e%2e%2f",
        "a\x00b",
        "..\\..",
        "a/b",
        "ünïcødé",
        "x" * 129,
        " ",
        "",
    ):
        status, answer = request(srv, "POST", "/agui", headers=auth, body=agui_input(thread))
        assert status == 400, (thread, status, answer[:300])
        quoted = urllib.parse.quote(thread, safe="")
        status, answer = request(srv, "GET", f"/agui/events?threadId={quoted}", headers=auth)
        assert status == 400, (thread, status, answer[:300])
    for last in ("-1", "abc", "1.2.3", "0x10", "1e3", "٣", "1." + "9" * 100, "1.-1"):
        status, answer = request(
            srv, "GET", "/agui/events", headers={**auth, "Last-Event-ID": last}
        )
        assert status == 400, (last, status, answer[:300])
    assert request(srv, "GET", "/healthz")[0] == 200


def test_history_cursor_extremes_over_the_socket(srv: Server) -> None:
    @bounded(30)
    async def scenario() -> None:
        client = await Client.open(srv, new_user())
        for before in (
            1,
            2**62,
            0,
            -1,
            2**62 + 1,
            2**63 - 1,
            2**63,
            2**64,
            -(2**63) - 1,
            1.5,
            "1",
            True,
            None,
        ):
            frame = {"type": "history", "id": "h", "before_seq": before}
            answer = await client.command(frame)
            if before is None or (type(before) is int and before in (1, 2**62)):
                assert answer["type"] == "history", (before, answer)
                assert answer["events"] == []
            else:
                assert (answer["type"], answer.get("code")) == ("error", "bad_request"), (
                    before,
                    answer,
                )
        for limit in (0, -1, 501, 2**64, "10"):
            answer = await client.command({"type": "history", "id": "h", "limit": limit})
            assert (answer["type"], answer.get("code")) == ("error", "bad_request"), (limit, answer)
        for thread in ("../x", "a\x00b", "", "x" * 129):
            answer = await client.command({"type": "history", "id": "h", "thread": thread})
            assert (answer["type"], answer.get("code")) == ("error", "bad_request"), (
                thread,
                answer,
            )
        assert (await client.command({"type": "ping", "id": "p"}))["type"] == "pong"
        await client.close()

    scenario()


# -- traversal --------------------------------------------------------------------------------

TRAVERSALS = [
    "/../../../../etc/passwd",
    "/..%2f..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/_static/../../../../etc/passwd",
    "/_static/index.html",
    "/_static/inspector.html",
    "/index.html/../../../../etc/passwd",
    "/inspector/../../../../etc/passwd",
    "/inspector/..%2f..%2f..%2fetc%2fpasswd",
    "/inspector/api/../../../../../etc/passwd",
    "//etc/passwd",
    "/.%00./etc/passwd",
    "/..\\..\\..\\etc\\passwd",
    "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/static/../netra_actors/_tokens.py",
    "/netra.db",
    "/examples/fastapi_app.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_file_is_served_but_the_pages(srv: Server, path: str) -> None:
    status, body = request(srv, "GET", path)
    # the inspector's API answers 401 to anything under it without the admin token
    assert status in (400, 404) or (status == 401 and path.startswith("/inspector/api/")), (
        path, status, body[:200]
    )  # fmt: skip
    assert b"root:" not in body
    assert b"import" not in body
    assert b"SQLite format" not in body
    status, body = request(srv, "GET", path, headers=bearer(ADMIN))
    assert status in (400, 404), (path, status, body[:200])
    assert b"root:" not in body
    assert b"import" not in body
    assert b"SQLite format" not in body


# -- slowloris under uvicorn, and a reader that never reads -------------------------------------


async def half_sent(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"GET /agui/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    await writer.drain()
    return reader, writer


@pytest.mark.timeout(120)
def test_a_crowd_of_half_sent_heads_under_uvicorn(tmp_path: Path) -> None:
    srv = UvicornServer(tmp_path, *SAFE_UVICORN).start()
    try:

        @bounded(90)
        async def scenario() -> None:
            crowd = []
            for _ in range(300):
                crowd.append(await half_sent(srv.port, "127.0.0.2"))
            started = time.monotonic()
            # a healthy client on 127.0.0.1 meanwhile: the page, a session, a run
            status, _ = await asyncio.to_thread(
                raw, srv.port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}".encode()
            )
            assert status == 200
            peer = Peer(srv.ws_url, new_user("ok"))
            await peer.connect()
            run_id = await peer.say("served despite the crowd")
            await peer.wait_runs_ended([run_id])
            assert peer.runs[run_id] == "completed"

            # every half-sent head is cut at the head timeout (a trickle does not extend it)
            async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
                while True:
                    try:
                        data = await asyncio.wait_for(reader.read(1024), 1.0)
                    except TimeoutError:
                        writer.write(b"x")
                        await writer.drain()
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        return time.monotonic() - started

            times = await asyncio.gather(*(cut(r, w) for r, w in crowd))
            assert max(times) <= HEAD_TIMEOUT + 8, max(times)
            assert await peer.ping() < 5  # the session outlived the crowd
            await peer.close()
            for _r, w in crowd:
                w.close()

        scenario()
    finally:
        srv.stop()


@pytest.mark.timeout(150)
def test_an_sse_reader_that_never_reads_is_released(srv: Server) -> None:
    """A stream its client stopped reading while the user's events pile up: the server gives
    up on it (send timeout, 10 s) and drops the connection — uvicorn included (the example's
    protocol's write deadline), where it was held with its buffers forever."""
    user = new_user("stopped")

    @bounded(100)
    async def scenario() -> None:
        stopped = socket.socket()
        stopped.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stopped.connect(("127.0.0.1", srv.port))
        stopped.sendall(
            f"GET /agui/events HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Authorization: Bearer {token(user)}\r\n\r\n".encode()
        )
        producer = Peer(srv.ws_url, user)
        await producer.connect()
        client_port = stopped.getsockname()[1]
        assert srv.proc is not None
        # The reader reads nothing meanwhile; until the server process no longer holds its end
        # (read before the client reads anything): the buffers fill, then the send timeout.
        # It holds it first (accepted); both are read from /proc, nothing to wait on.
        while not holds_connection(srv.proc.pid, srv.port, client_port):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        started = time.monotonic()
        while holds_connection(srv.proc.pid, srv.port, client_port):
            assert time.monotonic() - started < 60, "still held after 60 s"
            await producer.say("z" * 4000)
            await asyncio.sleep(0.05)
        assert time.monotonic() - started > 5  # dropped by the send timeout, not at once
        assert await producer.ping() < 5
        assert await asyncio.to_thread(server_closed, stopped)
        await producer.close()
        stopped.close()

    scenario()


def holds_connection(pid: int, server_port: int, client_port: int) -> bool:
    """True if process ``pid`` has an open descriptor on its end of the TCP connection
    ``server_port`` <- ``client_port`` (from ``/proc/net/tcp`` and ``/proc/PID/fd``)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == server_port and (
                int(remote.split(":")[1], 16) == client_port
            ):
                inodes.add(f"socket:[{inode}]")
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def server_closed(sock: socket.socket, quiet: float = 3.0) -> bool:
    """Read what the server sent: True if it ends (EOF or a reset), False if the connection is
    still open (nothing more for ``quiet`` seconds)."""
    sock.settimeout(quiet)
    try:
        while sock.recv(1 << 20):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


# -- proxies ----------------------------------------------------------------------------------


def test_dev_sign_in_is_refused_whatever_a_proxy_adds(srv: Server) -> None:
    body, kind = b'{"user": "mallory"}', {"Content-Type": "application/json"}
    assert request(srv, "POST", "/dev/token", headers=kind, body=body)[0] == 200
    port = srv.port
    for headers in (
        {"Via": "1.1 nginx"},
        {"X-Real-IP": "203.0.113.9"},
        {"X-Forwarded-Host": "chat.example.com"},
        {"FORWARDED": "for=203.0.113.9"},
        {"True-Client-IP": "203.0.113.9"},
        {"CF-Connecting-IP": "203.0.113.9"},
    ):
        status, answer = request(srv, "POST", "/dev/token", headers={**kind, **headers}, body=body)
        assert status == 404, (headers, status, answer)
    for host in (
        "chat.example.com", f"localhost.:{port}", f"127.1:{port}", f"localhost:{port}@evil.example",
        f"127.0.0.1:{port}, chat.example.com", f"127.0.0.1:{port + 65536}",
    ):  # fmt: skip
        lines = f"POST /dev/token HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
        status, answer = raw(port, lines.encode(), body)
        assert status in (400, 404), (host, status, answer)
