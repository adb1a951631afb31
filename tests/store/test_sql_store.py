"""The SQL store's contract, on a real SQLite file and (when reachable) the local PostgreSQL."""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import pytest
import trio
import trio.testing
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import netra_actors as na
from netra_actors._bridge import Bridge
from netra_actors._store import SqlStore
from netra_actors._store._schema import SCHEMA_VERSION
from netra_actors._uow import RunRow, UnitOfWork
from netra_actors.testing import guest_test

PG_URL = os.environ.get("NETRA_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def postgres_reachable() -> bool:
    url = make_url(PG_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            return True
    except OSError:
        return False


extra = MetaData()
things = Table(
    "test_things",
    extra,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(64), nullable=False),
    Column("key", String(64), unique=True, nullable=True),
)


class Base(DeclarativeBase):
    metadata = extra


class Note(Base):
    __tablename__ = "test_notes"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(String(200))


def sqlite_config(tmp_path: Path) -> na.RuntimeConfig:
    return na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "store.db"))


URLS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(
                not postgres_reachable(),
                reason=f"PostgreSQL is not reachable at {PG_URL} (set NETRA_TEST_PG_URL)",
            ),
        ],
    ),
]


def _maintenance_dsn() -> str:
    return (
        make_url(PG_URL)
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )


