"""The inspector's reads (``_store/_inspect.py``) on SQLite and PostgreSQL, and in memory.

They cross users (an administrator's view), so each test keeps to users of its own prefix: the
PostgreSQL database is shared by every test run."""

from __future__ import annotations

import uuid
from pathlib import Path

import attrs
import pytest
from test_sql_store import URLS, open_store, unit_with

from netra_actors._store._inspect import AdminReads
from netra_actors._uow import UnitOfWork
from netra_actors.testing import MemoryStore, guest_test


def prefix() -> str:
    return f"insp_{uuid.uuid4().hex[:8]}_"


def ended(unit_user: str, n: int, run: str) -> UnitOfWork:
    unit = unit_with(unit_user, n, run=run)
    unit.runs[run] = attrs.evolve(unit.runs[run], state="completed")
    return unit


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_users_are_listed_by_activity_bounded_and_filtered(kind: str, tmp_path: Path) -> None:
    p = prefix()
    busy, quiet, odd = p + "busy", p + "quiet", p + "100%_sure"
    async with open_store(kind, tmp_path) as store:
        assert isinstance(store, AdminReads)
        await store.commit(quiet, 0, ended(quiet, 2, "r_q"))
        await store.commit(odd, 0, ended(odd, 1, "r_o"))
        await store.commit(busy, 0, unit_with(busy, 3, run="r_b1"))  # live (running)
        await store.commit(busy, 3, ended(busy, 1, "r_b2"))
        users = await store.admin_users(p, 10)
        assert [u.user_id for u in users] == [busy, odd, quiet]  # the most recent first
        first = users[0]
        assert (first.head_seq, first.runs, first.live_runs) == (4, 2, 1)
        assert first.last_activity is not None
        assert first.node is None  # nobody holds a lease
        assert (users[2].head_seq, users[2].runs, users[2].live_runs) == (2, 1, 0)
        assert len(await store.admin_users(p, 2)) == 2  # bounded
        # the prefix is a prefix, not a pattern: % and _ match only themselves
        assert [u.user_id for u in await store.admin_users(p + "100%", 10)] == [odd]
        assert await store.admin_users(p + "1_0", 10) == []


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_leases_show_the_owner_and_the_nodes(kind: str, tmp_path: Path) -> None:
    p = prefix()
    owned, runless = p + "owned", p + "runless"
    async with open_store(kind, tmp_path) as store:
        await store.commit(owned, 0, unit_with(owned, 1, run="r_1"))
        epoch = await store.acquire(owned)
        assert epoch is not None
        assert await store.acquire(runless) is not None  # a socket, no run yet
        users = {u.user_id: u for u in await store.admin_users(p, 10)}
        assert set(users) == {owned, runless}  # owned users without runs are listed too
        assert users[owned].node == store.node
        assert users[owned].epoch == epoch
        left = users[owned].expires_in
        assert left is not None
        assert 0 < left <= store.lease_ttl
        assert users[runless].runs == 0
        view = await store.admin_cluster(50)
        mine = [n for n in view.nodes if n.node == store.node]
        assert len(mine) == 1
        assert mine[0].owned == 2
        assert mine[0].expires_in > 0
        assert len(view.leases) <= 50
        assert {row.user_id for row in view.leases} >= {owned, runless}
        assert len((await store.admin_cluster(1)).leases) == 1  # bounded
        await store.release(owned, epoch)
        users = {u.user_id: u for u in await store.admin_users(p, 10)}
        assert users[owned].node is None
        released = [r for r in (await store.admin_cluster(500)).leases if r.user_id == owned]
        assert released == [] or released[0].expires_in is None


@pytest.mark.parametrize("kind", URLS)
@guest_test()
async def test_run_events_are_scoped_to_the_user_and_run_and_bounded(
    kind: str, tmp_path: Path
) -> None:
    p = prefix()
    user, other = p + "a", p + "b"
    async with open_store(kind, tmp_path) as store:
        await store.commit(user, 0, unit_with(user, 3, run="r_x"))
        await store.commit(user, 3, unit_with(user, 2, run="r_y"))
        await store.commit(other, 0, unit_with(other, 4, run="r_x"))  # the same run id
        events = await store.admin_run_events(user, "r_x", 100)
        assert [(e.user_id, e.run_id, e.seq) for e in events] == [
            (user, "r_x", s) for s in (1, 2, 3)
        ]
        assert len(await store.admin_run_events(user, "r_x", 2)) == 2
        assert [e.seq for e in await store.admin_run_events(user, "r_y", 100)] == [4, 5]
        assert await store.admin_run_events(user, "r_none", 100) == []


@guest_test()
async def test_the_memory_store_answers_the_same_reads() -> None:
    store = MemoryStore()
    assert isinstance(store, AdminReads)
    await store.commit("a", 0, unit_with("a", 2, run="r_1"))
    await store.commit("b", 0, ended("b", 1, "r_2"))
    users = await store.admin_users("", 10)
    assert [u.user_id for u in users] == ["b", "a"]
    assert (users[1].head_seq, users[1].live_runs) == (2, 1)
    assert len(await store.admin_users("", 1)) == 1
    assert await store.admin_users("c", 10) == []
    assert [e.seq for e in await store.admin_run_events("a", "r_1", 10)] == [1, 2]
    assert await store.admin_run_events("b", "r_1", 10) == []
    assert (await store.admin_cluster(10)).nodes == ()
