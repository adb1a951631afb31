"""End-to-end: the inspector page in headless Chromium against ``netra-actors serve``.

The server runs with an admin token on a temporary SQLite file; a WebSocket client (the gateway
tests' own, on ``websockets``) makes a demo run, a ``crashy`` run that crashes twice and an
``ask`` run left waiting. The page is opened, signed in with the admin token, and must show the
users, the runs and the crashy run's timeline (3 attempts, 2 rollbacks). Screenshots are saved in
the test's tmp dir and copied to ``$NETRA_INSPECTOR_SHOTS`` (default ``/work/wt/inspector-shots``)
when that directory can be made.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from gwkit import Client, Server, event_is, run_async

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing (install it with 'apt-get install -y chromium')",
        allow_module_level=True,
    )
try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("the playwright package is not importable", allow_module_level=True)

pytestmark = pytest.mark.browser

ADMIN = "inspector-admin-token-0123456789"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 15_000
SHOTS = Path(os.environ.get("NETRA_INSPECTOR_SHOTS", "/work/wt/inspector-shots"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("inspector"), "--admin-token", ADMIN)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@run_async
async def make_runs(server: Server) -> dict[str, str]:
    """alice: a demo run, a crashy run (2 crashes), an ask run left waiting; bob: a demo run."""
    alice = await Client.open(server, "alice")
    demo = await alice.say("three numbers: 1 2 3")
    assert await alice.wait_run_end(demo) == "completed"
    crashy = await alice.start("crashy", {"crash_times": 2})
    assert await alice.wait_run_end(crashy, within=30) == "completed"
    ask = await alice.start("ask", "Which colour?")
    await alice.wait_for(event_is(ask, "input_requested"))
    bob = await Client.open(server, "bob")
    bob_run = await bob.say("hello")
    assert await bob.wait_run_end(bob_run) == "completed"
    return {"demo": demo, "crashy": crashy, "ask": ask}


def shoot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
    except OSError:  # only a convenience for people looking at the pictures
        pass


def test_the_inspector_shows_users_runs_and_a_crashy_timeline(
    server: Server, tmp_path: Path
) -> None:
    runs = make_runs(server)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.http + "/inspector")
            expect(page.locator("#signin")).to_be_visible(timeout=WAIT_MS)
            shoot(page, tmp_path, "1-signin")

            page.fill("#token", "not-the-admin-token-at-all")
            page.click("#signin button")
            expect(page.locator("#signin-error")).to_contain_text("refused", timeout=WAIT_MS)

            page.fill("#token", ADMIN)
            page.click("#signin button")
            users = page.locator("#user-rows tr")
            expect(users.filter(has_text="alice")).to_have_count(1, timeout=WAIT_MS)
            expect(users.filter(has_text="bob")).to_have_count(1)
            expect(page.locator("#nodes .node")).to_have_count(1)
            expect(page.locator("#nodes .node")).to_contain_text("this node")

            users.filter(has_text="alice").click()
            run_rows = page.locator("#run-rows tr")
            expect(run_rows).to_have_count(3, timeout=WAIT_MS)
            expect(run_rows.filter(has_text="crashy")).to_contain_text("completed")
            expect(run_rows.filter(has_text="ask")).to_contain_text("running")
            shoot(page, tmp_path, "2-overview")

            page.locator(f'#run-rows tr[data-run="{runs["crashy"]}"]').click()
            timeline = page.locator("#timeline svg")
            expect(timeline.locator("rect[data-attempt]")).to_have_count(3, timeout=WAIT_MS)
            expect(timeline.locator("[data-rollback]")).to_have_count(2)
            expect(timeline.locator(".bar-completed")).to_have_count(1)
            expect(page.locator("#run-head-info")).to_contain_text("rollbacks 2")
            expect(page.locator("#event-rows")).to_contain_text("run_rolled_back")
            shoot(page, tmp_path, "3-crashy-run")

            page.locator(f'#run-rows tr[data-run="{runs["demo"]}"]').click()
            expect(timeline.locator('[data-tool="word_stats"]')).to_have_count(1, timeout=WAIT_MS)
            shoot(page, tmp_path, "4-demo-run")

            page.locator(f'#run-rows tr[data-run="{runs["ask"]}"]').click()
            expect(timeline.locator(".bar-waiting")).to_have_count(1, timeout=WAIT_MS)
            shoot(page, tmp_path, "5-ask-waiting")

            page.reload()  # the token is kept for the tab; the selection in the address
            expect(timeline.locator(".bar-waiting")).to_have_count(1, timeout=WAIT_MS)
            assert errors == []
        finally:
            browser.close()