async def _admin(sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(_maintenance_dsn())
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def pg_admin(sql: str, *args: Any) -> Any:
    """Run one statement on the maintenance database (from trio, on the host loop)."""
    return await Bridge.current().run_on_host(_admin(sql, *args), shield=True)


_PG_DATABASES: set[str] = set()
"""The databases this test process created (dropped when it exits)."""


def _drop_pg_databases() -> None:
    async def drop() -> None:
        for name in sorted(_PG_DATABASES):
            await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    if _PG_DATABASES:
        asyncio.run(drop())


atexit.register(_drop_pg_databases)


async def store_url(kind: str, tmp_path: Path) -> str:
    """The database of a test: a SQLite file in its directory, or a PostgreSQL database of its
    own (one per test directory, so a test that reopens its store finds its data; never the
    shared database, whose schema other versions of this code may have changed)."""
    if kind == "sqlite":
        return na.sqlite_url(tmp_path / "store.db")
    name = "netra_t_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
    if name not in _PG_DATABASES:
        await pg_admin(f"CREATE DATABASE {name}")
        _PG_DATABASES.add(name)
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@asynccontextmanager
async def open_store(kind: str, tmp_path: Path) -> AsyncIterator[SqlStore]:
    config = na.RuntimeConfig(database_url=await store_url(kind, tmp_path))
    store = await SqlStore.open(config, extra_metadata=[extra])
    try:
        yield store
    finally:
        await store.aclose()


def unit_with(user: str, n_events: int, *, run: str | None = None) -> UnitOfWork:
    unit = UnitOfWork(user)
    run_id = run or f"r_{uuid.uuid4().hex[:12]}"
    for i in range(n_events):
        unit.emit(run_id, "agent_thinking", {"text": f"e{i}"})
    now = time.time()
    unit.put_run(
        RunRow(
            user_id=user,
            run_id=run_id,
            agent="demo",
            state="running",
            attempt=1,
            input_json="null",
            result_json=None,
            reason=None,
            created_at=now,
            updated_at=now,
        )
    )
    return unit


def fresh_user() -> str:
    return f"u_{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_commit_assigns_gapless_seqs_and_replays_in_pages(kind: str, tmp_path: Path) -> None:
    user = fresh_user()
    async with open_store(kind, tmp_path) as store:
        assert (await store.load_user(user)).head_seq == 0
        head = 0
        for n in (3, 1, 5):
            events = await store.commit(user, head, unit_with(user, n))
            assert [e.seq for e in events] == list(range(head + 1, head + n + 1))
            head = events[-1].seq
        assert (await store.load_user(user)).head_seq == 9
        pages = [await store.replay(user, after, 4) for after in (0, 4, 8)]
        assert [[e.seq for e in p] for p in pages] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]
        assert pages[0][0].data == {"text": "e0"}
        assert await store.replay(fresh_user(), 0, 10) == []  # scoped by user


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_group_commit_batches_units_of_many_users(kind: str, tmp_path: Path) -> None:
    users = [fresh_user() for _ in range(200)]
    async with open_store(kind, tmp_path) as store:

        async def one(user: str) -> None:
            head = 0
            for _ in range(5):
                events = await store.commit(user, head, unit_with(user, 5))
                head = events[-1].seq

        async with trio.open_nursery() as n:
            for user in users:
                n.start_soon(one, user)
        stats = store.statistics()
        for user in users[:5]:
            assert (await store.load_user(user)).head_seq == 25
    assert stats.units_committed == 1000
    assert stats.batches < 200, stats  # units were committed together


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_bad_unit_fails_alone_in_its_batch(kind: str, tmp_path: Path) -> None:
    key = f"k_{uuid.uuid4().hex[:8]}"
    async with open_store(kind, tmp_path) as store:
        seed = fresh_user()
        seed_unit = unit_with(seed, 1)
        seed_unit.stage(insert(things).values(owner=seed, key=key))
        await store.commit(seed, 0, seed_unit)

        users = [fresh_user() for _ in range(30)]
        bad_user = users[13]
        results: dict[str, object] = {}

        async def one(user: str) -> None:
            unit = unit_with(user, 2)
            unit.stage(Note(owner=user, text="orm row"))
            if user == bad_user:
                unit.stage(insert(things).values(owner=user, key=key))  # duplicate key
            try:
                results[user] = await store.commit(user, 0, unit)
            except na.exceptions.StoreError as exc:
                results[user] = exc

        async with trio.open_nursery() as n:
            for user in users:
                n.start_soon(one, user)
        assert isinstance(results[bad_user], na.exceptions.StoreError)
        assert "unique" in str(results[bad_user]).lower()
        for user in users:
            if user != bad_user:
                assert not isinstance(results[user], BaseException), results[user]
                assert (await store.load_user(user)).head_seq == 2
        assert (await store.load_user(bad_user)).head_seq == 0
        assert await store.replay(bad_user, 0, 10) == []
        assert store.statistics().units_failed == 1


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_runs_are_upserted_and_scoped(kind: str, tmp_path: Path) -> None:
    user, other = fresh_user(), fresh_user()
    async with open_store(kind, tmp_path) as store:
        unit = unit_with(user, 1, run="r_same_id")
        await store.commit(user, 0, unit)
        later = unit_with(user, 1, run="r_same_id")
        row = later.runs["r_same_id"]
        later.runs["r_same_id"] = attrs.evolve(
            row, state="completed", attempt=2, result_json='{"a":1}'
        )
        await store.commit(user, 1, later)
        info = await store.get_run(user, "r_same_id")
        assert info is not None
        assert info.state is na.RunState.COMPLETED
        assert info.attempt == 2
        assert info.result == {"a": 1}
        assert await store.get_run(other, "r_same_id") is None  # scoped: another user sees nothing
        assert [r.run_id for r in await store.list_runs(user, 10)] == ["r_same_id"]
        assert await store.list_runs(other, 10) == []
        assert (await store.load_user(user)).live_runs == ()


