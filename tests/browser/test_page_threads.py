"""End-to-end: threads and history paging on the chat page, in headless Chromium against
``netra-actors serve``.

A user with three threads (made over the WebSocket API with the ``demo`` agent, by the gateway
tests' own client) opens the page: the thread list shows them newest first with their titles; the
most recent thread's last page is shown, without a replay (``hello`` without ``resume_from``, one
``history`` page); *Load earlier* pages back to its first message and keeps the reading position;
switching threads shows the right conversation; a new thread gets its answer and joins the list;
activity in another thread marks it in the list, not in the view; a reload and a server restart
keep working (the reconnect resumes from the live high-water mark, not from what paging loaded).
The close code 4410 and ``erased`` placeholders are checked by rewriting frames in flight.

Screenshots go to the test's tmp dir and are copied to ``$NETRA_PAGE_SHOTS`` when it is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from chat_server import CHROMIUM

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing", allow_module_level=True)
try:
    from playwright.sync_api import Browser, Page, WebSocketRoute, expect
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("the playwright package is not importable", allow_module_level=True)

from pagekit import (
    Console,
    Wire,
    assert_no_duplicate_events,
    chromium,
    expect_demo_answer,
    expect_live,
    new_page,
    say,
    sign_in,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from gwkit import Client, Server, run_async

pytestmark = pytest.mark.browser

SHOTS = os.environ.get("NETRA_PAGE_SHOTS")
PAGE_LIMIT = 60
"""The page's ``history`` page size (index.html's HISTORY_PAGE)."""

#: Three threads, made in this order (so ``trip`` is the most recent); ``trip`` is longer than one
#: page of history.
THREADS = {
    "recipes": [
        "Pancakes for 4: 2 eggs and 3 cups of flour?",
        "Double it: 4 plus 6",
        "Salt: 1 and 1",
    ],
    "budget": ["Budget for March: 120 and 80", "Add rent 900 and 45", "And savings 200 plus 50"],
    "trip": [f"Trip day {day}: drive {day * 10} km and walk {day} km" for day in range(1, 9)],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("threads"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    with new_page(browser, 1200, 820) as page:
        yield page


def chat(server: Server, user: str, threads: dict[str, list[str]]) -> int:
    """Say each text in its thread (``demo`` answers each); the user's head seq after them.

    On a thread of its own: Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_chat, server, user, threads).result()


@run_async
async def _chat(server: Server, user: str, threads: dict[str, list[str]]) -> int:
    client = await Client.open(server, user)
    for thread, texts in threads.items():
        for text in texts:
            run_id = await client.say(text, agent="demo", thread=thread)
            assert await client.wait_run_end(run_id) == "completed"
    head: int = client.events[-1]["seq"]
    await client.close()
    return head


def shoot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    if not SHOTS:
        return
    try:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SHOTS) / path.name)
    except OSError:  # only a convenience for people looking at the pictures
        pass


def user_messages(page: Page) -> list[str]:
    texts: list[str] = page.eval_on_selector_all(
        "#timeline .msg-user", "els => els.map(e => e.textContent)"
    )
    return texts


def thread_list(page: Page) -> list[tuple[str, str]]:
    """(thread, title) of each entry of the list, top to bottom."""
    items: list[list[str]] = page.eval_on_selector_all(
        "#thread-list .thread-item",
        "els => els.map(e => [e.dataset.thread, e.querySelector('.thread-title').textContent])",
    )
    return [(thread, title) for thread, title in items]


def thread_item(page: Page, thread: str) -> Any:
    return page.locator(f'#thread-list .thread-item[data-thread="{thread}"]')


def show_thread(page: Page, texts: list[str]) -> None:
    """Wait until the conversation shows exactly these user messages."""
    expect(page.locator("#timeline .msg-user")).to_have_text(texts)


def load_earlier(page: Page) -> None:
    """Click *Load earlier* and wait for the page to come in."""
    page.click("#load-earlier")
    page.wait_for_function(
        "() => { const b = document.getElementById('load-earlier'); return b.hidden || !b.disabled; }"
    )


