"""The examples that the docs quote run, end to end, and print what the docs say they print.

* ``examples/*.py`` run as subprocesses, on SQLite files in ``tmp_path``;
* every code block of the docs marked ``<!-- from PATH -->`` is copied verbatim from ``PATH``;
* the tests at the end are the examples of ``docs/testing.md``.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from sqlalchemy import Column, Integer, MetaData, String, Table, insert

import netra_actors as na
from netra_actors.testing import MemoryStore, collect_until, guest_test

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str) -> str:
    """Run ``examples/<name>`` in a fresh interpreter; return its stdout (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_console_demo(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    out = run_example("console_demo.py", "--db", str(db))
    assert "(demo) ended completed after 1 attempt(s)" in out
    assert "(crashy) ended completed after 3 attempt(s)" in out
    assert out.count("ROLLED BACK attempt") == 2
    assert "tool word_stats → {'words': 5" in out
    assert "2 rollbacks, 2 restarts" in out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM netra_events").fetchone()[0] == 30


def test_agent_tour(tmp_path: Path) -> None:
    db = tmp_path / "tour.db"
    out = run_example("agent_tour.py", "--db", str(db))
    lines = out.splitlines()
    # every part of the context API shows up in the committed stream
    assert any(
        "agent_thinking {'text': 'Attempt 1: planning 3 nights in Lisbon.'}" in x for x in lines
    )
    assert any("tool_completed nightly_rate -> 120" in x for x in lines)
    assert any("tool_completed check_availability -> {'city': 'Lisbon'" in x for x in lines)
    assert sum("quote {'city': 'Lisbon', 'total': 360, 'rooms_left': 3}" in x for x in lines) == 2
    # the crash of attempt 1 rolled back its staged message and rows; attempt 2 completed
    rollbacks = [x for x in lines if "run_rolled_back" in x]
    assert len(rollbacks) == 1
    assert "'reason': 'crash'" in rollbacks[0]
    assert "'will_restart': True" in rollbacks[0]
    assert sum("message (assistant) Booked 3 nights in Lisbon." in x for x in lines) == 1
    assert any("run_state running -> starting (restart)" in x for x in lines)
    assert "run ended completed after 2 attempt(s)" in out
    assert "tour_bookings rows (city, nights, attempt): [('Lisbon', 3, 2)]" in out
    assert "tour_audit_log rows: [('booked Lisbon',)]" in out
    seqs = [int(x.split()[0][1:]) for x in lines if x.startswith("  #")]
    assert seqs == list(range(1, len(seqs) + 1))
    # docs/agents.md prints this output: it is the program's, but for the run id
    doc = (ROOT / "docs" / "agents.md").read_text()
    shown = doc.split("Its output (the run id differs each time):\n\n```\n", 1)[1].split("```")[0]
    run_id = re.compile(r"\br_[0-9A-Z]{26}\b")
    assert run_id.sub("r_…", shown).splitlines() == run_id.sub("r_…", out).splitlines()


def test_embed_asyncio(tmp_path: Path) -> None:
    db = tmp_path / "embed.db"
    out = run_example("embed_asyncio.py", "--db", str(db))
    lines = out.splitlines()
    assert lines[0].startswith("chat server on 127.0.0.1:")
    for user in ("alice", "bob"):
        mine = [x for x in lines if x.startswith(f"{user} ")]
        assert f"{user} ack" in mine
        events = [x for x in mine if x.startswith(f"{user} #")]
        assert [int(x.split()[1][1:]) for x in events] == list(range(1, 14))
        assert events[-1] == f"{user} #13 run_state completed"
        assert f"{user} #8 tool_completed" in events
    assert "committed 26 events for 2 runs" in out
    with sqlite3.connect(db) as conn:  # the runtime closed cleanly: every event is on disk
        assert conn.execute("SELECT count(*) FROM netra_events").fetchone()[0] == 26


# -- the docs quote real code ----------------------------------------------------------------

DOCS = ["architecture.md", "agents.md", "embedding.md", "store.md", "testing.md"]
QUOTE = re.compile(r"<!-- from (\S+) -->\n```python\n(.*?)\n```", re.DOTALL)


@pytest.mark.parametrize("doc", DOCS)
def test_quoted_code_is_copied_from_its_file(doc: str) -> None:
    text = (ROOT / "docs" / doc).read_text()
    for source, block in QUOTE.findall(text):
        assert block in (ROOT / source).read_text(), f"{doc}: a block is not in {source}"


# -- the examples of docs/testing.md ---------------------------------------------------------


class Flaky(na.Agent):
    """Crashes on its first attempt, then completes."""

    name = "flaky"
    restart_policy = na.policies.RestartPolicy(max_restarts=2, backoff_initial=5.0)

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.think(f"attempt {ctx.attempt}")
        if ctx.attempt == 1:
            raise RuntimeError("the first attempt fails")
        return "ok"


def completed(events: list[na.Event]) -> bool:
    return any(e.event == "run_state" and e.data["state"] == "completed" for e in events)


async def test_flaky_restarts_after_its_backoff(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    async with na.open_runtime(agents=[Flaky], store=store) as runtime:
        events = await runtime.subscribe("alice")
        start = trio.current_time()
        run_id = await runtime.start_run("alice", "flaky")
        info = await runtime.wait_run("alice", run_id)
        assert trio.current_time() - start == 5.0  # the backoff, exactly, in virtual time
        with trio.fail_after(1):
            seen = await collect_until(events, completed)
    assert info.state is na.RunState.COMPLETED
    assert [e.data["text"] for e in seen if e.event == "agent_thinking"] == ["attempt 2"]
    assert [e.seq for e in store.events["alice"]] == list(range(1, len(seen) + 1))


notes_metadata = MetaData()
notes = Table(
    "notes",
    notes_metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("text", String(200), nullable=False),
)


class NoteTaker(na.Agent):
    """Writes its input to the ``notes`` table."""

    name = "note_taker"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.stage(insert(notes).values(user_id=ctx.user_id, text=str(input)))
        return "noted"


@guest_test()
async def test_note_taker_writes_its_row_on_sqlite(tmp_path: Path) -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "test.db"))
    async with na.open_runtime(config, agents=[NoteTaker], metadata=[notes_metadata]) as runtime:
        run_id = await runtime.start_run("alice", "note_taker", "buy milk")
        info = await runtime.wait_run("alice", run_id)
    assert info.state is na.RunState.COMPLETED
    with sqlite3.connect(tmp_path / "test.db") as conn:  # an independent connection
        assert conn.execute("SELECT user_id, text FROM notes").fetchall() == [("alice", "buy milk")]
