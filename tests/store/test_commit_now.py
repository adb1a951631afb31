"""SQLite: a unit that finds the writer idle commits at once, in trio's thread.

The writer thread's round trip (a wake-up there, another back into trio) is most of what one
idle commit costs. So :meth:`SqliteWriter.commit_now` runs the group commit on the writer's
connection right in the caller's thread when nothing is in flight, no other trio task is ready
to run, this node is the only one alive and nobody else holds the write lock. Everything else
goes to the thread as before; these tests hold each of those conditions and the order.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
from storekit import settled, sqlite_store
from test_sql_store import fresh_user, unit_with

import netra_actors as na
from netra_actors._exceptions import LeaseLostError
from netra_actors._store import _sqlite_writer
from netra_actors._store._sqlite_writer import QUIET_BEFORE_NOW


@na.testing.guest_test()
async def test_an_idle_commit_runs_at_once_and_is_the_same_commit(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await settled(store)
        user = fresh_user()
        events = await store.commit(user, 0, unit_with(user, 3))
        assert store._writer.committed_now == 1
        assert [e.seq for e in events] == [1, 2, 3]
        assert [e.seq for e in await store.replay(user, 0, 10)] == [1, 2, 3]
        more = await store.commit(user, 3, unit_with(user, 2))
        assert [e.seq for e in more] == [4, 5]
        assert store._writer.committed_now == 2
        stats = store.statistics()
        assert (stats.units_committed, stats.events_committed) == (2, 5)
    with sqlite3.connect(tmp_path / "store.db") as conn:  # committed, not just seen
        assert conn.execute("SELECT count(*) FROM netra_events").fetchone() == (5,)


@na.testing.guest_test()
async def test_a_commit_behind_work_in_flight_waits_its_turn(tmp_path: Path) -> None:
    """Another process holds the write lock: the first commit does not wait for it in trio
    (the thread does), and a later one queues behind it instead of overtaking it."""
    async with sqlite_store(tmp_path) as store:
        await settled(store)
        first, second = fresh_user(), fresh_user()
        lock = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        done: list[str] = []

        async def commit(user: str) -> None:
            await store.commit(user, 0, unit_with(user, 1))
            done.append(user)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit, first)
            await trio.sleep(0.3)  # trio runs on: the commit waits in the writer thread
            assert done == []
            nursery.start_soon(commit, second)
            await trio.sleep(0.3)
            assert done == []  # not at once: the first is still in flight
            lock.execute("COMMIT")
            lock.close()
        # Both went to the thread: the second in the same transaction as the first or a later
        # one (units of one batch are written in user order), never at once ahead of it.
        assert sorted(done) == sorted([first, second])
        assert store._writer.committed_now == 0
        await trio.sleep(QUIET_BEFORE_NOW)
        await commit(fresh_user())  # idle again: at once
        assert store._writer.committed_now == 1


@na.testing.guest_test()
async def test_units_of_many_tasks_at_once_go_to_the_writer_together(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await settled(store)
        users = [fresh_user() for _ in range(50)]
        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(store.commit, user, 0, unit_with(user, 1))
        # trio runs a batch of ready tasks without telling one of them about the others: the
        # first unit may find the writer idle and go at once; from then on the writer has work
        # in flight and the rest queue behind it, to be committed together.
        assert store._writer.committed_now <= 1
        assert store.statistics().batches < 25


@na.testing.guest_test()
async def test_a_writer_that_just_handed_a_batch_back_gets_the_next_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load the thread keeps the units: one that arrives within ``QUIET_BEFORE_NOW`` of
    the thread's last batch is queued for it (here the window is a minute long)."""
    monkeypatch.setattr(_sqlite_writer, "QUIET_BEFORE_NOW", 60.0)
    async with sqlite_store(tmp_path) as store:
        await settled(store)
        users = [fresh_user() for _ in range(3)]
        async with trio.open_nursery() as nursery:  # the thread commits one of these at least
            for user in users[:2]:
                nursery.start_soon(store.commit, user, 0, unit_with(user, 1))
        at_once = store._writer.committed_now
        assert at_once <= 1
        await store.commit(users[2], 0, unit_with(users[2], 1))
        assert store._writer.committed_now == at_once


@na.testing.guest_test()
async def test_with_synchronous_full_every_commit_goes_to_the_writer(tmp_path: Path) -> None:
    """``FULL`` syncs the WAL at every commit: that wait stays in the writer thread."""
    async with sqlite_store(tmp_path, sqlite_synchronous="FULL") as store:
        await settled(store)
        user = fresh_user()
        assert [e.seq for e in await store.commit(user, 0, unit_with(user, 2))] == [1, 2]
        assert store._writer.committed_now == 0


@na.testing.guest_test()
async def test_while_another_node_is_alive_every_commit_goes_to_the_writer(
    tmp_path: Path,
) -> None:
    async with sqlite_store(tmp_path) as a, sqlite_store(tmp_path) as b:
        with trio.fail_after(10):
            while a._leases.others is not True:  # noqa: ASYNC110 (a sees b at renewal)
                await trio.sleep(0.05)
        user = fresh_user()
        await a.commit(user, 0, unit_with(user, 1))
        assert a._writer.committed_now == 0
        assert b._writer.committed_now == 0


@na.testing.guest_test()
async def test_a_bug_met_at_once_stops_the_writer_as_in_its_thread(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await settled(store)

        def boom(_batch: Any) -> Any:
            raise RuntimeError("a bug in the writer")

        store._writer.handle = boom
        user = fresh_user()
        with pytest.raises(na.exceptions.StoreError, match="the store writer stopped: Runtime"):
            await store.commit(user, 0, unit_with(user, 1))
        with pytest.raises(na.exceptions.StoreError, match="the store writer stopped"):
            await store.commit(user, 0, unit_with(user, 1))
        with pytest.raises(na.exceptions.StoreError, match="the store writer stopped"):
            await store.check()
    assert store._writer.exited


@na.testing.guest_test()
async def test_a_commit_at_once_is_fenced_like_any_other(tmp_path: Path) -> None:
    """The lease check runs in the transaction made at once: a unit of an older epoch fails
    alone with ``LeaseLostError`` and writes nothing."""
    async with sqlite_store(tmp_path) as store:
        await settled(store)
        user = fresh_user()
        assert await store.acquire(user) == 1
        assert await store.acquire(user) == 2  # epoch 1 is history
        await trio.sleep(QUIET_BEFORE_NOW)
        with pytest.raises(LeaseLostError, match="lease epoch 1"):
            await store.commit(user, 0, unit_with(user, 1), epoch=1)
        assert store._writer.committed_now == 1
        assert await store.replay(user, 0, 10) == []
        await trio.sleep(QUIET_BEFORE_NOW)
        assert [e.seq for e in await store.commit(user, 0, unit_with(user, 1), epoch=2)] == [1]
        assert store._writer.committed_now == 2
