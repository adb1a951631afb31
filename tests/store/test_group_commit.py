"""The group commit written once (``_group_commit.py``), against a fake dialect in memory.

The fake keeps rows and leases in dicts and commits a transaction's writes only when its block
ends without an error (a SAVEPOINT likewise), so what the group commit decides — one transaction
per batch, the lease check, the retry unit by unit, every waiter's outcome, the statistics — is
seen without a database.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import outcome
import trio

import netra_actors as na
from netra_actors._store._group_commit import GroupCommit
from netra_actors._store._leases import Leases
from netra_actors._store._sqlite import drive
from netra_actors._store._statistics import Stats
from netra_actors._store._waiting import Op, Pending, Waiter
from netra_actors._uow import UnitOfWork
from netra_actors._values import Event

NODE = "n1"


class FakeDb:
    """What the fake database holds: committed event rows and ``{user_id: (node, epoch)}``."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.leases: dict[str, tuple[str, int]] = {}
        self.transactions = 0
        self.renewals = 0
        self.failing_begins = 0
        """Transactions that fail to begin from now on (the connection is gone)."""
        self.bad_users: set[str] = set()
        """A unit of one of these users fails in ``write`` (a constraint, say)."""


class FakeTransaction:
    def __init__(self, db: FakeDb) -> None:
        self.db = db
        self.events: list[Event] = []
        self.leases = dict(db.leases)
        self.renewed = False

    async def renew(self, node: str, ttl: float) -> None:
        self.renewed = True

    async def others_alive(self, node: str) -> bool:
        return False

    async def ours(self, node: str) -> dict[str, int]:
        return {u: e for u, (n, e) in self.leases.items() if n == node}

    async def others_of(self, users: list[str], node: str) -> set[str]:
        return {u for u in users if u in self.leases and self.leases[u][0] != node}

    async def acquire(self, users: list[str], node: str, ttl: float) -> list[tuple[str, int]]:
        taken = []
        for u in users:
            held_by, epoch = self.leases.get(u, (node, 0))
            if held_by == node:  # the fake's leases never expire
                self.leases[u] = (node, epoch + 1)
                taken.append((u, epoch + 1))
        return taken

    async def stale_heads(self, heads: list[tuple[str, int]]) -> set[str]:
        raise AssertionError("not used here")

    async def spoil(self, users: list[str], node: str) -> None:
        raise AssertionError("not used here")

    async def release(self, leases: list[tuple[str, int]], node: str) -> None:
        raise AssertionError("not used here")

    async def release_all(self, node: str) -> None:
        raise AssertionError("not used here")

    async def live_nodes(self, node: str) -> list[str]:
        return []

    async def dead_nodes(self, nodes: list[str]) -> list[str]:
        return []

    async def post(self, commands: list[tuple[Any, ...]]) -> None:
        raise AssertionError("not used here")

    async def take_replies(self, request_ids: list[str]) -> dict[str, tuple[bool, str]]:
        raise AssertionError("not used here")

    async def forget_nodes(self, nodes: list[str], lapsed_for: float) -> None:
        raise AssertionError("not used here")

    async def fence(self, leases: list[tuple[str, int]], node: str) -> set[tuple[str, int]]:
        return {(u, e) for u, e in leases if self.leases.get(u) != (node, e)}

    async def write(self, units: Sequence[Pending]) -> None:
        for p in units:
            if p.user_id in self.db.bad_users:
                raise ValueError(f"a bad unit of {p.user_id}")
            self.events.extend(p.events)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        mark = len(self.events)
        try:
            yield
        except BaseException:
            del self.events[mark:]
            raise


class FakeDialect:
    sorts_units = True

    def __init__(self, db: FakeDb) -> None:
        self.db = db

    @asynccontextmanager
    async def transaction(
        self, *, with_statements: bool, isolated: bool
    ) -> AsyncIterator[FakeTransaction]:
        db = self.db
        db.transactions += 1
        if db.failing_begins:
            db.failing_begins -= 1
            raise ConnectionError("the server closed the connection")
        tx = FakeTransaction(db)
        yield tx  # an error in the block propagates: nothing of it is committed
        db.events.extend(tx.events)
        db.leases = tx.leases
        db.renewals += tx.renewed


def setup(*, renewal_due: bool = False) -> tuple[FakeDb, GroupCommit, Stats, Leases]:
    db, stats, leases = FakeDb(), Stats(), Leases(NODE, 30.0)
    if not renewal_due:
        leases.next_renewal = math.inf
    return db, GroupCommit(FakeDialect(db), stats, leases), stats, leases


def unit(user: str, base_seq: int = 0, n: int = 2, epoch: int | None = None) -> Pending:
    u = UnitOfWork(user)
    for i in range(n):
        u.emit("r1", "agent_thinking", {"i": i})
    return Pending(user, base_seq, u, epoch)


