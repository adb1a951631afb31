"""Your own sign-in (``--auth MODULE:CALLABLE``, the adapter's ``auth``), over real processes and
sockets: the JWT example on both servers (the WebSocket signed in by its upgrade request, AG-UI
by ``Authorization``), the cookie example under uvicorn (its login route sets the cookie; the
page's socket and AG-UI then need nothing else), one user's credential never reaching another's
events, and development sign-in never served through a proxy."""

from __future__ import annotations

import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from aguikit import Stream, run_input
from gwkit import Client, Server, UvicornServer, run_async, token
from websockets.asyncio.client import connect

JWT_SECRET = "jwt-test-secret-0123456789abcdef"
JWT_AUTH = "examples.auth_jwt:authenticate"


def a_jwt(sub: str, *, ttl: float = 600.0, secret: str = JWT_SECRET) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl)}, secret, algorithm="HS256")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.fixture(params=["gateway", "asgi"])
def jwt_server(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    """A server signing in with the JWT example: ``netra-actors serve --auth`` or uvicorn."""
    monkeypatch.setenv("NETRA_JWT_SECRET", JWT_SECRET)
    srv: Server
    if request.param == "gateway":
        srv = Server(tmp_path, "--auth", JWT_AUTH)
    else:
        srv = UvicornServer(tmp_path, env={"NETRA_AUTH": JWT_AUTH})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def open_socket(srv: Server, headers: dict[str, str], hello: dict[str, object]) -> Client:
    """A socket whose upgrade request carries ``headers``; ``hello`` sent, nothing read yet."""
    ws = await connect(srv.ws_url, open_timeout=10, close_timeout=2, additional_headers=headers)
    client = Client(ws)
    await client.send({"type": "hello", "protocol": 1, **hello})
    return client


def user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def test_jwt_signs_the_socket_in_by_its_upgrade_request(jwt_server: Server) -> None:
    ada, bob = user(), user()

    @run_async
    async def scenario() -> None:
        client = await open_socket(jwt_server, bearer(a_jwt(ada)), {})
        welcome = await client.next_frame()
        assert welcome["type"] == "welcome"
        assert welcome["user_id"] == ada
        run_id = await client.say("hi 1 2")
        assert await client.wait_run_end(run_id) == "completed"
        await client.close()
        # a netra token of the same user in hello too: fine
        client = await open_socket(jwt_server, bearer(a_jwt(ada)), {"token": token(ada)})
        assert (await client.next_frame())["user_id"] == ada
        await client.close()
        # ... of another user: refused, whichever way round
        client = await open_socket(jwt_server, bearer(a_jwt(ada)), {"token": token(bob)})
        assert await client.closed() == 4401
        for credential in (a_jwt(ada, ttl=-5), a_jwt(ada, secret="another-secret-0123456789ab"),
                           a_jwt(ada)[:-3] + "AAA"):  # fmt: skip
            client = await open_socket(jwt_server, bearer(credential), {"token": token(ada)})
            assert await client.closed() == 4401, credential  # refused: no token helps
        # no credential of the sign-in function: netra's own tokens, as without --auth
        client = await open_socket(jwt_server, {}, {"token": token(bob)})
        assert (await client.next_frame())["user_id"] == bob
        await client.close()
        client = await open_socket(jwt_server, {}, {})
        assert await client.closed() == 4401


def test_jwt_signs_agui_in_and_never_reaches_another_users_events(jwt_server: Server) -> None:
    ada, bob = user(), user()

    @run_async
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            for credential in (a_jwt(ada, ttl=-5), a_jwt(ada, secret="x" * 32), "a.b.c"):
                answer = await http.post(
                    jwt_server.http + "/agui", json=run_input(), headers=bearer(credential)
                )
                assert answer.status_code == 401, answer.text
                answer = await http.get(
                    jwt_server.http + "/agui/events", headers=bearer(credential)
                )
                assert answer.status_code == 401, answer.text
        # Ada follows her events with her JWT; Bob's run (his JWT) never shows there
        async with await Stream.open(
            jwt_server, "GET", "/agui/events", headers=bearer(a_jwt(ada))
        ) as follow:
            async with await Stream.open(
                jwt_server, "POST", "/agui", headers=bearer(a_jwt(bob)), body=run_input("bob 1")
            ) as bobs:
                finished = await bobs.until(lambda f: f.type == "RUN_FINISHED")
                assert finished.type == "RUN_FINISHED"
            await follow.quiet(1.0)
            async with await Stream.open(
                jwt_server, "POST", "/agui", headers=bearer(a_jwt(ada)), body=run_input("ada 2")
            ) as adas:
                await adas.until(lambda f: f.type == "RUN_FINISHED")
            started = await follow.until(lambda f: f.type == "RUN_STARTED")
            assert started.type == "RUN_STARTED"
            texts = [f.event.get("delta", "") for f in follow.frames]
            assert not any("bob" in t for t in texts if isinstance(t, str))

        client = await open_socket(jwt_server, bearer(a_jwt(bob)), {"resume_from": 0})
        assert (await client.next_frame())["user_id"] == bob
        await client.say("one more")
        await asyncio_sleep(1.0)
        assert {e["data"].get("text") for e in client.events if e["event"] == "message"} >= {
            "bob 1", "one more"
        }  # fmt: skip
        assert all("ada" not in str(e["data"].get("text")) for e in client.events)
        await client.close()


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_with_auth_development_sign_in_is_off_unless_asked(jwt_server: Server) -> None:
    status, _ = jwt_server.get(
        "/dev/token", method="POST", body=b'{"user": "x"}',
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 404
    _, doc = jwt_server.get_json("/agents")
    assert doc["sign_in"] == "app"
    assert doc["dev_tokens"] is False


# -- the cookie session of the FastAPI example ----------------------------------------------


def test_the_cookie_example_signs_the_page_socket_and_agui_in(tmp_path: Path) -> None:
    env = {"NETRA_AUTH": "examples.auth_cookie:authenticate", "NETRA_LOGIN_PASSWORD": "open sesame"}
    srv = UvicornServer(tmp_path, env=env).start()
    ada = user()
    try:

        @run_async
        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=srv.http, timeout=10) as http:
                form = urllib.parse.urlencode({"user": ada, "password": "wrong"})
                kind = {"Content-Type": "application/x-www-form-urlencoded"}
                assert (await http.post("/login", content=form, headers=kind)).status_code == 401
                form = urllib.parse.urlencode({"user": ada, "password": "open sesame"})
                login = await http.post("/login", content=form, headers=kind)
                assert login.status_code == 303, login.text
                assert "httponly" in login.headers["set-cookie"].lower()
                cookie = http.cookies["netra_session"]
                assert (await http.get("/")).status_code == 200
            headers = {"Cookie": f"netra_session={cookie}"}
            client = await open_socket(srv, headers, {})  # no token: the cookie signs it in
            assert (await client.next_frame())["user_id"] == ada
            run_id = await client.say("by cookie 1 2")
            assert await client.wait_run_end(run_id) == "completed"
            await client.close()
            async with await Stream.open(
                srv, "POST", "/agui", headers=headers, body=run_input("agui by cookie")
            ) as stream:
                await stream.until(lambda f: f.type == "RUN_FINISHED")
            forged = {"Cookie": f"netra_session={cookie[:-4]}AAAA"}
            client = await open_socket(srv, forged, {})
            assert await client.closed() == 4401
            async with httpx.AsyncClient(base_url=srv.http, timeout=10) as http:
                answer = await http.post("/agui", json=run_input(), headers=forged)
                assert answer.status_code == 401
                answer = await http.get("/agui/events", headers=forged)
                assert answer.status_code == 401
    finally:
        srv.stop()


# -- development sign-in never through a proxy --------------------------------------------


@pytest.mark.parametrize("kind", ["gateway", "asgi"])
def test_dev_sign_in_is_refused_to_proxied_requests(tmp_path: Path, kind: str) -> None:
    srv = Server(tmp_path) if kind == "gateway" else UvicornServer(tmp_path)
    srv.start()
    body, json_kind = b'{"user": "mallory"}', {"Content-Type": "application/json"}
    try:
        status, answer = srv.get("/dev/token", method="POST", body=body, headers=json_kind)
        assert status == 200, answer  # on the machine itself: on
        for headers in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"X-Forwarded-Proto": "https"},
            {"Forwarded": "for=203.0.113.9;proto=https"},
            {"Host": "chat.example.com"},
            {"Host": f"localhost:{srv.port + 1}"},
        ):
            status, answer = srv.get(
                "/dev/token", method="POST", body=body, headers={**json_kind, **headers}
            )
            assert status == 404, (headers, status, answer)
            assert b"token" not in answer
    finally:
        srv.stop()
