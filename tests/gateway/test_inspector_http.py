"""The inspector's HTTP answers on both servers (``netra-actors serve`` and the ASGI adapter under
uvicorn): the admin credential, and nothing without it; a user's token is never enough."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from gwkit import Client, Server, UvicornServer, run_async, token

ADMIN = "admin-token-for-the-inspector-tests"


@pytest.fixture(scope="module", params=["gateway", "asgi"])
def admin_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"inspector-{request.param}")
    if request.param == "gateway":
        srv: Server = Server(tmp, "--admin-token", ADMIN)
    else:
        srv = UvicornServer(tmp, env={"NETRA_ADMIN_TOKEN": ADMIN})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def fetch(
    server: Server, path: str, bearer: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], Any]:
    headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
    req = urllib.request.Request(server.http + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status, head, body = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, head, body = exc.code, dict(exc.headers), exc.read()
    head = {k.lower(): v for k, v in head.items()}
    if head.get("content-type", "").startswith("application/json"):
        return status, head, json.loads(body)
    return status, head, body


@run_async
async def two_runs(server: Server, user: str) -> tuple[str, str]:
    client = await Client.open(server, user)
    demo = await client.say("1 2 3")
    assert await client.wait_run_end(demo) == "completed"
    crashy = await client.start("crashy", {"crash_times": 1})
    assert await client.wait_run_end(crashy) == "completed"
    return demo, crashy


def test_the_api_answers_only_the_admin_token(admin_server: Server) -> None:
    demo, crashy = two_runs(admin_server, "insp-alice")
    status, head, body = fetch(admin_server, "/inspector")  # the page itself holds no data
    assert status == 200
    assert b"inspector" in body
    assert "frame-ancestors 'none'" in head["content-security-policy"]
    for bearer in (None, token("insp-alice"), ADMIN + "x", ADMIN[:-1], f"{ADMIN} {ADMIN}"):
        status, head, body = fetch(admin_server, "/inspector/api/overview", bearer)
        assert status == 401, bearer
        assert head["www-authenticate"].startswith("Bearer")
        assert "users" not in body
    status, _, body = fetch(
        admin_server, "/inspector/api/runs?user=insp-alice", token("insp-alice")
    )
    assert status == 401  # a user's token does not show even their own runs here

    status, head, overview = fetch(admin_server, "/inspector/api/overview", ADMIN)
    assert status == 200
    assert head["cache-control"] == "no-store"
    assert "insp-alice" in [u["user_id"] for u in overview["users"]]
    assert len(overview["users"]) <= overview["limits"]["users"]
    assert overview["this_node"]["node"] in [n["node"] for n in overview["nodes"]]

    status, _, runs = fetch(admin_server, "/inspector/api/runs?user=insp-alice", ADMIN)
    assert status == 200
    assert {r["run_id"] for r in runs["runs"]} == {demo, crashy}
    status, _, run = fetch(admin_server, f"/inspector/api/run?user=insp-alice&run={crashy}", ADMIN)
    assert status == 200
    assert [a["outcome"] for a in run["attempts"]] == ["rolled_back", "completed"]
    assert run["attempts"][0]["rollback"]["reason"] == "crash"
    status, _, run = fetch(admin_server, f"/inspector/api/run?user=insp-alice&run={demo}", ADMIN)
    assert [t["tool"] for t in run["attempts"][0]["tools"]] == ["word_stats"]


def test_bad_requests_are_refused(admin_server: Server) -> None:
    demo, _ = two_runs(admin_server, "insp-bob")
    # a run is found only under its own user
    assert fetch(admin_server, f"/inspector/api/run?user=insp-other&run={demo}", ADMIN)[0] == 404
    assert fetch(admin_server, "/inspector/api/runs", ADMIN)[0] == 400
    assert fetch(admin_server, "/inspector/api/run?user=insp-bob", ADMIN)[0] == 400
    assert fetch(admin_server, "/inspector/api/runs?user=" + "u" * 300, ADMIN)[0] == 400
    assert fetch(admin_server, "/inspector/api/nothing?user=x", ADMIN)[0] == 404
    assert fetch(admin_server, "/inspector/api/overview", ADMIN, method="POST")[0] == 405


def test_without_an_admin_token_there_is_no_inspector(server: Server) -> None:
    for path in ("/inspector", "/inspector/api/overview", "/inspector/api/runs?user=a"):
        assert fetch(server, path, "anything-at-all-0123456789")[0] == 404
