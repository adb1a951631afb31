"""The store half of a cluster: schema v2, leases with fencing, delivery hints, the inbox.

Every PostgreSQL test runs in a fresh database of its own (``netra_t_<hex>``, created on the
maintenance database and dropped afterwards); "two nodes" are two ``SqlStore`` instances on one
database.
"""

from __future__ import annotations

import math
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from test_sql_store import PG_URL, URLS, fresh_user, pg_admin, postgres_reachable, unit_with

import netra_actors as na
from netra_actors._bridge import Bridge
from netra_actors._exceptions import LeaseLostError
from netra_actors._store import SqlStore
from netra_actors._store._schema import MIGRATIONS, SCHEMA_VERSION, meta
from netra_actors._store._sqlite import RENEW as SQLITE_RENEW
from netra_actors._uow import UnitOfWork
from netra_actors.testing import guest_test


def cluster_config(url: str, *, ttl: float = 10.0, **kw: Any) -> na.RuntimeConfig:
    return na.RuntimeConfig(database_url=url, lease_ttl=ttl, **kw)


@asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh database: a new SQLite file, or a new PostgreSQL database."""
    if kind == "sqlite":
        yield na.sqlite_url(tmp_path / f"cluster_{uuid.uuid4().hex[:6]}.db")
        return
    name = f"netra_t_{uuid.uuid4().hex[:12]}"
    await pg_admin(f"CREATE DATABASE {name}")
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@asynccontextmanager
async def stores(
    url: str, n: int, *, ttl: float = 10.0, **kw: Any
) -> AsyncIterator[list[SqlStore]]:
    opened: list[SqlStore] = []
    try:
        for _ in range(n):
            opened.append(await SqlStore.open(cluster_config(url, ttl=ttl, **kw)))
        yield opened
    finally:
        for store in opened:
            await store.aclose()


async def wait_for(predicate: Callable[[], bool], *, within: float = 5.0) -> None:
    """Poll ``predicate`` (state of the store's threads and connections: no trio event)."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


def pause_renewals(store: SqlStore) -> None:
    """As if the node stopped (SIGSTOP): its writer renews no lease from now on."""
    store._leases.next_renewal = math.inf


# -- schema v2 -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_version_1_database_migrates_to_version_2(kind: str, tmp_path: Path) -> None:
    async with database(kind, tmp_path) as url:
        engine = create_async_engine(url)

        async def build_v1() -> None:
            async with engine.begin() as conn:
                await conn.run_sync(meta.create)
                await conn.run_sync(MIGRATIONS[0])  # the frozen version-1 schema
                await conn.execute(meta.insert().values(key="schema_version", value="1"))
                await conn.exec_driver_sql(
                    "INSERT INTO netra_events (user_id, seq, run_id, event, ts, data) "
                    "VALUES ('alice', 1, NULL, 'note', 0.0, '{}')"
                )

        bridge = Bridge.current()
        await bridge.run_on_host(build_v1())
        await bridge.run_on_host(engine.dispose())
        async with stores(url, 1) as (store,):
            assert store._writer.schema_versions == (1, SCHEMA_VERSION)
            assert (await store.load_user("alice")).head_seq == 1  # version-1 rows stay
            assert await store.acquire("alice") == 1  # the new tables are there
            await store.post_command("alice", "q1", "say", "{}")
            assert [c.request_id for c in await store.take_commands(["alice"], 10)] == ["q1"]
        async with stores(url, 1) as (again,):
            assert again._writer.schema_versions == (SCHEMA_VERSION, SCHEMA_VERSION)


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_fresh_database_replays_every_migration(kind: str, tmp_path: Path) -> None:
    async with database(kind, tmp_path) as url, stores(url, 1) as (store,):
        assert store._writer.schema_versions == (0, SCHEMA_VERSION)


# -- node identity and leases ----------------------------------------------------------------


@guest_test()
async def test_every_store_is_a_new_node_incarnation(tmp_path: Path) -> None:
    url = na.sqlite_url(tmp_path / "n.db")
    async with stores(url, 2, node_id="web-1") as (a, b):
        assert a.node != b.node
        assert a.node.startswith("web-1-")
        assert b.node.startswith("web-1-")


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_takeover_only_after_expiry_and_epochs_only_grow(kind: str, tmp_path: Path) -> None:
    ttl = 0.3
    user = fresh_user()
    async with database(kind, tmp_path) as url, stores(url, 2, ttl=ttl) as (a, b):
        assert await a.acquire(user) == 1
        assert await b.acquire(user) is None  # held and unexpired
        assert await a.acquire(user) == 2  # the holder re-takes it: a new epoch
        assert a.held_leases() == {user: 2}
        pause_renewals(a)  # a stops renewing (paused, partitioned)
        t0 = time.monotonic()
        epoch = None
        while epoch is None:
            epoch = await b.acquire(user)
            await trio.sleep(0.02)
        waited = time.monotonic() - t0
        assert epoch == 3
        assert waited >= ttl * 0.5, waited  # (renewed at most ttl/3 before the pause)
        assert b.statistics().leases_taken_over == 1
        assert await a.acquire(user) is None  # b renews it now
        await b.release(user, 3)
        assert b.held_leases() == {}
        assert await a.acquire(user) == 4  # released: taken at once, epoch still grows
        assert a.statistics().leases_taken_over == 0  # a release is a hand-over, not a takeover


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_another_node_cannot_acquire_while_the_owner_renews(
    kind: str, tmp_path: Path
) -> None:
    users = [fresh_user() for _ in range(20)]
    async with database(kind, tmp_path) as url, stores(url, 2, ttl=0.3) as (a, b):
        with trio.fail_after(5):
            async with trio.open_nursery() as n:
                for u in users:
                    n.start_soon(a.acquire, u)
        assert set(a.held_leases()) == set(users)
        deadline = time.monotonic() + 1.2  # four TTLs
        while time.monotonic() < deadline:
            assert await b.acquire(users[0]) is None
            assert await b.acquire(users[-1]) is None
            await trio.sleep(0.05)
        assert a.statistics().lease_renewals >= 4
        await a.release_all()
        assert a.held_leases() == {}
        assert await b.acquire(users[0]) == 2  # released: taken at once


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_acquisitions_that_wait_share_one_transaction(kind: str, tmp_path: Path) -> None:
    users = [fresh_user() for _ in range(300)]
    async with database(kind, tmp_path) as url, stores(url, 1) as (store,):
        await store.acquire(fresh_user())  # the first renewal is behind us
        before = store.statistics().batches
        epochs: dict[str, int | None] = {}

        async def one(u: str) -> None:
            epochs[u] = await store.acquire(u)

        async with trio.open_nursery() as n:
            for u in users:
                n.start_soon(one, u)
        assert set(epochs.values()) == {1}
        assert store.statistics().batches - before <= 3  # one, or a few when the writer raced


async def _hold_sqlite_writer(url: str) -> sqlite3.Connection:
    """Another connection holds SQLite's write lock: the writer's BEGIN IMMEDIATE waits."""
    path = make_url(url).database
    assert path
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


@pytest.mark.parametrize("with_acquire", [False, True], ids=["units", "with_acquire"])
@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_fenced_commit_after_a_takeover_fails_alone_and_writes_nothing(
    kind: str, with_acquire: bool, tmp_path: Path
) -> None:
    """On PostgreSQL the lease check and the writes are one statement: a transaction of its
    own, or (``with_acquire``: a lease acquisition rides the batch) one statement of the
    batch's transaction. A lost lease there writes nothing, the statement runs again without
    that unit, and only the committed units are hinted."""
    lost, kept, unfenced, newcomer = fresh_user(), fresh_user(), fresh_user(), fresh_user()
    others = [fresh_user() for _ in range(10)]
    async with database(kind, tmp_path) as url, stores(url, 2, ttl=0.3) as (a, b):
        hints = Hints()
        if a.notifies:
            await b.listen(hints.on_event)
            await wait_for(lambda: hints.events == [(None, 0)])
        epochs = {u: await a.acquire(u) for u in (lost, kept, *others)}
        pause_renewals(a)
        with trio.fail_after(5):
            while (taken := await b.acquire(lost)) is None:  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert taken == 2
        results: dict[str, object] = {}

        async def one(u: str, epoch: int | None) -> None:
            try:
                results[u] = await a.commit(u, 0, unit_with(u, 2), epoch=epoch)
            except na.exceptions.StoreError as exc:
                results[u] = exc

        async def acquire(u: str) -> None:
            results[u] = await a.acquire(u)

        lock = await _hold_sqlite_writer(url) if kind == "sqlite" else None
        blocker = fresh_user()
        before = a.statistics()
        async with trio.open_nursery() as n:
            if lock is not None:  # the writer waits in its first batch; the rest queue up
                n.start_soon(one, blocker, None)
                await trio.sleep(0.2)
            for u in (kept, *others[:5], lost, *others[5:]):
                n.start_soon(one, u, epochs[u])
            n.start_soon(one, unfenced, None)
            if with_acquire:
                n.start_soon(acquire, newcomer)
            await trio.sleep(0.1)
            if lock is not None:
                lock.execute("COMMIT")
                lock.close()
        after = a.statistics()
        assert after.batches - before.batches == (2 if kind == "sqlite" else 1)  # one batch
        err = results[lost]
        assert isinstance(err, LeaseLostError)
        assert isinstance(err, na.exceptions.StoreError)
        assert str(err) == f"this node no longer owns user {lost!r}'s session (lease epoch 1)"
        for u in (kept, unfenced, *others):  # an expired lease nobody took is still ours
            assert isinstance(results[u], list), results[u]
        if not with_acquire:
            results[newcomer] = await a.acquire(newcomer)
        assert results[newcomer] == 1
        assert await a.replay(lost, 0, 10) == []  # nothing of it
        assert (await b.load_user(lost)).head_seq == 0
        assert after.fenced_units == 1
        assert after.leases_lost == 1
        assert after.units_failed - before.units_failed == 1
        assert after.isolated_retries == before.isolated_retries
        assert lost not in a.held_leases()
        if a.notifies:  # hints come in commit order: once the last one is in, all are
            await a.commit(newcomer, 0, unit_with(newcomer, 1), epoch=1)
            await wait_for(lambda: (newcomer, 1) in hints.events)
            assert sorted(hints.events[1:-1]) == sorted((u, 2) for u in (kept, unfenced, *others))
        # The new owner commits with its epoch; the old one never again.
        assert [e.seq for e in await b.commit(lost, 0, unit_with(lost, 1), epoch=2)] == [1]
        with pytest.raises(LeaseLostError):
            await a.commit(lost, 1, unit_with(lost, 1), epoch=1)


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_re_taking_a_lease_fences_the_older_epoch(kind: str, tmp_path: Path) -> None:
    user = fresh_user()
    async with database(kind, tmp_path) as url, stores(url, 1) as (store,):
        assert await store.acquire(user) == 1
        assert await store.acquire(user) == 2
        with pytest.raises(LeaseLostError, match="lease epoch 1"):
            await store.commit(user, 0, unit_with(user, 1), epoch=1)
        assert [e.seq for e in await store.commit(user, 0, unit_with(user, 1), epoch=2)] == [1]
        with pytest.raises(LeaseLostError):  # never acquired
            await store.commit("nobody", 0, unit_with("nobody", 1), epoch=1)


def _count_renewals(statements: list[str]) -> int:
    return sum(1 for s in statements if s.startswith("INSERT INTO netra_nodes "))


async def _rows(store: SqlStore, sql: str) -> list[Any]:
    """Rows of ``sql`` read through the store's own engine (either database)."""

    async def read() -> list[Any]:
        async with store.engine.connect() as conn:
            return list((await conn.exec_driver_sql(sql)).all())

    return await Bridge.current().run_on_host(read())


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_bulk_renewal_is_one_row_per_interval(kind: str, tmp_path: Path) -> None:
    ttl = 0.6  # renewal every 0.2 s
    users = [fresh_user() for _ in range(50)]
    async with database(kind, tmp_path) as url, stores(url, 1, ttl=ttl) as (store,):
        async with trio.open_nursery() as n:
            for u in users:
                n.start_soon(store.acquire, u)
        leases_before = await _rows(
            store, "SELECT user_id, node, epoch, expires_at FROM netra_leases"
        )
        (node_before,) = await _rows(store, "SELECT node, expires_at FROM netra_nodes")
        statements: list[str] = []
        store.statement_hook = statements.append
        await trio.sleep(1.0)
        store.statement_hook = None
        renewals = _count_renewals(statements)
        assert 3 <= renewals <= 7, statements
        lease_statements = [s for s in statements if "netra_leases" in s]
        assert lease_statements == []  # no statement, and no row, per user
        if kind == "sqlite":
            assert SQLITE_RENEW in statements
        # The user's rows were not rewritten; only the node's one row moved on.
        after = await _rows(store, "SELECT user_id, node, epoch, expires_at FROM netra_leases")
        assert sorted(after) == sorted(leases_before)
        (node_after,) = await _rows(store, "SELECT node, expires_at FROM netra_nodes")
        assert node_after[0] == node_before[0] == store.node
        assert node_after[1] > node_before[1]
        assert store.statistics().leases_held == 50
        assert set(await store.free_leases(users)) == set()


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_version_5_database_keeps_its_leases_across_the_upgrade(
    kind: str, tmp_path: Path
) -> None:
    """Version 6 moves liveness to one row per node: a live lease of version 5 stays held by
    its node (until that node's latest lease would have expired), a released one stays free."""
    async with database(kind, tmp_path) as url:
        engine = create_async_engine(url)

        async def build_v5() -> None:
            async with engine.begin() as conn:
                await conn.run_sync(meta.create)
                for version in range(5):
                    await conn.run_sync(MIGRATIONS[version])
                await conn.execute(meta.insert().values(key="schema_version", value="5"))
                await conn.exec_driver_sql(
                    "INSERT INTO netra_leases (user_id, node, epoch, expires_at) VALUES "
                    "('held', 'old-node', 3, 9e12), ('released', 'old-node', 2, 0), "
                    "('lapsed', 'gone-node', 4, 1.0)"
                )

        bridge = Bridge.current()
        await bridge.run_on_host(build_v5())
        await bridge.run_on_host(engine.dispose())
        async with stores(url, 1) as (store,):
            assert store._writer.schema_versions == (5, SCHEMA_VERSION)
            assert await store.free_leases(["held", "released", "lapsed"]) == [
                "released",
                "lapsed",
            ]
            assert await store.acquire("held") is None  # its node is alive until 9e12
            assert await store.acquire("released") == 3
            assert await store.acquire("lapsed") == 5
            assert sorted(await _rows(store, "SELECT node FROM netra_nodes")) == sorted(
                [("old-node",), ("gone-node",), (store.node,)]
            )


@guest_test()
async def test_the_deadline_stops_moving_when_renewal_fails_on_sqlite(tmp_path: Path) -> None:
    url = na.sqlite_url(tmp_path / "r.db")
    async with stores(url, 1, ttl=0.6, busy_timeout=0.05) as (store,):
        user = fresh_user()
        assert await store.acquire(user) == 1
        d0 = store.lease_deadline()
        assert store.lease_valid_until(user) >= d0
        assert store.lease_valid_until("nobody") == -math.inf
        await trio.sleep(0.5)
        d1 = store.lease_deadline()
        assert d1 > d0  # renewals move it
        assert d1 > time.monotonic()
        lock = await _hold_sqlite_writer(url)  # now every renewal fails (busy timeout)
        try:
            await trio.sleep(0.4)
            d2 = store.lease_deadline()
            await trio.sleep(0.6)
            assert store.lease_deadline() == d2  # no renewal succeeded
            assert store.lease_deadline() < time.monotonic()  # past it: stop acting as owner
            assert store.statistics().lease_renewals_failing >= 1
        finally:
            lock.execute("COMMIT")
            lock.close()
        await wait_for(lambda: store.lease_deadline() > time.monotonic())
        assert store.statistics().lease_renewals_failing == 0


@pytest.mark.postgres
@pytest.mark.skipif(not postgres_reachable(), reason=f"PostgreSQL is not reachable at {PG_URL}")
@guest_test()
async def test_the_deadline_stops_moving_when_renewal_fails_on_postgres(tmp_path: Path) -> None:
    async with database("postgres", tmp_path) as url, stores(url, 1, ttl=0.6) as (store,):
        name = make_url(url).database
        assert await store.acquire(fresh_user()) == 1
        d0 = store.lease_deadline()
        await trio.sleep(0.5)
        assert store.lease_deadline() > d0
        pid = store._writer._conn.get_server_pid()
        await pg_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        try:
            await pg_admin("SELECT pg_terminate_backend($1)", pid)
            await wait_for(lambda: store.statistics().lease_renewals_failing >= 1)
            d2 = store.lease_deadline()
            await trio.sleep(0.6)
            assert store.lease_deadline() == d2
            assert store.statistics().lease_renewals_failing >= 2
        finally:
            await pg_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await wait_for(lambda: store.lease_deadline() > time.monotonic())
        assert store.statistics().lease_renewals_failing == 0


# -- delivery hints --------------------------------------------------------------------------

pg_only = [
    pytest.mark.postgres,
    pytest.mark.skipif(not postgres_reachable(), reason=f"PostgreSQL is not reachable at {PG_URL}"),
]


class Hints:
    def __init__(self) -> None:
        self.events: list[tuple[str | None, int]] = []
        self.inbox: list[str] = []
        self.replies: list[str] = []

    def on_event(self, user_id: str | None, seq: int) -> None:
        self.events.append((user_id, seq))

    def on_inbox(self, user_id: str) -> None:
        self.inbox.append(user_id)

    def on_reply(self, request_id: str) -> None:
        self.replies.append(request_id)


@pytest.mark.parametrize("kind", [pytest.param("postgres", marks=pg_only)])
@guest_test()
async def test_hints_arrive_at_another_nodes_listener(kind: str, tmp_path: Path) -> None:
    user = fresh_user()
    async with database(kind, tmp_path) as url, stores(url, 2) as (a, b):
        hints = Hints()
        assert b.notifies
        await b.listen(hints.on_event, on_inbox=hints.on_inbox, on_reply=hints.on_reply)
        await wait_for(lambda: hints.events == [(None, 0)])  # connected: catch up once
        assert hints.inbox == hints.replies == []
        await a.commit(user, 0, unit_with(user, 3))
        await a.commit(user, 3, unit_with(user, 2))
        await wait_for(lambda: len(hints.events) == 3)
        assert hints.events[1:] == [(user, 3), (user, 5)]  # user and head, once per commit
        await a.post_command(user, "req-1", "say", '{"text": "hi"}')
        await wait_for(lambda: hints.inbox == [user])
        unit = UnitOfWork(user)
        unit.replies.append(("req-1", user, True, "{}"))
        await a.commit(user, 5, unit)
        await wait_for(lambda: hints.replies == ["req-1"])
        assert len(hints.events) == 3  # a unit without events sends no event hint


@pytest.mark.parametrize("kind", [pytest.param("postgres", marks=pg_only)])
@guest_test()
async def test_the_listener_reconnects_and_signals_catch_up(kind: str, tmp_path: Path) -> None:
    user = fresh_user()
    async with database(kind, tmp_path) as url, stores(url, 2) as (a, b):
        hints = Hints()
        await b.listen(hints.on_event)
        assert b.listener_connects == 1
        await wait_for(lambda: b.listener_connects == 1 and hints.events == [(None, 0)])
        pid = b._listener.conn.get_server_pid()
        await pg_admin("SELECT pg_terminate_backend($1)", pid)
        await wait_for(lambda: b.listener_connects == 2 and hints.events == [(None, 0)] * 2)
        await a.commit(user, 0, unit_with(user, 1))
        await wait_for(lambda: hints.events[-1] == (user, 1))


@guest_test()
async def test_sqlite_never_sends_hints_and_heads_are_polled(tmp_path: Path) -> None:
    users = [fresh_user() for _ in range(3)]
    async with stores(na.sqlite_url(tmp_path / "h.db"), 2) as (a, b):
        hints = Hints()
        assert not b.notifies
        await b.listen(hints.on_event, on_inbox=hints.on_inbox, on_reply=hints.on_reply)
        await a.commit(users[0], 0, unit_with(users[0], 4))
        await a.commit(users[1], 0, unit_with(users[1], 1))
        assert await b.heads(users) == {users[0]: 4, users[1]: 1, users[2]: 0}
        await trio.sleep(0.1)
        assert hints.events == []
        assert hints.inbox == hints.replies == []


@pytest.mark.parametrize("kind", [pytest.param("postgres", marks=pg_only)])
@guest_test()
async def test_heads_on_postgres(kind: str, tmp_path: Path) -> None:
    users = [fresh_user() for _ in range(3)]
    async with database(kind, tmp_path) as url, stores(url, 1) as (store,):
        await store.commit(users[0], 0, unit_with(users[0], 2))
        assert await store.heads(users) == {users[0]: 2, users[1]: 0, users[2]: 0}


# -- the inbox -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_commands_are_consumed_with_the_unit_and_replies_read_once(
    kind: str, tmp_path: Path
) -> None:
    alice, bob = fresh_user(), fresh_user()
    async with database(kind, tmp_path) as url, stores(url, 2) as (owner, other):
        for i in range(3):
            await other.post_command(alice, f"a{i}", "say", f'{{"n": {i}}}')
        await other.post_command(bob, "b0", "cancel_run", "{}")
        await other.post_command(alice, "a0", "say", '{"n": "again"}')  # a repeat: ignored
        mine = await owner.take_commands([alice], 10)
        assert [(c.request_id, c.kind, c.payload) for c in mine] == [
            ("a0", "say", '{"n": 0}'),
            ("a1", "say", '{"n": 1}'),
            ("a2", "say", '{"n": 2}'),
        ]
        assert all(c.user_id == alice for c in mine)
        assert [c.id for c in mine] == sorted(c.id for c in mine)
        everyone = await owner.take_commands(None, 10)
        assert [c.request_id for c in everyone] == ["a0", "a1", "a2", "b0"]
        assert [c.request_id for c in await owner.take_commands(None, 2)] == ["a0", "a1"]
        assert await owner.take_commands(["nobody"], 10) == []

        epoch = await owner.acquire(alice)
        assert epoch is not None
        unit = unit_with(alice, 1)
        unit.inbox_done.extend(c.id for c in mine[:2])
        unit.replies.append(("a0", alice, True, '{"run_id": "r1"}'))
        unit.replies.append(("a1", alice, False, '{"code": "busy"}'))
        await owner.commit(alice, 0, unit, epoch=epoch)
        assert [c.request_id for c in await owner.take_commands([alice], 10)] == ["a2"]
        assert await other.take_replies(["a0", "a1", "a2", "zz"]) == {
            "a0": (True, '{"run_id": "r1"}'),
            "a1": (False, '{"code": "busy"}'),
        }
        assert await other.take_replies(["a0", "a1"]) == {}  # once
        assert await other.take_replies([]) == {}

        only = UnitOfWork(alice)  # a unit with only a consumed command and its reply
        only.inbox_done.append(mine[2].id)
        only.replies.append(("a2", alice, True, "{}"))
        assert only
        assert await owner.commit(alice, 1, only, epoch=epoch) == []
        assert await owner.take_commands([alice], 10) == []
        assert await owner.take_replies(["a2"]) == {"a2": (True, "{}")}
        assert (await owner.load_user(alice)).head_seq == 1

        fenced = UnitOfWork(bob)  # a fenced unit consumes nothing
        fenced.inbox_done.append(everyone[3].id)
        fenced.replies.append(("b0", bob, True, "{}"))
        with pytest.raises(LeaseLostError):
            await owner.commit(bob, 0, fenced, epoch=7)
        assert [c.request_id for c in await owner.take_commands([bob], 10)] == ["b0"]
        assert await owner.take_replies(["b0"]) == {}


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_a_late_renewal_finds_the_leases_taken_over_meanwhile(
    kind: str, tmp_path: Path
) -> None:
    """A node that wakes past its deadline renews what is still its own and forgets the rest
    (so its deadlines do not move for users it lost)."""
    lost, kept = fresh_user(), fresh_user()
    async with database(kind, tmp_path) as url, stores(url, 2, ttl=0.3) as (a, b):
        assert await a.acquire(lost) == 1
        assert await a.acquire(kept) == 1
        pause_renewals(a)
        with trio.fail_after(5):
            while await b.acquire(lost) is None:  # noqa: ASYNC110
                await trio.sleep(0.02)
        renewals = a.statistics().lease_renewals
        a._leases.next_renewal = 0.0  # wakes up (SIGCONT); its next transaction renews
        other = fresh_user()
        assert await a.acquire(other) == 1
        assert a.statistics().lease_renewals == renewals + 1
        assert a.held_leases() == {kept: 1, other: 1}
        assert a.statistics().leases_lost == 1
        assert a.lease_valid_until(lost) == -math.inf
        assert a.lease_valid_until(kept) > time.monotonic()
        assert await b.acquire(kept) is None  # renewed again: still a's


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_fencing_holds_on_the_path_with_developer_statements(
    kind: str, tmp_path: Path
) -> None:
    """Batches with staged rows go through SQLAlchemy (and, when one unit is bad, SAVEPOINTs):
    the lease check, the inbox and the replies are applied there too."""
    from sqlalchemy import insert
    from test_sql_store import Note, extra, things

    key = f"k_{uuid.uuid4().hex[:8]}"
    lost, bad = fresh_user(), fresh_user()
    good = [fresh_user() for _ in range(6)]
    async with database(kind, tmp_path) as url:
        a = await SqlStore.open(cluster_config(url, ttl=0.3), extra_metadata=[extra])
        b = await SqlStore.open(cluster_config(url, ttl=0.3), extra_metadata=[extra])
        try:
            seed = unit_with(bad, 1)
            seed.stage(insert(things).values(owner=bad, key=key))
            await a.commit(bad, 0, seed)
            epochs = {u: await a.acquire(u) for u in (lost, *good)}
            await a.post_command(good[0], "g0", "say", "{}")
            (cmd,) = await a.take_commands([good[0]], 10)
            pause_renewals(a)
            with trio.fail_after(5):
                while await b.acquire(lost) is None:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            for isolated in (False, True):
                results: dict[str, object] = {}

                base = 1 if isolated else 0

                async def one(
                    u: str, unit: UnitOfWork, epoch: int | None, out: Any, base: int = base
                ) -> None:
                    try:
                        out[u] = await a.commit(u, base, unit, epoch=epoch)
                    except na.exceptions.StoreError as exc:
                        out[u] = exc

                async with trio.open_nursery() as n:
                    for u in (lost, *good):
                        unit = unit_with(u, 1)
                        unit.stage(Note(owner=u, text="row"))
                        if u == good[0] and not isolated:
                            unit.inbox_done.append(cmd.id)
                            unit.replies.append(("g0", u, True, "{}"))
                        n.start_soon(one, u, unit, epochs[u], results)
                    if isolated:  # a duplicate key: the batch is retried unit by unit
                        dup = unit_with(bad, 1)
                        dup.stage(insert(things).values(owner=bad, key=key))
                        n.start_soon(one, bad, dup, None, results)
                assert isinstance(results[lost], LeaseLostError), results[lost]
                for u in good:
                    assert isinstance(results[u], list), results[u]
                if isolated:
                    assert isinstance(results[bad], na.exceptions.StoreError)
                    assert not isinstance(results[bad], LeaseLostError)
            assert a.statistics().fenced_units == 2
            assert await a.replay(lost, 0, 10) == []
            assert (await a.load_user(good[1])).head_seq == 2
            assert await a.take_commands([good[0]], 10) == []
            assert await b.take_replies(["g0"]) == {"g0": (True, "{}")}
        finally:
            await a.aclose()
            await b.aclose()


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_the_database_clock_decides_not_the_nodes_wall_clocks(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clock skew: a node whose wall clock runs an hour ahead (or behind) can neither take a
    live lease early nor keep an expired one: expiry is computed by the database."""
    real = time.time
    async with database(kind, tmp_path) as url, stores(url, 2, ttl=1.0) as (a, b):
        assert await a.acquire("skew") == 1
        monkeypatch.setattr(time, "time", lambda: real() + 3600.0)  # B's clock is ahead
        assert await b.acquire("skew") is None  # A's lease is live by the database's clock
        assert (await b.free_leases(["skew"])) == []
        monkeypatch.setattr(time, "time", lambda: real() - 3600.0)  # ... or behind
        await a.release("skew", 1)
        assert await b.acquire("skew") == 2  # released: free at once, whatever B's clock says
        monkeypatch.undo()


# -- claims: activation without waiting for a lease write -------------------------------------


@guest_test()
async def test_a_lone_node_claims_without_waiting_for_the_lease_write(tmp_path: Path) -> None:
    user = fresh_user()
    url = na.sqlite_url(tmp_path / "claim.db")
    async with stores(url, 1) as (a,):
        lock = await _hold_sqlite_writer(url)  # no write can land until it commits
        try:
            with trio.fail_after(5):
                epoch = await a.claim(user)  # one read: it does not wait for the writer
            assert epoch == 1
            assert user not in a.held_leases()  # not written yet
            loads = a.load_calls
            snap = await a.load_user(user)  # the claim's own read: no second one
            assert (snap.head_seq, a.load_calls) == (0, loads)
        finally:
            lock.execute("COMMIT")
            lock.close()
        # The first unit commits under the claimed epoch: the acquisition went first.
        assert [e.seq for e in await a.commit(user, 0, unit_with(user, 2), epoch=1)] == [1, 2]
        assert a.held_leases() == {user: 1}
        assert await a.free_leases([user]) == []
        assert (await a.load_user(user)).head_seq == 2  # read again: the snapshot was used once
        # Passivated and claimed again: the epoch moves on by one, as an acquisition would.
        await a.release(user, 1)
        assert await a.claim(user) == 2
        await a.commit(user, 2, unit_with(user, 1), epoch=2)
        assert a.held_leases() == {user: 2}


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_with_other_nodes_alive_a_claim_waits_for_its_acquisition(
    kind: str, tmp_path: Path
) -> None:
    """Two nodes activating one user at once must not both act as its owner: while another
    node is alive a claim is an acquisition, waited for (a held lease: None, nothing written)."""
    user, owned = fresh_user(), fresh_user()
    async with database(kind, tmp_path) as url, stores(url, 2) as (a, b):
        assert await b.acquire(owned) == 1
        assert await a.claim(owned) is None  # another live node holds it: follow
        assert await a.claim(user) == 1
        assert a.held_leases() == {user: 1}  # written before the claim returned
        assert await b.claim(user) is None
        assert [e.seq for e in await a.commit(user, 0, unit_with(user, 1), epoch=1)] == [1]


@pytest.mark.parametrize("moved", ["head", "epoch"])
@guest_test()
async def test_a_claim_overtaken_before_its_acquisition_is_fenced(
    moved: str, tmp_path: Path
) -> None:
    """Between a claim's read and its acquisition another writer moved the user on (a commit:
    the head; or another node's acquisition: the epoch): the claim's lease is spoiled, so no
    unit commits under the epoch it returned; a real acquisition afterwards works."""
    user = fresh_user()
    url = na.sqlite_url(tmp_path / "claim.db")
    async with stores(url, 1) as (a,):
        lock = await _hold_sqlite_writer(url)  # a's writer waits behind this transaction
        try:
            assert await a.claim(user) == 1  # read before the other writer's change commits
            if moved == "head":
                lock.execute(
                    "INSERT INTO netra_events (user_id, seq, run_id, event, ts, data, thread) "
                    "VALUES (?, 1, NULL, 'note', 0.0, '{}', 'main')",
                    (user,),
                )
            else:  # another node took the lease and released it
                lock.execute(
                    "INSERT INTO netra_leases (user_id, node, epoch, expires_at) "
                    "VALUES (?, 'another-node', 1, 0)",
                    (user,),
                )
        finally:
            lock.execute("COMMIT")
            lock.close()
        with pytest.raises(LeaseLostError, match="lease epoch 1"):
            await a.commit(user, 0, unit_with(user, 1), epoch=1)
        assert user not in a.held_leases()
        epoch = await a.acquire(user)
        assert epoch == (3 if moved == "head" else 4)  # past the spoiled one
        head = 1 if moved == "head" else 0
        assert [e.seq for e in await a.commit(user, head, unit_with(user, 1), epoch=epoch)] == [
            head + 1
        ]
