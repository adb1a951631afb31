"""SQLite: an activation's read that finds the reader idle is answered at once, in trio's thread.

An activation reads the user once (``load_user``, or ``claim`` on a lone node: the same read
with the lease row). Through the reader thread that read costs a wake-up there and a hand-off
back into trio, several times the queries themselves. :meth:`SqliteReader.read_now` runs it on
the reader's connection in the caller's thread when nothing is in flight and no other trio task
is ready; everything else goes to the thread as before. These tests hold each condition.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from storekit import settled, sqlite_store
from test_sql_store import fresh_user, unit_with

import netra_actors as na


@na.testing.guest_test()
async def test_an_idle_activation_read_runs_at_once_and_reads_the_same(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        await settled(store)
        user = fresh_user()
        unit = unit_with(user, 3)
        run_id = next(iter(unit.runs))
        await store.commit(user, 0, unit)
        before = store._reader.read_now_calls
        snap = await store.load_user(user)
        assert store._reader.read_now_calls == before + 1
        assert snap.head_seq == 3
        assert [r.run_id for r in snap.live_runs] == [run_id]
        other = fresh_user()
        assert await store.claim(other) == 1  # the lease row read with the snapshot
        assert store._reader.read_now_calls == before + 2
        assert (await store.load_user(other)).head_seq == 0  # the claim's snapshot, no read
        assert store._reader.read_now_calls == before + 2


@na.testing.guest_test()
async def test_reads_of_many_tasks_at_once_are_still_one_request(tmp_path: Path) -> None:
    """Activations that arrive together keep sharing one read in the thread. trio runs a batch
    of ready tasks without telling one about the others: only the first read of the batch goes
    at once, the others join one request."""
    async with sqlite_store(tmp_path) as store:
        users = [fresh_user() for _ in range(50)]
        for user in users[:5]:
            await store.commit(user, 0, unit_with(user, 2))
        heads: dict[str, int] = {}

        async def load(user: str) -> None:
            heads[user] = (await store.load_user(user)).head_seq

        at_once, calls = store._reader.read_now_calls, store.load_calls
        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(load, user)
        assert heads == {u: 2 if i < 5 else 0 for i, u in enumerate(users)}
        assert store._reader.read_now_calls == at_once + 1
        assert store.load_calls == calls + 2


@na.testing.guest_test()
async def test_a_read_behind_work_in_flight_goes_to_the_thread(tmp_path: Path) -> None:
    """The reader thread is busy: trio does not wait for its connection, the read queues."""
    async with sqlite_store(tmp_path) as store:
        release = threading.Event()

        def slow(_conn: Any) -> None:
            release.wait(10)

        user = fresh_user()
        loaded: list[int] = []

        async def load() -> None:
            loaded.append((await store.load_user(user)).head_seq)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.run_in_reader, slow)
            await trio.sleep(0.1)
            before = store._reader.read_now_calls
            nursery.start_soon(load)
            await trio.sleep(0.2)  # trio runs on while the read waits for the thread
            assert loaded == []
            release.set()
        assert loaded == [0]
        assert store._reader.read_now_calls == before


@na.testing.guest_test()
async def test_a_cancelled_caller_is_cancelled_even_when_the_read_ran_at_once(
    tmp_path: Path,
) -> None:
    async with sqlite_store(tmp_path) as store:
        before = store._reader.read_now_calls
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.load_user(fresh_user())
            pytest.fail("a cancelled read returned")
        assert scope.cancelled_caught
        assert store._reader.read_now_calls == before + 1


@na.testing.guest_test()
async def test_a_bug_met_at_once_stops_the_reader_as_in_its_thread(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:

        def boom(_batch: Any) -> Any:
            raise RuntimeError("a bug in the reader")

        store._reader.handle = boom
        with pytest.raises(na.exceptions.StoreError, match="the store reader stopped: Runtime"):
            await store.load_user(fresh_user())
        with pytest.raises(na.exceptions.StoreError, match="the store reader stopped"):
            await store.load_user(fresh_user())
    assert store._reader.exited


@na.testing.guest_test()
async def test_the_batch_number_changes_between_batches_of_the_run_loop() -> None:
    """``_bridge.tick``: tasks of one batch see one number; a task that yields sees a new one."""
    from netra_actors._bridge import tick

    seen: list[int] = []

    async def look() -> None:
        seen.append(tick())

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(look)
    assert len(set(seen)) == 1
    before = tick()
    await trio.lowlevel.checkpoint()
    assert tick() != before
