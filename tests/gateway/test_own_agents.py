"""``netra-actors serve --agents MODULE:ATTRIBUTE --default-agent NAME`` and the ASGI adapter's
``agents``: your agents are served (the demo ones are not), ``GET /agents`` and the page offer
them, and a bad ``--agents`` is one line and exit status 2 — real processes, real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gwkit import ROOT, SECRET, Client, Server, UvicornServer, run_async

OWN = "tests.gateway.own_agents"


def check_served(srv: Server, default: str) -> None:
    """``GET /agents`` lists the test module's agents (no demo agent) and the page has no
    hard-coded list; a ``say`` runs the default, the demo agents are unknown."""
    status, doc = srv.get_json("/agents")
    assert status == 200
    assert doc["default"] == default
    assert [a["name"] for a in doc["agents"]] == ["greet", "shout"]
    greet = doc["agents"][0]
    assert greet == {
        "name": "greet",
        "description": "Greets whoever its input names.",
        "example_input": {"who": "world"},
    }
    assert "example_input" not in doc["agents"][1]  # shout declares none
    status, page = srv.get("/")
    assert status == 200
    assert b'<option value="crashy"' not in page

    @run_async
    async def scenario() -> None:
        client = await Client.open(srv, "olga")
        run_id = await client.say("quiet please")
        assert await client.wait_run_end(run_id) == "completed"
        said = [e["data"]["text"] for e in client.run_events(run_id) if e["event"] == "message"]
        expected = "QUIET PLEASE" if default == "shout" else "Hello, quiet please!"
        assert said[-1] == expected
        run_id = await client.start("greet", {"who": "Ada"})
        assert await client.wait_run_end(run_id) == "completed"
        answer = await client.command({"type": "start_run", "agent": "demo", "input": "x"})
        assert answer["type"] == "error"
        assert answer["code"] == "unknown_agent"
        await client.close()


def test_serve_serves_your_agents_and_not_the_demo_ones(tmp_path: Path) -> None:
    srv = Server(tmp_path, "--agents", f"{OWN}:AGENTS", "--default-agent", "shout").start()
    try:
        check_served(srv, "shout")
        assert "agents:     greet, shout (default)" in srv.out_path.read_text()
    finally:
        srv.stop()


def test_the_fastapi_example_serves_its_own_agents(tmp_path: Path) -> None:
    env = {"NETRA_AGENTS": f"{OWN}:AGENTS", "NETRA_DEFAULT_AGENT": "greet"}
    srv = UvicornServer(tmp_path, env=env).start()
    try:
        check_served(srv, "greet")
    finally:
        srv.stop()


def test_a_callable_and_several_specs_are_one_list(tmp_path: Path) -> None:
    srv = Server(tmp_path, "--agents", f"{OWN}:make_agents", "--agents", f"{OWN}:GREET_ONLY")
    srv.start()
    try:
        _status, doc = srv.get_json("/agents")
        assert [a["name"] for a in doc["agents"]] == ["shout", "greet"]
        assert doc["default"] == "shout"  # the first one
    finally:
        srv.stop()


def test_without_agents_the_demo_agents_are_served(tmp_path: Path) -> None:
    srv = Server(tmp_path).start()
    try:
        _, doc = srv.get_json("/agents")
        assert [a["name"] for a in doc["agents"]] == ["demo", "crashy", "slow", "ask", "browser"]
        assert doc["default"] == "demo"
        assert doc["sign_in"] == "token"
        assert doc["agents"][2]["example_input"] == {"seconds": 5}
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([f"--agents={OWN}_missing:AGENTS"], f"no module named '{OWN}_missing'"),
        ([f"--agents={OWN}:MISSING"], "has no attribute 'MISSING'"),
        ([f"--agents={OWN}:NOT_AGENTS"], "is not an agent class"),
        ([f"--agents={OWN}:ONE_STRING"], "expected a list of agent classes"),
        ([f"--agents={OWN}:broken_factory"], "calling it failed: RuntimeError: no agents today"),
        ([f"--agents={OWN}:SAME_NAME"], "two agents are named 'greet'"),
        ([f"--agents={OWN}:AGENTS", "--default-agent=demo"], "not among the agents served"),
        (
            ["--default-agent=nobody"],
            "not among the agents served (demo, crashy, slow, ask, browser)",
        ),
        (["--agents=no_colon"], "expected MODULE:ATTRIBUTE"),
        (["--auth=examples.auth_jwt:missing"], "has no attribute 'missing'"),
        ([f"--auth={OWN}:ONE_STRING"], "expected a sign-in function"),
    ],
)
def test_a_bad_agents_or_auth_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], says: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netra_actors._cli", "serve", "--port", "0", "--secret", SECRET,
         "--db", str(tmp_path / "x.db"), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**_env(), "NETRA_HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("netra-actors serve: error: "), lines
    assert says in lines[0], lines
    assert not (tmp_path / "x.db").exists()  # refused before anything started


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "NETRA_SECRET"}


def test_the_page_builds_its_menu_from_get_agents() -> None:
    page = (ROOT / "netra_actors" / "_static" / "index.html").read_text()
    assert 'fetch("/agents"' in page
    assert '<option value="demo">' not in page  # no hard-coded list
    assert json.dumps("crashy") not in page