def test_threads_history_paging_new_thread_reload_and_restart(
    page: Page, server: Server, tmp_path: Path
) -> None:
    user = "tess"
    head = chat(server, user, THREADS)
    console = Console(page)
    wire = Wire(page)
    trip, budget, recipes = THREADS["trip"], THREADS["budget"], THREADS["recipes"]

    # Open: the list, newest first, with titles; the most recent thread's last page.
    sign_in(page, server.http + "/", user)
    expect(page.locator("#thread-list .thread-item")).to_have_count(3)
    assert thread_list(page) == [("trip", trip[0]), ("budget", budget[0]), ("recipes", recipes[0])]
    expect(thread_item(page, "trip")).to_have_attribute("aria-current", "true")
    expect(page.locator("#thread-title")).to_have_text(trip[0])
    expect(page.locator("#timeline .msg-user").last).to_have_text(trip[-1])
    expect(page.locator("#load-earlier")).to_be_visible()
    shown = user_messages(page)
    assert shown == trip[-len(shown) :], shown
    assert trip[0] not in shown, shown
    first_paint = page.evaluate(
        "() => performance.getEntriesByName('netra:first-page').map(e => e.startTime)"
    )
    assert len(first_paint) == 1

    # What went over the wire: no replay, one page of the open thread, then live only.
    sock = wire.welcomed[0]
    assert sock.hello is not None
    assert "resume_from" not in sock.hello
    assert sock.head_seq == head
    asked = [(c["thread"], c["before_seq"], c["limit"]) for c in wire.commands("history")]
    assert asked == [("trip", head + 1, PAGE_LIMIT)]
    assert len(sock.histories) == 1
    assert len(sock.histories[0]["events"]) <= PAGE_LIMIT
    assert {e["thread"] for e in sock.histories[0]["events"]} == {"trip"}
    assert all(seq > head for seq in sock.seqs), "an event older than the head came live"
    shoot(page, tmp_path, "1-open-at-the-latest-message")
    page.evaluate("() => window.scrollTo(0, 0)")
    shoot(page, tmp_path, "2-top-of-the-last-page")

    # Load earlier: the reading position stays; back to the first message, then the start.
    page.evaluate("() => window.scrollTo(0, 0)")
    # (the second card: the first may be a run cut by the page's start, built again when the
    # earlier page brings its start)
    run_id = page.locator("#timeline > li").nth(1).get_attribute("data-run-id")
    y_before = page.locator(f'#timeline > li[data-run-id="{run_id}"]').bounding_box()
    load_earlier(page)
    y_after = page.locator(f'#timeline > li[data-run-id="{run_id}"]').bounding_box()
    assert y_before is not None
    assert y_after is not None
    assert abs(y_after["y"] - y_before["y"]) < 4, (y_before, y_after)
    for _ in range(5):
        if page.locator("#load-earlier").is_hidden():
            break
        load_earlier(page)
    show_thread(page, trip)
    expect(page.locator("#history-start")).to_be_visible()
    expect(page.locator("#timeline article.run")).to_have_count(len(trip))
    expect(page.locator("#timeline .run.partial")).to_have_count(0)
    assert page.locator("#timeline .msg-assistant").count() == len(trip)
    assert_no_duplicate_events(page)
    earlier = wire.commands("history")[1:]
    assert earlier
    assert all(c["thread"] == "trip" and c["before_seq"] <= head for c in earlier)
    assert sock.resume_from is None
    assert sock.seqs == []
    page.evaluate("() => window.scrollTo(0, 0)")
    shoot(page, tmp_path, "3-paged-back-to-the-start")

    # Switch threads: the other conversation, only its own.
    thread_item(page, "recipes").click()
    expect(page.locator("#thread-title")).to_have_text(recipes[0])
    show_thread(page, recipes)
    expect(page.locator("#load-earlier")).to_be_hidden()
    assert wire.commands("history")[-1]["thread"] == "recipes"
    assert wire.commands("history")[-1]["before_seq"] == head + 1

    # A new thread: a client-side name, the answer, then it is listed first with its title.
    page.click("#new-thread")
    expect(page.locator("#empty")).to_contain_text("A new thread")
    expect(page.locator("#thread-title")).to_have_text("New thread")
    question = "Packing list: 3 shirts and 2 hats"
    expect_demo_answer(say(page, question), total="5")
    name = wire.commands("say")[-1]["thread"]
    assert re.fullmatch(r"t-[0-9a-z]+-[0-9a-z]{5}", name), name
    expect(page.locator("#thread-list .thread-item")).to_have_count(4)
    assert thread_list(page)[0] == (name, question)
    expect(page.locator("#thread-title")).to_have_text(question)

    # Activity in another thread (another client) moves it up and marks it, not the view.
    later = "Budget again: 7 plus 8"
    chat(server, user, {"budget": [later]})
    expect(thread_item(page, "budget")).to_have_class(re.compile(r"\bunread\b"))
    assert thread_list(page)[0][0] == "budget"
    assert user_messages(page) == [question]
    shoot(page, tmp_path, "4-new-thread-answered")

    # A reload opens the most recent thread (budget) the same way: no replay, one page.
    page.reload()
    expect_live(page)
    expect(page.locator("#thread-title")).to_have_text(budget[0])
    show_thread(page, [*budget, later])
    reloaded = wire.welcomed[-1]
    assert reloaded.hello is not None
    assert "resume_from" not in reloaded.hello
    assert len(reloaded.histories) == 1
    assert wire.commands("history")[-1]["thread"] == "budget"

    # Page back in a thread, then a server restart: the page resumes from its live high-water
    # mark (not the oldest seq it loaded) and keeps chatting.
    thread_item(page, "trip").click()
    show_thread(page, trip[-len(shown) :])
    load_earlier(page)
    held = max([reloaded.head_seq or 0, *reloaded.seqs])
    server.stop()
    expect(page.locator("#status")).not_to_have_attribute("data-status", "live")
    server.start()
    expect_live(page)
    assert wire.welcomed[-1].resume_from == held
    expect_demo_answer(say(page, "Trip day 9: drive 90 km and walk 9 km"), total="108")
    assert user_messages(page)[-1] == "Trip day 9: drive 90 km and walk 9 km"
    assert_no_duplicate_events(page)
    wire.assert_exact()
    assert console.unexpected() == [], console.errors


