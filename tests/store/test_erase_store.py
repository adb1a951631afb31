"""Erasure in the store (``_store/_erase.py``): a thread's events become ``erased``
placeholders at the same seqs (whole, or in bounded batches), its summary and message ids go,
its runs lose input and result; a user's rows all go; an erasing unit is fenced like any other
and writes nothing once the lease moved; and the retention sweep's read — on a SQLite file, on
PostgreSQL (a database of its own) and on ``MemoryStore``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_cluster import database, stores
from test_sql_store import URLS, fresh_user
from test_threads_store import commit_all, run_unit

from netra_actors._uow import Erasure, UnitOfWork
from netra_actors.exceptions import LeaseLostError
from netra_actors.testing import MemoryStore, guest_test

KINDS = [*URLS, pytest.param("memory", id="memory")]


def erasing(user: str, erasure: Erasure) -> UnitOfWork:
    unit = UnitOfWork(user)
    unit.erase = erasure
    return unit


@pytest.mark.parametrize("kind", KINDS)
@guest_test()
async def test_a_thread_is_erased_in_batches_and_keeps_its_seqs(kind: str, tmp_path: Path) -> None:
    user, other = fresh_user(), fresh_user()
    async with database("sqlite" if kind == "memory" else kind, tmp_path) as url:
        async with stores(url, 1) as (sql,):
            store: Any = MemoryStore() if kind == "memory" else sql
            units = [
                run_unit(user, "ab"[n % 2], messages=[("user", f"text {n}")]) for n in range(10)
            ]
            units[0].message_ids.append(("m-1", "a"))
            events = await commit_all(store, user, units)
            await commit_all(store, other, [run_unit(other, "a", messages=[("user", "mine")])])
            head = events[-1].seq
            a_seqs = [e.seq for e in events if e.thread == "a"]
            # a batch of 3, oldest first; the summary stays until the final step
            await store.commit(user, head, erasing(user, Erasure(thread="a", limit=3, final=False)))
            after = await store.replay(user, 0, 100)
            erased = [e.seq for e in after if e.event == "erased"]
            assert erased == a_seqs[:3]
            assert [e.seq for e in after] == [e.seq for e in events]
            # the rest, final
            await store.commit(user, head, erasing(user, Erasure(thread="a")))
            after = await store.replay(user, 0, 100)
            for old, new in zip(events, after, strict=True):
                if old.thread == "a":
                    assert (new.seq, new.event, dict(new.data), new.run_id, new.thread) == (
                        old.seq, "erased", {}, None, None,
                    )  # fmt: skip
                    assert new.ts == old.ts
                else:
                    assert new == old
            assert [t.thread for t in (await store.threads(user)).threads] == ["b"]
            assert await store.message_ids(user, ["m-1"]) == {}
            runs = await store.list_runs(user, 100)
            assert {r.thread for r in runs} == {"a", "b"}
            assert all(r.input is None and r.result is None for r in runs if r.thread == "a")
            # another user's same-named thread is untouched
            assert next(e.event for e in await store.replay(other, 0, 100)) == "message"
            assert [t.thread for t in (await store.threads(other)).threads] == ["a"]


@pytest.mark.parametrize("kind", KINDS)
@guest_test()
async def test_erasing_a_user_deletes_its_rows_and_seqs_restart(kind: str, tmp_path: Path) -> None:
    user, other = fresh_user(), fresh_user()
    async with database("sqlite" if kind == "memory" else kind, tmp_path) as url:
        async with stores(url, 1) as (sql,):
            store: Any = MemoryStore() if kind == "memory" else sql
            unit = run_unit(user, "a", messages=[("user", "hi")])
            unit.message_ids.append(("m-1", "a"))
            events = await commit_all(store, user, [unit])
            await commit_all(store, other, [run_unit(other, "a", messages=[("user", "mine")])])
            await store.commit(user, events[-1].seq, erasing(user, Erasure(thread=None)))
            assert await store.replay(user, 0, 100) == []
            assert await store.list_runs(user, 100) == []
            assert (await store.threads(user)).threads == ()
            assert await store.message_ids(user, ["m-1"]) == {}
            assert (await store.load_user(user)).head_seq == 0
            assert await store.replay(other, 0, 100)
            again = await commit_all(store, user, [run_unit(user, "main", messages=[])])
            assert again[0].seq == 1


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_an_erasing_unit_is_fenced_like_any_other(kind: str, tmp_path: Path) -> None:
    user = fresh_user()
    async with database(kind, tmp_path) as url, stores(url, 2, ttl=0.5) as (a, b):
        epoch = await a.acquire(user)
        assert epoch is not None
        unit = run_unit(user, "a", messages=[("user", "keep me")])
        events = await a.commit(user, 0, unit, epoch=epoch)
        await a.release(user, epoch)
        assert await b.acquire(user) is not None  # b owns the user now
        with pytest.raises(LeaseLostError):
            await a.commit(user, len(events), erasing(user, Erasure(thread=None)), epoch=epoch)
        assert len(await b.replay(user, 0, 100)) == len(events)


@pytest.mark.parametrize("kind", KINDS)
@guest_test()
async def test_stale_threads_lists_the_threads_idle_since_a_cutoff(
    kind: str, tmp_path: Path
) -> None:
    user = fresh_user()
    async with database("sqlite" if kind == "memory" else kind, tmp_path) as url:
        async with stores(url, 1) as (sql,):
            store: Any = MemoryStore() if kind == "memory" else sql
            old = await commit_all(store, user, [run_unit(user, "old", messages=[])])
            new = await store.commit(user, old[-1].seq, run_unit(user, "new", messages=[]))
            cutoff = (old[-1].ts + new[0].ts) / 2
            assert old[-1].ts < cutoff < new[0].ts
            found = await store.stale_threads(cutoff, 10)
            assert [(u, t) for u, t, _ in found if u == user] == [(user, "old")]