@guest_test()
async def test_sqlite_runs_in_wal_mode_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    store = await SqlStore.open(config)
    await store.aclose()
    path = str(tmp_path / "store.db")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT value FROM netra_meta WHERE key='schema_version'").fetchone()
        assert int(version[0]) == SCHEMA_VERSION
        conn.execute("UPDATE netra_meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(na.exceptions.SchemaVersionError, match="upgrade netra_actors"):
        await SqlStore.open(config)


@guest_test()
async def test_migrating_an_empty_database_is_idempotent(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    for _ in range(2):
        store = await SqlStore.open(config)
        await store.commit("u", (await store.load_user("u")).head_seq, unit_with("u", 1))
        await store.aclose()
    with sqlite3.connect(str(tmp_path / "store.db")) as conn:
        assert conn.execute("SELECT count(*) FROM netra_events").fetchone()[0] == 2


@guest_test()
async def test_two_writers_on_one_sqlite_file_wait_instead_of_failing(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE + busy timeout: concurrent writers (two processes' stores) serialize."""
    config = sqlite_config(tmp_path)
    a = await SqlStore.open(config)
    b = await SqlStore.open(config)
    try:

        async def writer(store: SqlStore, user: str) -> None:
            head = 0
            for _ in range(30):
                head = (await store.commit(user, head, unit_with(user, 3)))[-1].seq

        async with trio.open_nursery() as n:
            n.start_soon(writer, a, "alice")
            n.start_soon(writer, b, "bob")
        assert (await a.load_user("bob")).head_seq == 90
        assert (await b.load_user("alice")).head_seq == 90
    finally:
        await a.aclose()
        await b.aclose()


@guest_test()
async def test_a_seq_conflict_from_another_writer_fails_the_unit(tmp_path: Path) -> None:
    """Two processes must never both commit seq n for a user: the primary key refuses it."""
    config = sqlite_config(tmp_path)
    store = await SqlStore.open(config)
    try:
        await store.commit("alice", 0, unit_with("alice", 2))
        with pytest.raises(na.exceptions.StoreError):
            await store.commit("alice", 1, unit_with("alice", 2))  # stale head
        assert [e.seq for e in await store.replay("alice", 0, 10)] == [1, 2]
    finally:
        await store.aclose()


def test_the_store_needs_the_asyncio_host() -> None:
    async def main() -> None:
        await SqlStore.open(na.RuntimeConfig())

    with pytest.raises(na.exceptions.RuntimeClosedError, match=r"netra_actors\.run"):
        trio.run(main)


@guest_test()
async def test_a_developer_listener_raising_anything_fails_only_its_unit(tmp_path: Path) -> None:
    """The writer survives any exception from a developer's ORM code; others keep committing."""
    from sqlalchemy import event as sa_event

    def refuse(mapper: object, connection: object, target: Note) -> None:
        if target.text == "refuse":
            raise RuntimeError("my listener says no")

    sa_event.listen(Note, "before_insert", refuse)
    try:
        async with open_store("sqlite", tmp_path) as store:
            bad = unit_with("alice", 1)
            bad.stage(Note(owner="alice", text="refuse"))
            with pytest.raises(na.exceptions.StoreError, match="my listener says no"):
                await store.commit("alice", 0, bad)
            good = unit_with("bob", 2)
            good.stage(Note(owner="bob", text="fine"))
            with trio.fail_after(5):
                assert [e.seq for e in await store.commit("bob", 0, good)] == [1, 2]
    finally:
        sa_event.remove(Note, "before_insert", refuse)


def test_the_frozen_migrations_match_the_live_tables() -> None:
    """Migrating an empty database (every frozen migration) yields exactly the live tables."""
    from sqlalchemy import create_engine, inspect

    from netra_actors._store._schema import SCHEMA_VERSION as version
    from netra_actors._store._schema import (
        events,
        inbox,
        leases,
        message_ids,
        migrate,
        model_calls,
        nodes,
        replies,
        runs,
        threads,
    )

    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        assert migrate(conn) == (0, version)
        found = inspect(conn)
        tables = (events, runs, leases, nodes, inbox, replies, model_calls, threads, message_ids)
        for table in tables:
            columns = {c["name"]: c for c in found.get_columns(table.name)}
            assert set(columns) == {c.name for c in table.columns}
            for c in table.columns:
                assert columns[c.name]["nullable"] == c.nullable, (table.name, c.name)
            indexes = {i["name"] for i in found.get_indexes(table.name)}
            assert indexes >= {i.name for i in table.indexes}, table.name
    # A new version: add its frozen migration and test the path from the previous version
    # (tests/store/test_cluster.py tests version 1 -> 2; version 3 adds netra_model_calls;
    # tests/store/test_threads_store.py tests version 3 -> 4, threads; version 5, durable runs,
    # adds the runs' waits and the model calls' places: the test below; version 6, node-level
    # liveness, adds netra_nodes: tests/store/test_cluster.py, the version 5 upgrade; version 7
    # indexes runs by (state, wait): the test below).
    assert version == 7


def test_a_version_4_database_migrates_to_durable_runs() -> None:
    """The durable-runs migration adds nullable columns and indexes: earlier rows stay valid."""
    from sqlalchemy import create_engine, inspect, text

    from netra_actors._store._schema import MIGRATIONS, meta, migrate

    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        meta.create(conn)
        for n in (0, 1, 2, 3):
            MIGRATIONS[n](conn)
        conn.execute(meta.insert().values(key="schema_version", value="4"))
        conn.execute(
            text(
                "INSERT INTO netra_runs (user_id, run_id, agent, state, attempt, created_at, "
                "updated_at, thread, start_seq) VALUES ('u', 'r', 'a', 'running', 1, 0, 0, "
                "'trip', 7)"
            )
        )
        assert migrate(conn) == (4, 7)
        row = conn.execute(
            text("SELECT state, thread, start_seq, wait, wake_at FROM netra_runs")
        ).one()
        assert tuple(row) == ("running", "trip", 7, None, None)
        found = inspect(conn)
        assert "after_seq" in {c["name"] for c in found.get_columns("netra_model_calls")}
        runs_indexes = {i["name"] for i in found.get_indexes("netra_runs")}
        assert {"netra_runs_state_wait", "netra_runs_wake_at"} <= runs_indexes  # (7 replaced 5's)
        assert "netra_runs_state" not in runs_indexes
        assert {"netra_events_run", "netra_events_user_thread"} <= {
            i["name"] for i in found.get_indexes("netra_events")
        }


# -- the writer and the reader: one hand-off per batch, failure, batched reads ----------------


def kill_writer(store: SqlStore, kind: str) -> None:
    """Make the writer's next batch raise an unexpected exception (a bug, not a SQL error)."""

    def boom(*_args: Any) -> Any:
        raise RuntimeError("a bug in the writer")

    async def aboom(*_args: Any) -> Any:
        boom()

    if kind == "sqlite":
        store._writer.handle = boom  # runs in the writer thread
    else:
        store._writer._commit_batch = aboom  # the writer task on the asyncio loop


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_dead_writer_fails_every_waiter_and_every_later_commit(
    kind: str, tmp_path: Path
) -> None:
    async with open_store(kind, tmp_path) as store:
        kill_writer(store, kind)
        users = [fresh_user() for _ in range(50)]
        errors: dict[str, BaseException] = {}

        async def one(user: str) -> None:
            try:
                await store.commit(user, 0, unit_with(user, 3))
            except na.exceptions.StoreError as exc:
                errors[user] = exc

        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                for user in users:
                    n.start_soon(one, user)
        assert set(errors) == set(users)  # in flight and queued: every one of them
        assert all(
            "the store writer stopped: RuntimeError: a bug" in str(e) for e in errors.values()
        )
        with pytest.raises(na.exceptions.StoreError, match="the store writer stopped"):
            await store.commit("later", 0, unit_with("later", 1))
        with pytest.raises(na.exceptions.StoreError, match="the store writer stopped"):
            await store.check()
        assert (await store.load_user(users[0])).head_seq == 0  # reads still work


@guest_test()
async def test_a_database_that_cannot_be_opened_fails_open_clearly(tmp_path: Path) -> None:
    (tmp_path / "adir.db").mkdir()
    config = na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "adir.db"))
    with pytest.raises(na.exceptions.StoreError, match="cannot open the database"):
        await SqlStore.open(config)


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_bad_unit_without_statements_fails_alone(kind: str, tmp_path: Path) -> None:
    """The raw fast path (no developer statements) isolates a failing unit too."""
    async with open_store(kind, tmp_path) as store:
        stale = fresh_user()
        await store.commit(stale, 0, unit_with(stale, 2))
        fresh = [fresh_user() for _ in range(40)]
        users = [*fresh[:20], stale, *fresh[20:]]
        results: dict[str, object] = {}

        async def one(user: str) -> None:
            try:
                results[user] = await store.commit(user, 0, unit_with(user, 3))
            except na.exceptions.StoreError as exc:
                results[user] = exc

        before = store.statistics()
        async with trio.open_nursery() as n:
            for user in users:
                n.start_soon(one, user)
        after = store.statistics()
        assert isinstance(
            results[stale], na.exceptions.StoreError
        )  # seq 1 again: the primary key refuses
        for user in fresh:
            assert isinstance(results[user], list), results[user]
            assert (await store.load_user(user)).head_seq == 3
        assert [e.seq for e in await store.replay(stale, 0, 10)] == [1, 2]
        assert after.units_failed - before.units_failed == 1
        assert after.units_committed - before.units_committed == 40
        # (Whether the bad unit shared a batch depends on the writer's timing; when it did, the
        # batch was retried unit by unit: test_a_bad_unit_fails_alone_in_its_batch forces that.)


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_concurrent_activations_are_one_read(kind: str, tmp_path: Path) -> None:
    async with open_store(kind, tmp_path) as store:
        users = [fresh_user() for _ in range(300)]
        for i, user in enumerate(users[:10]):
            await store.commit(user, 0, unit_with(user, i + 1))
        snapshots: dict[str, na.RunState | int] = {}

        async def activate(user: str) -> None:
            snapshot = await store.load_user(user)
            snapshots[user] = snapshot.head_seq
            assert all(r.user_id == user for r in snapshot.live_runs)
            assert len(snapshot.live_runs) == (1 if user in users[:10] else 0)

        calls = store.load_calls
        async with trio.open_nursery() as n:
            for user in users:
                n.start_soon(activate, user)
        # SQLite: the first of them finds the reader idle and reads at once (test_read_now.py)
        assert store.load_calls == calls + (2 if kind == "sqlite" else 1)
        assert [snapshots[u] for u in users[:10]] == list(range(1, 11))
        assert all(snapshots[u] == 0 for u in users[10:])


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_commit_cannot_be_cancelled(kind: str, tmp_path: Path) -> None:
    user = fresh_user()
    async with open_store(kind, tmp_path) as store:
        with trio.CancelScope() as scope:
            scope.cancel()  # cancelled before it even starts: the outcome is still observed
            events = await store.commit(user, 0, unit_with(user, 4))
            assert [e.seq for e in events] == [1, 2, 3, 4]
            await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        assert [e.seq for e in await store.replay(user, 0, 10)] == [1, 2, 3, 4]
        with trio.move_on_after(0):  # a read, unlike a commit, can be cancelled
            await store.replay(user, 0, 10)
            pytest.fail("the read was not cancelled")


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_aclose_commits_what_is_queued(kind: str, tmp_path: Path) -> None:
    users = [fresh_user() for _ in range(100)]
    results: dict[str, list[na.Event]] = {}
    config = na.RuntimeConfig(database_url=await store_url(kind, tmp_path))
    store = await SqlStore.open(config)

    async def one(user: str) -> None:
        results[user] = await store.commit(user, 0, unit_with(user, 2))

    async with trio.open_nursery() as n:
        for user in users:
            n.start_soon(one, user)
        await trio.testing.wait_all_tasks_blocked()  # every commit is submitted
        await store.aclose()
    assert len(results) == len(users)
    with pytest.raises(na.exceptions.StoreError, match="closed"):
        await store.commit("late", 0, unit_with("late", 1))
    with pytest.raises(na.exceptions.StoreError, match="closed"):
        await store.load_user("late")
    async with open_store(kind, tmp_path) as again:
        for user in users[:5]:
            assert (await again.load_user(user)).head_seq == 2


_SCOPED_RE = re.compile(r"\buser_id\b\s*(=|IN\b)", re.IGNORECASE)


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_every_statement_on_netra_tables_names_the_user(kind: str, tmp_path: Path) -> None:
    statements: list[str] = []
    async with open_store(kind, tmp_path) as store:
        store.statement_hook = statements.append
        user = fresh_user()
        await store.load_user(user)
        await store.commit(user, 0, unit_with(user, 2, run="r_x"))
        await store.replay(user, 0, 10)
        await store.get_run(user, "r_x")
        await store.list_runs(user, 10)
    # (``pg_notify('netra_events', …)`` names a channel, not the table.)
    ours = [
        s
        for s in statements
        if re.search(r"\bnetra_(events|runs)\b", s) and not s.startswith("SELECT pg_notify")
    ]
    assert len(ours) >= 6, ours
    for s in ours:
        head = s.lstrip().upper()
        if head.startswith(("INSERT", "COPY")):
            assert "user_id" in s
        else:
            assert _SCOPED_RE.search(s), s


@guest_test()
async def test_reads_see_every_commit_on_sqlite(tmp_path: Path) -> None:
    """The reader thread has its own connection: a commit is visible as soon as it returns."""
    config = sqlite_config(tmp_path)
    store = await SqlStore.open(config)
    try:
        head = 0
        for _ in range(20):
            head = (await store.commit("alice", head, unit_with("alice", 1)))[-1].seq
            assert (await store.load_user("alice")).head_seq == head
    finally:
        await store.aclose()
    with sqlite3.connect(str(tmp_path / "store.db")) as conn:
        assert conn.execute("SELECT count(*) FROM netra_events").fetchone()[0] == 20


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_the_asyncio_engine_is_there_for_developers(kind: str, tmp_path: Path) -> None:
    from sqlalchemy import select, text

    from netra_actors._bridge import Bridge

    async with open_store(kind, tmp_path) as store:
        user = fresh_user()
        await store.commit(user, 0, unit_with(user, 3))

        async def count() -> int:
            async with store.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                rows = await conn.execute(select(things.c.id).where(things.c.owner == user))
                assert rows.all() == []
                result = await conn.execute(
                    text("SELECT count(*) FROM netra_events WHERE user_id = :u"), {"u": user}
                )
                return int(result.scalar_one())

        assert await Bridge.current().run_on_host(count()) == 3


@guest_test()
async def test_sqlite_writes_a_batch_of_each_kind_in_a_few_statements_exactly(
    tmp_path: Path,
) -> None:
    """A batch's events, runs and thread rows go to SQLite as a few multi-row statements (blocks
    of a power of two rows, each one ``sqlite3_step``), not one ``executemany`` step per row, and
    come back exactly as committed: odd text (a NUL too), floats, NULLs."""
    from netra_actors._store import _sqlite

    assert list(_sqlite.blocks(0)) == []
    assert list(_sqlite.blocks(1)) == [(0, 1)]
    assert list(_sqlite.blocks(7)) == [(0, 4), (4, 2), (6, 1)]
    assert list(_sqlite.blocks(1100)) == [(0, 512), (512, 512), (1024, 64), (1088, 8), (1096, 4)]
    odd = 'héllo 😀 \\n "q" \x01 \t ☃ \x00 end'
    users = [f"{fresh_user()}{odd}" for _ in range(20)]
    async with open_store("sqlite", tmp_path) as store:
        statements: list[str] = []
        store.statement_hook = statements.append
        committed: dict[str, list[Any]] = {}

        async def one(user: str) -> None:
            unit = unit_with(user, 3, run=f"r{odd}")
            unit.emit(None, "note", {"text": odd, "f": 0.1 + 0.2, "big": 2**53 + 1})
            unit.threads = {f"r{odd}": f"t{odd}"}
            unit.thread = f"t{odd}"
            committed[user] = await store.commit(user, 0, unit)

        lock = sqlite3.connect(str(tmp_path / "store.db"), isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the units queue up behind it: one batch
        async with trio.open_nursery() as n:
            for user in users:
                n.start_soon(one, user)
            await trio.sleep(0.2)
            lock.execute("COMMIT")
            lock.close()
        store.statement_hook = None
        for user in users:
            assert await store.replay(user, 0, 10) == committed[user]
            (run,) = await store.list_runs(user, 10)
            assert run.run_id == f"r{odd}"
            (thread,) = (await store.threads(user)).threads
            assert (thread.thread, thread.last_seq) == (f"t{odd}", 4)
        assert statements.count("BEGIN IMMEDIATE") <= 2, statements  # written together
        for table, rows in (("netra_events", 80), ("netra_runs", 20), ("netra_threads", 20)):
            written = [st for st in statements if st.startswith(f"INSERT INTO {table} ")]
            # 80 rows: blocks of 64 and 16; 20 rows: 16 and 4 (if all in the one batch)
            assert len(written) <= 2 * len(list(_sqlite.blocks(rows))), written
            assert sum(st.count("), (") + 1 for st in written) == rows
