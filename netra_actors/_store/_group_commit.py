"""The group commit, written once for both databases; a dialect supplies only the driver calls.

The writer (a thread on SQLite, a task on the asyncio host on PostgreSQL) collects the waiting
units of every user and the other requests (:class:`Op`: lease acquisitions and releases, posted
commands, reply deletes) and hands each batch to :meth:`GroupCommit.commit`, one call on its
connection. That runs **one transaction**: the lease and inbox statements the batch needs (the
bulk renewal when it is due), the lease check of every fenced unit, then the rows of every unit
that passed it. If the transaction fails and it held more than one thing, it runs again with each
unit in its own SAVEPOINT, so that a bad unit fails alone. Then every waiter gets its outcome
(committed events, :class:`~netra_actors.exceptions.LeaseLostError`, or a :class:`~netra_actors.exceptions.StoreError`)
and the lease bookkeeping and the statistics are updated. Nothing here raises to the writer.

The code is async because asyncpg's calls suspend. SQLite's calls are plain blocking calls in the
writer thread that never suspend: its writer runs the coroutine to its end in one step.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Sequence
from typing import Any

import outcome

from .._logs import STORE_FAILURES, log_limited
from ._dialect import Dialect, Transaction
from ._leases import FORGET_AFTER, Leases
from ._rows import log
from ._staged import make_orm_transient
from ._statistics import Stats
from ._waiting import Op, Pending, as_store_error, short


class Prelude:
    """What the lease and inbox statements at the start of one transaction decided."""

    __slots__ = ("acquired", "errors", "fenced", "results", "still_ours")

    def __init__(self) -> None:
        self.still_ours: dict[str, int] | None = None
        """After a late renewal (past the deadline: another node may have taken leases over),
        every lease the database still gives this node: the others are lost."""
        self.acquired: dict[str, tuple[int | None, bool]] = {}
        """user_id -> (new epoch or None, whether it took another node's lease over)."""
        self.fenced: set[int] = set()
        """``id()`` of the units whose lease check failed."""
        self.results: dict[int, Any] = {}
        """``id(op)`` -> the op's result (reply deletes)."""
        self.errors: dict[int, BaseException] = {}
        """``id(unit)`` -> why it failed in its SAVEPOINT (isolated retry)."""


class GroupCommit:
    """Runs each batch of a writer as one transaction of its :class:`Dialect`."""

    def __init__(self, dialect: Dialect, stats: Stats, leases: Leases) -> None:
        self._dialect = dialect
        self._stats = stats
        self._leases = leases

    async def commit(self, batch: Sequence[Pending | Op]) -> None:
        """Give every waiter of ``batch`` its outcome; renew the leases if that is due (also
        for an empty batch). Raises only for a bug."""
        stats, leases = self._stats, self._leases
        units, ops = split_batch(batch)
        began = time.monotonic()
        # An acquisition past the node's deadline renews too (the leases it takes last only as
        # long as this node's row); otherwise the renewal keeps its own pace.
        renew = leases.due(began) or (
            began >= leases.deadline() and any(op.kind in ACQUIRING for op in ops)
        )
        if not (units or ops or renew):
            return
        started = time.perf_counter()
        if units or ops:
            stats.batches += 1
        if self._dialect.sorts_units:
            # Stable: a user's units keep their order.
            units.sort(key=_by_user)
        try:
            pre = await self._attempt(units, ops, renew, isolated=False)
        except Exception as exc:  # database errors, OSError, or a developer's listener raising
            if units and (len(units) > 1 or ops or renew):
                log_limited(
                    log,
                    logging.WARNING,
                    "group_commit",
                    "group commit of %d units failed (%s); retrying unit by unit",
                    len(units),
                    short(exc),
                    limiter=STORE_FAILURES,
                )
                stats.isolated_retries += 1
                make_orm_transient(units)
                try:
                    pre = await self._attempt(units, ops, renew, isolated=True)
                except Exception as exc2:
                    fail_all(units, ops, exc2, leases, renew)
                    stats.commit_failed(exc2)
                else:
                    finish(units, ops, pre, leases, renew, began)
                    if len(pre.errors) == len(units):  # not one unit could be written
                        stats.commit_failed(next(iter(pre.errors.values())))
                    else:
                        stats.committed()
            else:
                fail_all(units, ops, exc, leases, renew)
                stats.commit_failed(exc)
        else:
            finish(units, ops, pre, leases, renew, began)
            stats.committed()
        if units:
            stats.record(units, started)
        if stats.on_batch is not None and (units or ops):
            stats.on_batch(units, ops, started)

    async def _attempt(
        self, units: Sequence[Pending], ops: Sequence[Op], renew: bool, isolated: bool
    ) -> Prelude:
        """One transaction: the prelude, then every unit that passed its lease check —
        together, or (``isolated``) each in its own SAVEPOINT so that a bad one fails alone."""
        with_statements = any(p.unit.statements for p in units)
        begin = self._dialect.transaction(with_statements=with_statements, isolated=isolated)
        async with begin as tx:
            pre = await self._prelude(tx, ops, units, renew)
            live = [p for p in units if id(p) not in pre.fenced]
            if not isolated:
                lost = await tx.write(live)
                if lost:  # the lease check was the write's (``Transaction.fence``)
                    pre.fenced.update(id(p) for p in live if (p.user_id, p.epoch) in lost)
                return pre
            for p in live:
                try:
                    async with tx.savepoint():
                        await tx.write((p,))
                except Exception as exc:
                    log_limited(
                        log,
                        logging.WARNING,
                        "unit",
                        "unit of work of user %r failed: %s",
                        p.user_id,
                        short(exc),
                        limiter=STORE_FAILURES,
                    )
                    pre.errors[id(p)] = exc
        return pre

    async def _check_claims(self, tx: Transaction, claims: Sequence[Op], pre: Prelude) -> None:
        """A claim (:meth:`SqlStore.claim`) acted on a read: its owner already runs with the
        epoch it expected and the snapshot it read. Unless this acquisition gave exactly that
        epoch and the user's head is still the one read, the lease is spoiled (its epoch moves
        on, released): every unit of that owner is fenced, and it starts over as a follower."""
        stale = await tx.stale_heads([(op.args[0], op.args[2]) for op in claims])
        spoil = sorted(
            {
                user_id
                for user_id, expect, _head in (op.args for op in claims)
                if pre.acquired[user_id][0] is not None
                and (pre.acquired[user_id][0] != expect or user_id in stale)
            }
        )
        if spoil:
            await tx.spoil(spoil, self._leases.node)
            for user_id in spoil:
                pre.acquired[user_id] = (None, False)

    async def _prelude(
        self, tx: Transaction, ops: Sequence[Op], units: Sequence[Pending], renew: bool
    ) -> Prelude:
        """The lease and inbox statements at the start of a transaction, each one statement
        over everything of its kind in the batch, then the lease check of the fenced units."""
        pre = Prelude()
        leases = self._leases
        node, ttl = leases.node, leases.ttl
        if renew:
            await tx.renew(node, ttl)
            leases.others = await tx.others_alive(node)
            if leases.late(time.monotonic()):
                pre.still_ours = await tx.ours(node)
        by_kind: dict[str, list[Op]] = {}
        for op in ops:
            by_kind.setdefault(op.kind, []).append(op)
        claims = by_kind.get("claim", ())
        if claims or "acquire" in by_kind:
            users = sorted({op.args[0] for op in (*by_kind.get("acquire", ()), *claims)})
            others = await tx.others_of(users, node)
            pre.acquired = dict.fromkeys(users, (None, False))
            for user_id, epoch in await tx.acquire(users, node, ttl):
                pre.acquired[user_id] = (int(epoch), user_id in others)
            if claims:
                await self._check_claims(tx, claims, pre)
        if "release" in by_kind:
            await tx.release([(op.args[0], op.args[1]) for op in by_kind["release"]], node)
        if "release_all" in by_kind:
            await tx.release_all(node)
        if "reap" in by_kind:  # nodes proven gone: their leases may be taken over at once
            alive = await tx.live_nodes(node)
            dead = await tx.dead_nodes(alive) if alive else []
            await tx.forget_nodes(dead, FORGET_AFTER)
            for op in by_kind["reap"]:
                pre.results[id(op)] = dead
        if "post" in by_kind:
            await tx.post([op.args for op in by_kind["post"]])
        for op in by_kind.get("take_replies", ()):
            pre.results[id(op)] = await tx.take_replies(list(op.args[0]))
        pairs = {(p.user_id, p.epoch) for p in units if p.epoch is not None}
        if pairs:
            lost = await tx.fence(sorted(pairs), node)
            if lost:
                pre.fenced.update(id(p) for p in units if (p.user_id, p.epoch) in lost)
        return pre


_by_user = operator.attrgetter("user_id")
ACQUIRING = ("acquire", "claim")
"""The ops that take leases."""


def split_batch(batch: Sequence[Any]) -> tuple[list[Pending], list[Op]]:
    units: list[Pending] = []
    ops: list[Op] = []
    for item in batch:
        (units if type(item) is Pending else ops).append(item)
    return units, ops


def finish(
    units: Sequence[Pending],
    ops: Sequence[Op],
    pre: Prelude,
    leases: Leases,
    renewed: bool,
    began: float,
) -> None:
    """After a transaction committed: outcomes for every waiter, the new lease state."""
    if pre.still_ours is not None:
        leases.verified(pre.still_ours)
    if renewed:
        leases.renewed(began)
    for user_id, (epoch, taken_over) in pre.acquired.items():
        if epoch is not None:
            leases.acquired(user_id, epoch, began)
            leases.taken_over += taken_over
    for p in units:
        if id(p) in pre.fenced:
            assert p.epoch is not None
            p.result = outcome.Error(leases.fenced_unit(p.user_id, p.epoch))
            continue
        err = pre.errors.get(id(p))
        p.result = outcome.Value(p.events) if err is None else outcome.Error(as_store_error(err))
    for op in ops:
        kind = op.kind
        if kind in ACQUIRING:
            op.result = outcome.Value(pre.acquired[op.args[0]][0])
        elif kind == "release":
            leases.released(op.args[0], op.args[1])
            op.result = outcome.Value(None)
        elif kind == "release_all":
            leases.held.clear()
            leases.acquired_at.clear()
            op.result = outcome.Value(None)
        else:
            op.result = outcome.Value(pre.results.get(id(op)))


def fail_all(
    units: Sequence[Pending], ops: Sequence[Op], exc: BaseException, leases: Leases, renewed: bool
) -> None:
    """After a transaction failed: every waiter of the batch fails with the same error."""
    if renewed:
        leases.renewal_failed()
    err = as_store_error(exc)
    for w in (*units, *ops):
        w.fail(err)
