"""End-to-end: the example chat page in headless Chromium against ``netra-actors serve``.

A newcomer's path through the page: sign in, chat and watch the run (tool call, answer), reload and
find the history, watch a crashing run roll back and recover, cancel a slow run, and keep chatting
across a server restart while the page reconnects by itself (also served by the FastAPI example
under uvicorn). Then the additions: streamed
(provisional) text that the committed message supersedes, text retracted by a rollback, a question
from the ``ask`` agent answered in its card (also across a reload, also mid-stream), and the
busy-policy choice sent as ``if_busy``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chat_server import CHROMIUM, ChatServer, UvicornChatServer, free_port

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing (install it with 'apt-get install -y chromium')",
        allow_module_level=True,
    )
try:
    from playwright.sync_api import (
        Browser,
        Dialog,
        Locator,
        Page,
        WebSocketRoute,
        expect,
    )
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip(
        "the playwright package is not importable (pip install -e '.[dev]')",
        allow_module_level=True,
    )

from pagekit import (
    EXPECTED_NOISE,
    Console,
    Wire,
    assert_no_duplicate_events,
    chromium,
    expect_demo_answer,
    expect_live,
    new_page,
    run_card,
    run_ids,
    say,
    sign_in,
    start_run,
    transcript,
)

pytestmark = pytest.mark.browser


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
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, chat_server: ChatServer) -> Iterator[Page]:
    chat_server.ensure_running()
    with new_page(browser, 900, 900) as page:
        yield page


# ------------------------------------------------------------------ tests


def test_chat_reload_rollback_cancel_and_restart(
    page: Page, chat_server: ChatServer, tmp_path: Path
) -> None:
    console = Console(page)
    wire = Wire(page)
    try:
        # Sign in by name (local development sign-in) and chat.
        sign_in(page, chat_server, "alice")
        assert [s.hello and "resume_from" in s.hello for s in wire.welcomed] == [False]
        expect(page.locator("#empty")).to_be_visible()
        first = say(page, "Add 2 and 40, please.")
        expect_demo_answer(first, total="42")

        # Reload: still signed in, the last page of history is loaded (no replay), nothing twice.
        history = transcript(page)
        cards = run_ids(page)
        page.reload()
        expect_live(page)
        assert [s.resume_from for s in wire.welcomed] == [None, None], "a reload asks for no replay"
        for run_id in cards:
            expect(run_card(page, run_id)).to_have_attribute("data-state", "completed")
        expect_demo_answer(run_card(page, next(iter(cards))), total="42")
        assert run_ids(page) == cards
        assert transcript(page) == history
        assert_no_duplicate_events(page)
        # a new user has nothing to load; after the reload, one page of `history`
        assert [len(s.histories) for s in wire.welcomed] == [0, 1]

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


# ------------------------------------------------------------------ additions: deltas, ask, if_busy

#: Records, in the page, every state a message bubble goes through (the page's own DOM, observed
#: after every mutation): ``window.__bubbles`` = [{id, state, provisional, text}], one entry per
#: change of a bubble's state or text. Installed before the page's script; reset by each load.
BUBBLE_LOG = """
(() => {
  window.__bubbles = [];
  const last = new Map();
  const snap = () => {
    for (const el of document.querySelectorAll(".msg-assistant[data-message-id]")) {
      const entry = {
        id: el.dataset.messageId, state: el.dataset.state || "",
        provisional: el.classList.contains("provisional"), text: el.textContent,
      };
      const key = entry.state + "|" + entry.provisional + "|" + entry.text;
      if (last.get(entry.id) !== key) { last.set(entry.id, key); window.__bubbles.push(entry); }
    }
  };
  new MutationObserver(snap).observe(document, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
})();
"""


def bubble_log(page: Page, message_id: str) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = page.evaluate("() => window.__bubbles")
    return [e for e in log if e["id"] == message_id]


def message_id(bubble: Locator) -> str:
    mid = bubble.get_attribute("data-message-id")
    assert mid, "a bubble without its message_id"
    return mid


def card_body(card: Locator) -> list[str]:
    """What a run card shows, in order: each body element's class and text."""
    items: list[str] = card.locator(".run-body > *").evaluate_all(
        "els => els.map(e => e.className + '|' + e.textContent)"
    )
    return items


def assert_streamed_then_committed(page: Page, wire: Wire, mid: str) -> str:
    """The bubble of ``mid`` showed provisional text (a prefix of the final text, styled as
    provisional) before the committed message replaced it with exactly the committed text."""
    final = wire.committed_text(mid)
    log = bubble_log(page, mid)
    states = [e["state"] for e in log]
    assert "streaming" in states, log
    assert states[-1] == "committed", log
    assert states.index("committed") == len(states) - 1, f"streamed after the commit: {log}"
    provisional = [e for e in log if e["state"] == "streaming"]
    assert all(e["provisional"] for e in provisional), log
    assert all(final.startswith(e["text"]) for e in provisional), (final, log)
    assert any(0 < len(e["text"]) < len(final) for e in provisional), (
        f"no partial text was ever shown: {log}"
    )
    assert log[-1]["text"] == final, log
    assert not log[-1]["provisional"], log
    return final


def test_streaming_text_is_shown_then_replaced_by_the_committed_message(
    page: Page, chat_server: ChatServer
) -> None:
    console = Console(page)
    wire = Wire(page)
    page.add_init_script(BUBBLE_LOG)
    sign_in(page, chat_server, "dora")
    assert wire.welcomed[0].hello is not None
    assert wire.welcomed[0].hello.get("features") == ["deltas"]

    card = say(page, "Add 2 and 40, please.")
    expect_demo_answer(card, total="42")
    bubble = card.locator(".msg-assistant")
    expect(bubble).to_have_attribute("data-state", "committed")
    mid = message_id(bubble)
    assert len(wire.deltas(mid)) >= 2, "the demo streams at least two deltas"
    final = assert_streamed_then_committed(page, wire, mid)
    expect(bubble).to_have_text(final)
    expect(page.locator(".provisional")).to_have_count(0)
    live_view = card_body(card)

    # After a reload the history shows the committed message once (deltas are never replayed),
    # in the same place among the run's events as it was shown live.
    page.reload()
    expect_live(page)
    expect(card).to_have_attribute("data-state", "completed")
    assert card_body(card) == live_view
    expect(
        run_card(page, card.get_attribute("data-run-id") or "").locator(".msg-assistant")
    ).to_have_text(final)
    assert bubble_log(page, mid) == [
        {"id": mid, "state": "committed", "provisional": False, "text": final}
    ]
    assert_no_duplicate_events(page)
    assert console.unexpected() == [], console.errors


def test_rollback_retracts_streamed_text(page: Page, chat_server: ChatServer) -> None:
    console = Console(page)
    wire = Wire(page)
    page.add_init_script(BUBBLE_LOG)
    sign_in(page, chat_server, "erin")
    card = start_run(page, "crashy", {"crash_times": 1, "stream": True})
    expect(card).to_have_attribute("data-state", "completed")

    retracted = card.locator(".msg-assistant.retracted")
    expect(retracted).to_have_count(1)
    expect(retracted).to_have_attribute("data-state", "retracted")
    expect(retracted).to_contain_text("Attempt 1 is about to crash")
    expect(retracted).to_have_css("text-decoration-line", "line-through")
    expect(card.locator(".retract-note")).to_have_text("retracted (crash)")
    rollback = card.locator(".rollback")
    expect(rollback).to_have_count(1)
    expect(rollback).to_contain_text("attempt 1")
    assert wire.deltas(message_id(retracted)), "the crashing attempt streamed"
    assert all(d["attempt"] == 1 for d in wire.deltas(message_id(retracted)))
    assert [e["state"] for e in bubble_log(page, message_id(retracted))][-1] == "retracted"

    answer = card.locator(".msg-assistant:not(.retracted)")
    expect(answer).to_have_text("Succeeded on attempt 2.")
    expect(answer).to_have_attribute("data-state", "committed")
    assert_streamed_then_committed(page, wire, message_id(answer))
    expect(page.locator(".provisional")).to_have_count(0)

    # The retracted text was never committed: a reload (history replay) does not show it.
    page.reload()
    expect_live(page)
    card = run_card(page, card.get_attribute("data-run-id") or "")
    expect(card.locator(".msg-assistant")).to_have_text("Succeeded on attempt 2.")
    expect(card.locator(".retracted, .retract-note")).to_have_count(0)
    expect(card.locator(".rollback")).to_have_count(1)
    assert console.unexpected() == [], console.errors


def test_ask_prompt_is_answered_in_the_card_and_stays_answered(
    page: Page, chat_server: ChatServer
) -> None:
    console = Console(page)
    wire = Wire(page)
    sign_in(page, chat_server, "frank")
    card = start_run(page, "ask", "Your favourite <b>colour</b>?")
    ask = card.locator(".ask")
    expect(ask).to_have_attribute("data-state", "open")
    expect(ask.locator(".ask-prompt")).to_have_text("Your favourite <b>colour</b>?")
    expect(card).to_have_attribute("data-state", "running")

    answer = "teal & <i>grey</i>"
    ask.locator(".ask-input").fill(answer)
    ask.locator(".ask-send").click()
    expect(ask).to_have_attribute("data-state", "answered")
    expect(ask.locator(".ask-answer")).to_have_text(f"answered: {answer}")
    expect(ask.locator(".ask-form")).to_be_hidden()
    expect(card).to_have_attribute("data-state", "completed")
    expect(card.locator(".msg-assistant")).to_have_text(f"You answered: {answer}")
    run_id = card.get_attribute("data-run-id")
    assert wire.commands("send_input")[-1]["input"] == answer
    assert wire.commands("send_input")[-1]["run_id"] == run_id
    assert page.locator("#timeline b, #timeline i").count() == 0

    # After a reload the replayed history shows the question answered, with no answer box.
    page.reload()
    expect_live(page)
    ask = run_card(page, run_id or "").locator(".ask")
    expect(ask).to_have_attribute("data-state", "answered")
    expect(ask.locator(".ask-answer")).to_have_text(f"answered: {answer}")
    expect(ask.locator(".ask-form")).to_be_hidden()
    assert_no_duplicate_events(page)
    assert console.unexpected() == [], console.errors


def test_ask_error_is_shown_and_the_answer_can_be_sent_again(
    page: Page, chat_server: ChatServer
) -> None:
    # The first send_input is rewritten on its way to the server to name a run that does not
    # exist: the server's error (unknown_run) is shown in the question's box, which stays usable.
    broken = {"once": True}

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "send_input" and broken["once"]:
                broken["once"] = False
                frame["run_id"] = "r_no_such_run"
            server.send(json.dumps(frame))

        ws.on_message(to_server)
        server.on_message(ws.send)

    page.route_web_socket(re.compile(r"/ws$"), route)
    console = Console(page)
    sign_in(page, chat_server, "grace")
    card = start_run(page, "ask", {"prompt": "Which number?"})
    ask = card.locator(".ask")
    expect(ask.locator(".ask-prompt")).to_have_text("Which number?")
    ask.locator(".ask-input").fill("seven")
    ask.locator(".ask-send").click()
    expect(ask.locator(".ask-error")).to_contain_text("unknown_run")
    expect(ask).to_have_attribute("data-state", "open")
    expect(ask.locator(".ask-send")).to_be_enabled()
    ask.locator(".ask-send").click()
    expect(ask).to_have_attribute("data-state", "answered")
    expect(ask.locator(".ask-error")).to_be_hidden()
    expect(card.locator(".msg-assistant")).to_have_text("You answered: seven")
    assert console.unexpected() == [], console.errors


def test_reload_mid_stream_shows_the_partial_answer_then_the_whole(
    page: Page, chat_server: ChatServer
) -> None:
    # The ask agent streams its answer a word at a time (about 10 ms each): a long answer streams
    # for seconds, long enough to reload in the middle of it.
    console = Console(page)
    wire = Wire(page)
    page.add_init_script(BUBBLE_LOG)
    sign_in(page, chat_server, "heidi")
    card = start_run(page, "ask", "Say a lot?")
    run_id = card.get_attribute("data-run-id") or ""
    words = " ".join(f"w{i}" for i in range(600))
    card.locator(".ask-input").fill(words)
    card.locator(".ask-send").click()
    expect(card.locator(".msg-assistant.provisional")).to_have_count(1)
    page.reload()
    expect_live(page)
    card = run_card(page, run_id)
    expect(card).to_have_attribute("data-state", "completed", timeout=30_000)
    bubble = card.locator(".msg-assistant")
    expect(bubble).to_have_count(1)
    mid = message_id(bubble)
    # The new socket got the partial text as one offset-0 delta, then the rest of the stream.
    after = [d for d in wire.welcomed[-1].deltas if d["message_id"] == mid]
    assert after, "no delta after the reload"
    assert after[0]["offset"] == 0, after[:2]
    assert len(after[0]["text"]) > 0, after[:2]
    final = assert_streamed_then_committed(page, wire, mid)
    assert final == f"You answered: {words}"
    log = bubble_log(page, mid)
    assert log[0]["state"] == "streaming", log[:2]
    # deltas that came before the run's card (loaded by `history`) are shown together
    assert log[0]["text"].startswith(after[0]["text"]), log[:2]
    expect(card.locator(".ask")).to_have_attribute("data-state", "answered")
    assert_no_duplicate_events(page)
    assert console.unexpected() == [], console.errors


def test_busy_policy_choice_is_sent_as_if_busy(page: Page, chat_server: ChatServer) -> None:
    console = Console(page)
    wire = Wire(page)
    sign_in(page, chat_server, "ivan")
    expect(page.locator("#say-busy")).to_have_value("")  # the server's default
    slow = start_run(page, "slow", {"seconds": 60})
    expect(slow).to_have_attribute("data-state", "running")

    # reject: the server answers `busy`, nothing is committed, no run card appears.
    page.select_option("#say-busy", "reject")
    before = run_ids(page)
    page.fill("#say-input", "rejected while busy")
    page.press("#say-input", "Enter")
    status = page.locator("li.pending-cmd .pending-status[data-code=busy]")
    expect(status).to_contain_text("busy")
    expect(status).to_contain_text("still live")
    assert wire.commands("say")[-1]["if_busy"] == "reject"
    assert run_ids(page) == before

    # enqueue: the run is created pending and waits for the slow one.
    page.select_option("#say-busy", "enqueue")
    queued = say(page, "queued behind the slow run")
    expect(queued).to_have_attribute("data-state", "pending")
    assert wire.commands("say")[-1]["if_busy"] == "enqueue"

    # interrupt: the live and the queued runs are cancelled, the new run answers.
    page.select_option("#say-busy", "interrupt")
    third = say(page, "Interrupting: 1 plus 1")
    expect_demo_answer(third, total="2")
    expect(slow).to_have_attribute("data-state", "cancelled")
    expect(queued).to_have_attribute("data-state", "cancelled")
    expect(slow.locator(".rollback[data-reason=cancelled] .err")).to_have_text("interrupted")

    # "server default" omits if_busy (this server's default is parallel).
    page.select_option("#say-busy", "")
    fourth = say(page, "Back to 2 and 2")
    expect_demo_answer(fourth, total="4")
    assert "if_busy" not in wire.commands("say")[-1]
    assert console.unexpected() == [], console.errors


def test_the_page_served_by_the_fastapi_example_under_uvicorn(
    browser: Browser, tmp_path: Path
) -> None:
    """The same page, protocol and sign-in from ``uvicorn examples.fastapi_app:app``: chat,
    stop the server (the page sees 1001/1012 and reconnects), chat again."""
    server = UvicornChatServer(port=free_port(), db=tmp_path / "asgi.db", log=tmp_path / "uv.log")
    server.start()
    try:
        with new_page(browser, 900, 900) as page:
            console = Console(page)
            sign_in(page, server, "erin")
            expect_demo_answer(say(page, "Add 2 and 40, please."), total="42")
            server.stop()
            server.start()
            expect_live(page)
            expect_demo_answer(say(page, "And 1 plus 2?"), total="3")
            assert_no_duplicate_events(page)
            assert console.unexpected() == [], console.errors
    finally:
        server.kill()