def test_narrow_screen_shows_the_threads_behind_a_toggle(
    browser: Browser, server: Server, tmp_path: Path
) -> None:
    user = "nina"
    chat(server, user, {"walks": ["Walk 3 km and 4 km"], "books": ["Read 12 and 30 pages"]})
    with new_page(browser, 390, 780, mobile=True) as page:
        console = Console(page)
        sign_in(page, server.http + "/", user)
        show_thread(page, ["Read 12 and 30 pages"])
        expect(page.locator("#thread-list")).to_be_hidden()
        toggle = page.locator("#threads-toggle")
        expect(toggle).to_have_text("Threads (2) ▾")
        shoot(page, tmp_path, "5-narrow")
        toggle.click()
        expect(page.locator("#thread-list")).to_be_visible()
        shoot(page, tmp_path, "6-narrow-threads-open")
        thread_item(page, "walks").click()
        expect(page.locator("#thread-list")).to_be_hidden()
        show_thread(page, ["Walk 3 km and 4 km"])
        assert console.unexpected() == [], console.errors


def test_erased_events_and_close_4410(page: Page, server: Server, tmp_path: Path) -> None:
    """The wire of thread deletion and erasure, simulated in flight: the ``history`` page of one
    thread comes back erased (as a deleted thread's events do), a ``thread_deleted`` event drops
    it from the list, and a close with 4410 makes the page drop everything it holds."""
    user = "ezra"
    head = chat(server, user, {"keep": ["Keep 1 and 2"], "gone": ["Forget 3 and 4"]})
    sockets: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        upstream = ws.connect_to_server()

        def to_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "history":
                for event in frame["events"]:
                    if event.get("thread") == "gone":
                        event.update(event="erased", data={})
            ws.send(json.dumps(frame))

        upstream.on_message(to_page)
        ws.on_message(upstream.send)

    page.route_web_socket(re.compile(r"/ws$"), route)
    console = Console(page)
    sign_in(page, server.http + "/", user)
    expect(page.locator("#timeline .erased")).to_have_count(1)
    expect(page.locator("#timeline .erased")).to_contain_text("deleted")
    expect(page.locator("#timeline .msg-user")).to_have_count(0)
    shoot(page, tmp_path, "7-erased-placeholder")

    # thread_deleted (the next seq, as the server would commit it): the list drops the thread
    # and the page opens the most recent one left.
    deleted = {"type": "event", "seq": head + 1, "run_id": None, "event": "thread_deleted",
               "ts": 1.0, "data": {"thread": "gone"}, "thread": "gone"}  # fmt: skip
    sockets[-1].send(json.dumps(deleted))
    expect(page.locator("#thread-list .thread-item")).to_have_count(1)
    show_thread(page, ["Keep 1 and 2"])
    expect(page.locator("#notices")).to_contain_text("was deleted")

    # 4410: this user's data was erased; the page clears what it shows and says so.
    sockets[-1].close(code=4410, reason="user erased")
    expect(page.locator("#status")).to_have_attribute("data-status", "stopped")
    expect(page.locator("#notices")).to_contain_text("erased")
    expect(page.locator("#thread-list .thread-item")).to_have_count(0)
    expect(page.locator("#timeline > li")).to_have_count(0)
    stored = page.evaluate(f"() => localStorage.getItem('netra_actors.seq.{user}')")
    assert stored is None
    assert console.unexpected() == [], console.errors