def committed(p: Pending) -> list[Event]:
    assert isinstance(p.result, outcome.Value), p.result
    events: list[Event] = p.result.unwrap()
    return events


def error(p: Waiter) -> BaseException:
    assert isinstance(p.result, outcome.Error), p.result
    return p.result.error


async def test_a_batch_of_many_users_is_one_transaction_in_key_order() -> None:
    db, group, stats, _ = setup()
    units = [unit("b"), unit("a"), unit("b", base_seq=2), unit("c", n=1)]
    await group.commit(units)
    assert db.transactions == 1
    assert [(e.user_id, e.seq) for e in db.events] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("b", 2),
        ("b", 3),
        ("b", 4),
        ("c", 1),
    ]
    assert [[e.seq for e in committed(p)] for p in units] == [[1, 2], [1, 2], [3, 4], [1]]
    s = stats.snapshot(queued=0)
    assert (s.batches, s.units_committed, s.units_failed, s.events_committed) == (1, 4, 0, 7)
    assert s.commit_seconds.count == 1


async def test_a_unit_failing_its_lease_check_fails_alone_in_the_same_transaction() -> None:
    db, group, stats, leases = setup()
    db.leases = {"a": (NODE, 1), "b": ("n2", 2)}  # another node took b's lease over
    now = time.monotonic()
    leases.acquired("a", 1, now)
    leases.acquired("b", 1, now)
    ours, lost, unfenced = unit("a", epoch=1), unit("b", epoch=1), unit("c")
    await group.commit([ours, lost, unfenced])
    assert db.transactions == 1
    assert isinstance(error(lost), na.exceptions.LeaseLostError)
    assert committed(ours)
    assert committed(unfenced)
    assert {e.user_id for e in db.events} == {"a", "c"}
    assert leases.held == {"a": 1}
    s = stats.snapshot(queued=0, leases=leases)
    assert (s.fenced_units, s.leases_lost, s.units_committed, s.units_failed) == (1, 1, 2, 1)


async def test_a_bad_unit_fails_alone_on_the_retry_unit_by_unit() -> None:
    db, group, stats, _ = setup()
    db.bad_users = {"b"}
    units = [unit("a"), unit("b"), unit("c")]
    await group.commit(units)
    assert db.transactions == 2  # the batch, then each unit in its own SAVEPOINT
    assert isinstance(error(units[1]), na.exceptions.StoreError)
    assert "a bad unit of b" in str(error(units[1]))
    assert committed(units[0])
    assert committed(units[2])
    assert {e.user_id for e in db.events} == {"a", "c"}
    s = stats.snapshot(queued=0)
    assert (s.isolated_retries, s.units_committed, s.units_failed) == (1, 2, 1)


async def test_a_driver_error_fails_every_waiter_and_the_next_batch_commits() -> None:
    db, group, stats, leases = setup(renewal_due=True)
    db.failing_begins = 2  # the batch and its retry
    acquire = Op("acquire", ("d",))
    units = [unit("a"), unit("b")]
    await group.commit([*units, acquire])  # returns: the writer goes on
    assert db.transactions == 2
    errors = [error(w) for w in (*units, acquire)]
    assert all(isinstance(e, na.exceptions.StoreError) for e in errors)
    assert "the server closed the connection" in str(errors[0])
    assert len({id(e) for e in errors}) == 1  # one error for the whole batch
    assert db.events == []
    assert db.renewals == 0
    assert leases.failing == 1  # the renewal failed with the batch: tried again soon

    later = unit("a")
    acquire = Op("acquire", ("d",))
    leases.next_renewal = 0.0
    await group.commit([later, acquire])
    assert committed(later)
    assert acquire.result == outcome.Value(1)
    assert leases.held == {"d": 1}
    assert (db.renewals, leases.renewals, leases.failing) == (1, 1, 0)
    s = stats.snapshot(queued=0, leases=leases)
    assert (s.batches, s.units_committed, s.units_failed, s.isolated_retries) == (2, 1, 2, 1)


def test_a_sqlite_writer_runs_the_group_commit_as_one_synchronous_call() -> None:
    db, group, _, _ = setup()

    async def in_trio_task() -> Pending:
        return unit("a")  # a Pending belongs to the trio task that waits for it

    p = trio.run(in_trio_task)
    drive(group.commit([p]))  # no event loop: the fake's calls, like sqlite3's, never suspend
    assert committed(p) == db.events


async def test_no_transaction_without_work_or_a_due_renewal() -> None:
    db, group, stats, _ = setup()
    await group.commit([])
    assert db.transactions == 0
    assert stats.batches == 0
