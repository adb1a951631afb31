"""The page's first paint for a user with 100,000 events (issue 19's goal: the last page of the
most recent thread on screen within 300 ms of navigation, not a replay of the log).

The user's log is committed through a SQLite store directly (units of 50 runs of ten events each,
spread over 20 threads, as the runtime commits them), then ``netra-actors serve`` serves it and
headless Chromium opens the page signed in. The figure is the ``netra:first-page`` performance
mark the page sets once the first history page is painted (milliseconds since the navigation
started), median of a few reloads. Printed (run with ``-s`` to see it) and reported in
docs/benchmarks.md; asserted only generously here, since the machine running the suite is shared.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_server import CHROMIUM

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing", allow_module_level=True)
try:
    import playwright.sync_api  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("the playwright package is not importable", allow_module_level=True)

from pagekit import Wire, chromium, expect_live, new_page, sign_in

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from gwkit import Server

import netra_actors as na
from benchmarks.harness.inprocess import run_trio
from netra_actors._store import SqlStore
from netra_actors._uow import RunRow, UnitOfWork

pytestmark = pytest.mark.browser

USER = "hundred"
EVENTS = 100_000
RUN_EVENTS = 10
RUNS_PER_UNIT = 50
THREADS = 20
RELOADS = 10
GENEROUS_MS = 3_000.0
"""What this test asserts (the goal, 300 ms, is reported, not asserted: the machine is shared)."""


def run_events(unit: UnitOfWork, run_id: str, n: int) -> None:
    """The ten events of one answered ``say``: the user's message, the run's states, a thought, a
    tool call and the answer."""
    text = f"Question {n}: what are {n} and {n + 1}?"
    unit.emit(run_id, "message", {"role": "user", "text": text, "message_id": f"u{n}"})
    unit.emit(run_id, "run_state", {"state": "pending", "previous": None})
    unit.emit(run_id, "run_state", {"state": "starting", "previous": "pending"})
    unit.emit(run_id, "run_state", {"state": "running", "previous": "starting"})
    unit.emit(run_id, "agent_thinking", {"text": f"Reading your message ({len(text)} characters)."})
    call = {"tool": "word_stats", "call_id": f"c{n}"}
    unit.emit(run_id, "tool_executing", {**call, "args": {"text": text}})
    unit.emit(
        run_id, "tool_completed", {**call, "result": {"numbers": [n, n + 1], "sum": 2 * n + 1}}
    )
    answer = f"The numbers in it add up to {2 * n + 1}."
    unit.emit(run_id, "message", {"role": "assistant", "text": answer, "message_id": f"a{n}"})
    unit.emit(run_id, "run_state", {"state": "completing", "previous": "running"})
    unit.emit(run_id, "run_state", {"state": "completed", "previous": "completing"})


async def build(db: Path) -> int:
    """Commit ``EVENTS`` events of ``USER``; the head seq."""
    store = await SqlStore.open(na.RuntimeConfig(database_url=na.sqlite_url(db)))
    head = 0
    try:
        for first in range(0, EVENTS // RUN_EVENTS, RUNS_PER_UNIT):
            unit = UnitOfWork(USER)
            threads: dict[str | None, str] = {}
            now = time.time()
            for n in range(first, first + RUNS_PER_UNIT):
                run_id = f"r_{uuid.uuid4().hex[:16]}"
                thread = f"topic-{n % THREADS}"
                threads[run_id] = thread
                run_events(unit, run_id, n)
                unit.put_run(
                    RunRow(
                        user_id=USER,
                        run_id=run_id,
                        agent="demo",
                        state="completed",
                        attempt=1,
                        input_json=None,
                        result_json=None,
                        reason=None,
                        created_at=now,
                        updated_at=now,
                        thread=thread,
                    )
                )
            unit.threads = threads
            head = (await store.commit(USER, head, unit))[-1].seq
    finally:
        await store.aclose()
    return head


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    tmp = tmp_path_factory.mktemp("first-paint")
    t0 = time.perf_counter()
    head = run_trio(build, tmp / "netra.db")
    print(f"\nbuilt {head:,} events of {USER!r} in {time.perf_counter() - t0:.1f} s")
    srv = Server(tmp)
    srv.start()
    try:
        yield srv, head
    finally:
        srv.stop()


def test_first_paint_of_the_last_page_for_a_user_with_100k_events(
    server: tuple[Server, int],
) -> None:
    srv, head = server
    assert head == EVENTS
    with chromium() as browser, new_page(browser, 1200, 820) as page:
        wire = Wire(page)
        sign_in(page, srv.http + "/", USER)  # the first visit: sign in, keep the token
        marks: list[float] = []
        for _ in range(RELOADS + 1):
            page.reload()
            expect_live(page)
            page.wait_for_function("() => document.documentElement.dataset.firstPage")
            mark = page.evaluate(
                "() => performance.getEntriesByName('netra:first-page')[0].startTime"
            )
            marks.append(float(mark))
            sock = wire.welcomed[-1]
            assert sock.resume_from is None
            assert sock.seqs == []  # nothing replayed
            assert len(sock.histories) == 1  # one page
            assert len(sock.histories[0]["events"]) <= 60
        expect_live(page)
        assert page.locator("#timeline .msg-user").last.text_content() == (
            f"Question {EVENTS // RUN_EVENTS - 1}: what are 9999 and 10000?"
        )
    measured = marks[1:]  # the first load warms the server's caches
    median = statistics.median(measured)
    print(
        f"first paint of the last page, {EVENTS:,} events: median {median:.0f} ms "
        f"(each: {', '.join(f'{m:.0f}' for m in measured)} ms; goal <= 300 ms)"
    )
    assert median < GENEROUS_MS
