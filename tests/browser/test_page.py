"""End-to-end: the example chat page in headless Chromium against ``netra-actors serve``.

A newcomer's path through the page: sign in, chat and watch the run (tool call, answer), reload and
find the history, watch a crashing run roll back and recover, cancel a slow run, and keep chatting
across a server restart while the page reconnects by itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_server import ChatServer, free_port

CHROMIUM = Path("/usr/bin/chromium")

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing (install it with 'apt-get install -y chromium')",
        allow_module_level=True,
    )
try:
    from playwright.sync_api import (
        Browser,
        ConsoleMessage,
        Dialog,
        Locator,
        Page,
        WebSocket,
        expect,
        sync_playwright,
    )
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip(
        "the playwright package is not importable (pip install -e '.[dev]')",
        allow_module_level=True,
    )

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000
"""Every wait in the page is bounded by this."""

#: Console errors Chromium prints by itself when a socket drops or a server is down.
EXPECTED_NOISE = re.compile(
    r"WebSocket connection to .* failed|Failed to load resource: net::ERR_CONNECTION_REFUSED"
)


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """One example server for the module; each test may stop and restart it."""
    tmp = tmp_path_factory.mktemp("chat-server")
    server = ChatServer(port=free_port(), db=tmp / "chat.db", log=tmp / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """Collects the page's console errors and uncaught exceptions."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(msg.text)

    def unexpected(self, allow: re.Pattern[str] = EXPECTED_NOISE) -> list[str]:
        return [e for e in self.errors if not allow.search(e)]


class Socket:
    """One WebSocket the page opened: the ``resume_from`` of its hello, the seqs it received."""

    def __init__(self) -> None:
        self.resume_from: int | None = None
        self.seqs: list[int] = []

    def sent(self, payload: str | bytes) -> None:
        frame = json.loads(payload)
        if frame.get("type") == "hello":
            self.resume_from = frame.get("resume_from")

    def received(self, payload: str | bytes) -> None:
        frame = json.loads(payload)
        events = frame.get("events", []) if frame.get("type") == "batch" else [frame]
        self.seqs += [e["seq"] for e in events if e.get("type") == "event"]


class Wire:
    """Records the page's WebSocket traffic, to check what the page asks for and receives."""

    def __init__(self, page: Page) -> None:
        self.sockets: list[Socket] = []
        page.on("websocket", self._on_socket)

    def _on_socket(self, ws: WebSocket) -> None:
        sock = Socket()
        self.sockets.append(sock)
        ws.on("framesent", sock.sent)
        ws.on("framereceived", sock.received)

    @property
    def welcomed(self) -> list[Socket]:
        """The sockets that got as far as sending ``hello``."""
        return [s for s in self.sockets if s.resume_from is not None]

    def highest_seq(self) -> int:
        return max((seq for s in self.sockets for seq in s.seqs), default=0)

    def assert_exact(self) -> None:
        """Every socket got exactly resume_from+1, resume_from+2, ... (no gap, no repeat)."""
        for sock in self.welcomed:
            assert sock.resume_from is not None
            expected = list(range(sock.resume_from + 1, sock.resume_from + 1 + len(sock.seqs)))
            assert sock.seqs == expected, f"resume_from={sock.resume_from}: got {sock.seqs}"


