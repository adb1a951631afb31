"""Helpers of the browser tests of the chat page (a helper module, not a test): Chromium's
arguments, the console and WebSocket recorders, and the steps a person takes on the page (sign in,
say something, start a run) with the checks that follow them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chat_server import CHROMIUM, ChatServer
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    WebSocket,
    expect,
    sync_playwright,
)

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


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium (Debian's, at CHROMIUM)."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser: Browser, width: int, height: int, *, mobile: bool = False) -> Iterator[Page]:
    """A page in a context of its own (its own storage), every wait bounded by WAIT_MS."""
    context = browser.new_context(viewport={"width": width, "height": height}, is_mobile=mobile)
    context.set_default_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


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
    """One WebSocket the page opened: its hello (and ``resume_from``, None when it asked for no
    replay), the welcome's ``head_seq``, the seqs of the events it received live (``event`` and
    ``batch`` frames) and the ``history`` pages it received."""

    def __init__(self) -> None:
        self.resume_from: int | None = None
        self.hello: dict[str, Any] | None = None
        self.head_seq: int | None = None
        self.histories: list[dict[str, Any]] = []
        self.seqs: list[int] = []
        self.commands: list[dict[str, Any]] = []
        self.deltas: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def sent(self, payload: str | bytes) -> None:
        frame = json.loads(payload)
        if frame.get("type") == "hello":
            self.hello = frame
            self.resume_from = frame.get("resume_from")
        elif frame.get("type") != "ping":
            self.commands.append(frame)

    def received(self, payload: str | bytes) -> None:
        frame = json.loads(payload)
        if frame.get("type") == "welcome":
            self.head_seq = frame["head_seq"]
        if frame.get("type") == "history":
            self.histories.append(frame)
        if frame.get("type") == "delta":
            self.deltas.append(frame)
            return
        events = frame.get("events", []) if frame.get("type") == "batch" else [frame]
        events = [e for e in events if e.get("type") == "event"]
        self.seqs += [e["seq"] for e in events]
        self.events += events


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
        """The sockets that got as far as a ``welcome``."""
        return [s for s in self.sockets if s.head_seq is not None]

    def highest_seq(self) -> int:
        return max((seq for s in self.sockets for seq in s.seqs), default=0)

    def commands(self, type: str) -> list[dict[str, Any]]:
        return [c for s in self.sockets for c in s.commands if c.get("type") == type]

    def deltas(self, message_id: str) -> list[dict[str, Any]]:
        return [d for s in self.sockets for d in s.deltas if d["message_id"] == message_id]

    def committed_text(self, message_id: str) -> str:
        texts = [
            e["data"]["text"]
            for s in self.sockets
            for e in s.events
            if e["event"] == "message" and e["data"].get("message_id") == message_id
        ]
        assert texts, f"no committed message {message_id}"
        return str(texts[-1])

    def assert_exact(self) -> None:
        """Every socket got exactly base+1, base+2, ... live (no gap, no repeat), where base is
        its ``resume_from`` or, for a hello without one, the welcome's ``head_seq``."""
        for sock in self.welcomed:
            base = sock.resume_from if sock.resume_from is not None else sock.head_seq
            assert base is not None
            expected = list(range(base + 1, base + 1 + len(sock.seqs)))
            assert sock.seqs == expected, f"from {base}: got {sock.seqs}"


# ------------------------------------------------------------------ helpers


def sign_in(page: Page, server: ChatServer | str, user: str) -> None:
    """Sign in by name (development sign-in) at the server's page (its URL, or a ChatServer)."""
    page.goto(server if isinstance(server, str) else server.url)
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
        ".msg-user, .msg-assistant:not(.retracted), .tool-name",
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
