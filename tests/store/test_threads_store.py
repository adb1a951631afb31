"""Threads in the store (schema version 4): the thread of every event and run, the summary the
group commit keeps, history and threads pages, client message ids, and the migration from
version 3 — on a SQLite file and on PostgreSQL (skipped when unreachable)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlalchemy.ext.asyncio import create_async_engine
from test_cluster import database, stores
from test_sql_store import URLS, fresh_user

import netra_actors as na
from netra_actors._bridge import Bridge
from netra_actors._store._schema import MIGRATIONS, SCHEMA_VERSION, meta
from netra_actors._uow import RunRow, UnitOfWork
from netra_actors._values import Event
from netra_actors.testing import MemoryStore, guest_test


def run_unit(
    user: str, thread: str, *, messages: list[tuple[str, str]], run: str | None = None
) -> UnitOfWork:
    """A unit of one run of ``thread``: its messages (role, text), then a state change."""
    run_id = run or f"r_{uuid.uuid4().hex[:12]}"
    unit = UnitOfWork(user)
    unit.threads = {run_id: thread}
    for role, text in messages:
        unit.emit(run_id, "message", {"role": role, "text": text, "message_id": uuid.uuid4().hex})
    unit.emit(run_id, "run_state", {"state": "pending", "previous": None})
    now = time.time()
    unit.put_run(
        RunRow(
            user_id=user,
            run_id=run_id,
            agent="demo",
            state="pending",
            attempt=1,
            input_json=None,
            result_json=None,
            reason=None,
            created_at=now,
            updated_at=now,
            thread=thread,
        )
    )
    return unit


async def commit_all(store: Any, user: str, units: list[UnitOfWork]) -> list[Event]:
    head = 0
    out: list[Event] = []
    for unit in units:
        events = await store.commit(user, head, unit)
        head = events[-1].seq
        out.extend(events)
    return out


@pytest.mark.parametrize("kind", [*URLS, pytest.param("memory", id="memory")])
@guest_test()
async def test_history_and_threads_page_back_to_the_first_event(kind: str, tmp_path: Path) -> None:
    user = fresh_user()
    async with database("sqlite" if kind == "memory" else kind, tmp_path) as url:
        async with stores(url, 1) as (sql,):
            store: Any = MemoryStore() if kind == "memory" else sql
            units = []
            for n in range(30):  # threads a, b, c in turn; a's first message is its title
                thread = "abc"[n % 3]
                units.append(run_unit(user, thread, messages=[("user", f"{thread} says {n}")]))
            events = await commit_all(store, user, units)
            assert {e.thread for e in events} == {"a", "b", "c"}
            # history of one thread, paged backwards to its first event
            got: list[Event] = []
            before = None
            while True:
                page = await store.history(user, thread="b", before_seq=before, limit=7)
                got[:0] = page.events
                if not page.more:
                    break
                before = page.first_seq
            assert got == [e for e in events if e.thread == "b"]
            # the whole log, and a bound
            page = await store.history(user, before_seq=11, limit=4)
            assert [e.seq for e in page.events] == [7, 8, 9, 10]
            assert page.more
            kinds = await store.history(user, thread="a", limit=100, kinds=["message"])
            assert [e.event for e in kinds.events] == ["message"] * 10
            # threads: most recent activity first, titles from the first user message
            listed = await store.threads(user, limit=2)
            assert [t.thread for t in listed.threads] == ["c", "b"]
            assert listed.next == listed.threads[-1].last_seq
            rest = await store.threads(user, before=listed.next, limit=2)
            assert [t.thread for t in rest.threads] == ["a"]
            assert rest.next is None
            a = rest.threads[0]
            assert a.title == "a says 0"
            assert a.created_ts == events[0].ts
            assert a.last_seq == max(e.seq for e in events if e.thread == "a")
            assert (a.live_runs, listed.threads[0].live_runs) == (10, 10)  # pending runs


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_batch_updates_the_summary_once_per_thread(kind: str, tmp_path: Path) -> None:
    """Units of many users and threads committed together: each summary is right."""
    users = [fresh_user() for _ in range(3)]
    async with database(kind, tmp_path) as url, stores(url, 1) as (store,):
        async with trio.open_nursery() as nursery:
            for user in users:
                unit = UnitOfWork(user)
                for thread in ("x", "y"):
                    part = run_unit(user, thread, messages=[("assistant", "hi"), ("user", thread)])
                    unit.events.extend(part.events)
                    unit.runs.update(part.runs)
                unit.threads = {run: row.thread for run, row in unit.runs.items()}
                nursery.start_soon(store.commit, user, 0, unit)
        for user in users:
            page = await store.threads(user)
            assert [(t.thread, t.title, t.last_seq) for t in page.threads] == [
                ("y", "y", 6),
                ("x", "x", 3),
            ]


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_client_message_ids_are_unique_per_user(kind: str, tmp_path: Path) -> None:
    user, other = fresh_user(), fresh_user()
    async with database(kind, tmp_path) as url, stores(url, 1) as (store,):
        unit = run_unit(user, "t1", messages=[("user", "hi")])
        unit.message_ids.append(("agui-1", "t1"))
        await store.commit(user, 0, unit)
        assert await store.message_ids(user, ["agui-1", "agui-2"]) == {"agui-1": "t1"}
        assert await store.message_ids(other, ["agui-1"]) == {}
        again = run_unit(user, "t2", messages=[("user", "hi")])
        again.message_ids.append(("agui-1", "t2"))
        with pytest.raises(na.exceptions.StoreError, match=r"(?i)unique|duplicate"):
            await store.commit(user, 2, again)
        assert (await store.load_user(user)).head_seq == 2  # nothing of it


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_version_3_database_migrates_to_version_4(kind: str, tmp_path: Path) -> None:
    """Every event and run of a version-3 database goes to thread ``main``; the summary rows
    are built, titled with each user's first user message."""
    async with database(kind, tmp_path) as url:
        engine = create_async_engine(url)
        rows = [
            ("alice", 1, "r1", "run_state", 10.0, '{"state":"pending","previous":null}'),
            ("alice", 2, "r1", "message", 11.0, '{"role":"assistant","text":"hello"}'),
            ("alice", 3, "r2", "message", 12.0, '{"role":"user","text":"  first question\\nmore"}'),
            ("alice", 4, "r2", "message", 13.0, '{"role":"user","text":"second"}'),
            ("bob", 1, "r3", "agent_thinking", 20.0, '{"text":"x"}'),
        ]

        async def build_v3() -> None:
            async with engine.begin() as conn:
                await conn.run_sync(meta.create)
                for version in range(3):  # the frozen migrations of versions 1 to 3
                    await conn.run_sync(MIGRATIONS[version])
                await conn.execute(meta.insert().values(key="schema_version", value="3"))
                for row in rows:
                    await conn.exec_driver_sql(
                        "INSERT INTO netra_events (user_id, seq, run_id, event, ts, data) "
                        "VALUES ($1, $2, $3, $4, $5, $6)"
                        if kind == "postgres"
                        else "INSERT INTO netra_events (user_id, seq, run_id, event, ts, data) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        row,
                    )
                await conn.exec_driver_sql(
                    "INSERT INTO netra_runs (user_id, run_id, agent, state, attempt, input, "
                    "result, reason, created_at, updated_at) VALUES "
                    "('alice', 'r2', 'demo', 'completed', 1, NULL, NULL, NULL, 12.0, 13.0)"
                )

        bridge = Bridge.current()
        await bridge.run_on_host(build_v3())
        await bridge.run_on_host(engine.dispose())
        async with stores(url, 1) as (store,):
            assert store._writer.schema_versions == (3, SCHEMA_VERSION)
            page = await store.history("alice", thread="main")
            assert [e.seq for e in page.events] == [1, 2, 3, 4]
            assert {e.thread for e in page.events} == {"main"}
            run = await store.get_run("alice", "r2")
            assert run is not None
            assert (run.thread, run.start_seq) == ("main", None)
            (alice,) = (await store.threads("alice")).threads
            assert (alice.thread, alice.title, alice.created_ts) == ("main", "first question", 10.0)
            assert (alice.last_seq, alice.last_ts, alice.live_runs) == (4, 13.0, 0)
            (bob,) = (await store.threads("bob")).threads
            assert (bob.title, bob.last_seq) == (None, 1)
            # new events extend the migrated summary; the title stays the first one
            await store.commit("alice", 4, run_unit("alice", "main", messages=[("user", "3rd")]))
            (after,) = (await store.threads("alice")).threads
            assert (after.title, after.last_seq) == ("first question", 6)