@pytest.fixture
def page(browser: Browser, chat_server: ChatServer) -> Iterator[Page]:
    chat_server.ensure_running()
    context = browser.new_context(viewport={"width": 900, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


# ------------------------------------------------------------------ helpers


def sign_in(page: Page, server: ChatServer, user: str) -> None:
    page.goto(server.url)
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#signin-name", user)
    page.click("#signin-button")
    expect_live(page)
    expect(page.locator("#who-name")).to_have_text(user)


def expect_live(page: Page) -> None:
    expect(page.locator("#status")).to_have_attribute("data-status", "live", timeout=WAIT_MS)


def run_card(page: Page, run_id: str) -> Locator:
    return page.locator(f'article.run[data-run-id="{run_id}"]')


def new_run_id(page: Page, before: set[str]) -> str:
    """The id of the run card that appears after ``before`` was taken (bounded wait)."""
    handle = page.wait_for_function(
        """(before) => {
            const ids = [...document.querySelectorAll("article.run")].map(e => e.dataset.runId);
            return ids.find(id => !before.includes(id)) || null;
        }""",
        arg=sorted(before),
        timeout=WAIT_MS,
    )
    run_id = handle.json_value()
    assert isinstance(run_id, str)
    return run_id


def run_ids(page: Page) -> set[str]:
    ids = page.eval_on_selector_all("article.run", "els => els.map(e => e.dataset.runId)")
    return set(ids)


def say(page: Page, text: str) -> Locator:
    """Send a chat message and return the card of the run it started."""
    before = run_ids(page)
    page.fill("#say-input", text)
    page.press("#say-input", "Enter")
    card = run_card(page, new_run_id(page, before))
    expect(card.locator(".msg-user")).to_have_text(text)
    return card


def start_run(page: Page, agent: str, payload: object) -> Locator:
    before = run_ids(page)
    runner = page.locator("#runner")
    if runner.get_attribute("open") is None:
        runner.locator("summary").click()
    page.select_option("#run-agent", agent)
    page.fill("#run-input", json.dumps(payload))
    page.click("#run-button")
    card = run_card(page, new_run_id(page, before))
    expect(card.locator(".run-agent")).to_have_text(agent)
    return card


def expect_demo_answer(card: Locator, *, total: str) -> None:
    expect(card).to_have_attribute("data-state", "completed")
    tool = card.locator(".tool")
    expect(tool).to_have_count(1)
    expect(tool.locator(".tool-name")).to_have_text("word_stats")
    expect(tool.locator(".tool-args")).to_contain_text('"text"')
    expect(tool.locator(".tool-result")).to_contain_text(f'"sum": {total}')
    expect(card.locator(".msg-assistant")).to_contain_text(f"add up to {total}")
    expect(card.locator(".trail")).to_have_text(
        "pending → starting → running → completing → completed"
    )


def transcript(page: Page) -> list[str]:
    """Every chat bubble and tool name, in page order."""
    items: list[str] = page.eval_on_selector_all(
        ".msg-user, .msg-assistant, .tool-name",
        """els => els.map(e => {
            const kind = e.classList.contains("tool-name") ? "tool"
                : e.classList.contains("msg-user") ? "user" : "assistant";
            return kind + "|" + e.textContent;
        })""",
    )
    return items


def assert_no_duplicate_events(page: Page) -> None:
    seqs: list[str] = page.eval_on_selector_all(
        "#timeline [data-seq]", "els => els.map(e => e.dataset.seq)"
    )
    assert len(seqs) == len(set(seqs)), f"an event is shown twice: {sorted(seqs, key=int)}"


# ------------------------------------------------------------------ tests


def test_chat_reload_rollback_cancel_and_restart(
    page: Page, chat_server: ChatServer, tmp_path: Path
) -> None:
    console = Console(page)
    wire = Wire(page)
    try:
        # Sign in by name (local development sign-in) and chat.
        sign_in(page, chat_server, "alice")
        assert [s.resume_from for s in wire.welcomed] == [0]
        expect(page.locator("#empty")).to_be_visible()
        first = say(page, "Add 2 and 40, please.")
        expect_demo_answer(first, total="42")

        # Reload: still signed in, the whole history replays, nothing twice.
        history = transcript(page)
        cards = run_ids(page)
        page.reload()
        expect_live(page)
        assert [s.resume_from for s in wire.welcomed] == [0, 0], "a reload replays everything"
        for run_id in cards:
            expect(run_card(page, run_id)).to_have_attribute("data-state", "completed")
        expect_demo_answer(run_card(page, next(iter(cards))), total="42")
        assert run_ids(page) == cards
        assert transcript(page) == history
        assert_no_duplicate_events(page)

        # A crashing run: two rollbacks that restart, then it completes.
        crashy = start_run(page, "crashy", {"crash_times": 2})
        expect(crashy).to_have_attribute("data-state", "completed")
        rollbacks = crashy.locator(".rollback")
        expect(rollbacks).to_have_count(2)
        for i in range(2):
            notice = rollbacks.nth(i)
            expect(notice).to_have_attribute("data-reason", "crash")
            expect(notice).to_have_attribute("data-will-restart", "true")
            expect(notice).to_contain_text(f"attempt {i + 1}")
            expect(notice.locator(".err")).to_contain_text("crashed on purpose")
        expect(crashy.locator(".msg-assistant")).to_contain_text("Succeeded on attempt 3")
        expect(crashy.locator("button.cancel")).to_be_hidden()

        # A slow run, cancelled from its card.
        slow = start_run(page, "slow", {"seconds": 60})
        expect(slow).to_have_attribute("data-state", "running")
        expect(slow.locator(".thinking").first).to_contain_text("Working")
        slow.locator("button.cancel").click()
        expect(slow).to_have_attribute("data-state", "cancelled")
        expect(slow.locator(".rollback[data-reason=cancelled]")).to_have_count(1)
        expect(slow.locator("button.cancel")).to_be_hidden()

        # Restart the server on the same port and database: the page reconnects by itself.
        before_restart = transcript(page)
        held = wire.highest_seq()
        chat_server.stop()
        expect(page.locator("#status")).not_to_have_attribute("data-status", "live")
        expect(page.locator("#say-button")).to_be_disabled()
        chat_server.start()
        expect_live(page)
        assert wire.welcomed[-1].resume_from == held, "resumes from the highest seq it holds"
        second = say(page, "Now 3 plus 4, after the restart.")
        expect_demo_answer(second, total="7")
        assert transcript(page)[: len(before_restart)] == before_restart
        assert_no_duplicate_events(page)
        wire.assert_exact()
    finally:
        page.screenshot(path=str(tmp_path / "chat.png"), full_page=False)

    assert console.unexpected() == [], console.errors


def test_token_paste_when_dev_sign_in_is_off(page: Page, chat_server: ChatServer) -> None:
    # A server without development sign-in answers /dev/token with 404: the page asks for a token.
    page.route("**/dev/token", lambda route: route.fulfill(status=404, body="not here"))
    console = Console(page)
    page.goto(chat_server.url)
    page.fill("#signin-name", "bob")
    page.click("#signin-button")
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#token-why")).to_contain_text("netra-actors token bob")
    page.fill("#token-input", chat_server.token("bob"))
    page.locator("#token-form button[type=submit]").click()
    expect_live(page)
    expect(page.locator("#who-name")).to_have_text("bob")
    expect(page.locator("#empty")).to_be_visible()  # alice's history is not bob's

    # A token the server refuses (4401) sends the page back to sign-in with an explanation.
    page.evaluate(
        """() => localStorage.setItem("netra_actors.session",
               JSON.stringify({user: "bob", token: "not-a-token"}))"""
    )
    page.reload()
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#signin-error")).to_contain_text("sign in again")
    expect(page.locator("#status")).to_have_attribute("data-status", "signed-out")
    expect(page.locator("#signin-name")).to_have_value("bob")

    noise = re.compile(EXPECTED_NOISE.pattern + r"|status of 404")
    assert console.unexpected(noise) == [], console.errors


def test_page_escapes_text(page: Page, chat_server: ChatServer) -> None:
    console = Console(page)
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    sign_in(page, chat_server, "mallory <img src=x onerror=alert(1)>")
    card = say(page, "<b>bold</b> & <script>alert(1)</script>")
    expect(card).to_have_attribute("data-state", "completed")
    assert page.locator("#timeline b, #timeline script, #timeline img").count() == 0
    expect(page.locator("#who-name")).to_have_text("mallory <img src=x onerror=alert(1)>")
    assert dialogs == [], "text was parsed as HTML"
    assert console.unexpected() == [], console.errors


def test_command_error_is_shown_next_to_its_command(page: Page, chat_server: ChatServer) -> None:
    console = Console(page)
    sign_in(page, chat_server, "carol")
    # The selector only offers known agents; add one the server does not have.
    page.eval_on_selector("#run-agent", "el => el.add(new Option('nope', 'nope'))")
    page.locator("#runner summary").click()
    page.select_option("#run-agent", "nope")
    page.fill("#run-input", "{}")
    page.click("#run-button")
    failed = page.locator("#timeline li.pending-cmd")
    expect(failed.locator(".pending-status")).to_contain_text("unknown_agent")
    expect(page.locator("article.run")).to_have_count(0)
    # Invalid JSON never leaves the page.
    page.fill("#run-input", "{not json")
    page.click("#run-button")
    expect(page.locator("#run-hint")).to_contain_text("not valid JSON")
    # The connection stays usable.
    card = say(page, "still here 1")
    expect(card).to_have_attribute("data-state", "completed")
    assert console.unexpected() == [], console.errors
