"""Pieces shared by the SQLite and PostgreSQL writers and readers.

A caller in trio that waits for the database is a :class:`Waiter`: it parks its task with
``trio.lowlevel.wait_task_rescheduled`` and the database side stores an ``outcome`` on it; one
hand-off per batch (:meth:`netra_actors._bridge.Bridge.resume_soon`) reschedules every waiter of
the batch. No trio object is created per request.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import outcome
import trio
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from .._core import LIVE_STATES
from .._exceptions import LeaseLostError, StoreError
from .._histogram import Histogram
from .._uow import UnitOfWork, is_orm_instance
from .._values import Event, RunInfo
from ._base import InboxItem, StoreStatistics

log = logging.getLogger("netra_actors.store")

StatementHook = Callable[[str], None]

LIVE_STATE_VALUES: tuple[str, ...] = tuple(sorted(s.value for s in LIVE_STATES))

EVENT_COLUMNS = ("user_id", "seq", "run_id", "event", "ts", "data")
RUN_COLUMNS = (
    "user_id",
    "run_id",
    "agent",
    "state",
    "attempt",
    "input",
    "result",
    "reason",
    "created_at",
    "updated_at",
)
RUN_MUTABLE = ("state", "attempt", "result", "reason", "updated_at")
RUN_SELECT = ", ".join(RUN_COLUMNS)
EVENT_SELECT = ", ".join(EVENT_COLUMNS)
UPSERT_SET = ", ".join(f"{c} = excluded.{c}" for c in RUN_MUTABLE)


class RunRecord(NamedTuple):
    """A row of ``netra_runs`` with attribute access (for :meth:`RunInfo.from_row`)."""

    user_id: str
    run_id: str
    agent: str
    state: str
    attempt: int
    input: str | None
    result: str | None
    reason: str | None
    created_at: float
    updated_at: float


def run_info(row: Sequence[Any]) -> RunInfo:
    return RunInfo.from_row(RunRecord(*row))


INBOX_SELECT = "id, user_id, request_id, kind, payload"


def inbox_item(row: Sequence[Any]) -> InboxItem:
    return InboxItem(id=int(row[0]), user_id=row[1], request_id=row[2], kind=row[3], payload=row[4])


# -- waiting in trio -----------------------------------------------------------------------------


_new = tuple.__new__


class Waiter:
    """A trio task parked until the database side gives it an outcome."""

    __slots__ = ("result", "task")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        self.result: outcome.Outcome[Any] | None = None

    def fail(self, exc: BaseException) -> None:
        self.result = outcome.Error(exc)


class Pending(Waiter):
    """One unit of work waiting for the writer.

    Its committed events are built here, once, in trio (overlapping the writer's work on the
    previous batch): an :class:`Event` is a tuple in the column order of ``netra_events``, so the
    same objects are the writer's row parameters and, once committed, the caller's result.
    """

    __slots__ = ("base_seq", "epoch", "events", "unit", "user_id")

    def __init__(
        self, user_id: str, base_seq: int, unit: UnitOfWork, epoch: int | None = None
    ) -> None:
        super().__init__()
        self.user_id = user_id
        self.base_seq = base_seq
        self.unit = unit
        self.epoch = epoch
        now = time.time()
        # ``tuple.__new__`` directly: the same value as ``Event(...)``, without the named
        # tuple's Python-level ``__new__`` (half the cost per event).
        self.events = [
            _new(Event, (user_id, seq, ev.run_id, ev.event, now, ev.data_json))
            for seq, ev in enumerate(unit.events, base_seq + 1)
        ]


class Op(Waiter):
    """A request for the writer other than a unit of work; it rides the next group transaction.

    ``kind`` is ``acquire`` (user_id), ``release`` (user_id, epoch), ``release_all`` (),
    ``post`` (user_id, request_id, kind, payload, created_at) or ``take_replies`` (ids).
    """

    __slots__ = ("args", "kind")

    def __init__(self, kind: str, args: tuple[Any, ...]) -> None:
        super().__init__()
        self.kind = kind
        self.args = args


class Read(Waiter):
    """One read request: ``kind`` and its arguments (``load_user`` carries many users)."""

    __slots__ = ("args", "kind")

    def __init__(self, kind: str, args: Any) -> None:
        super().__init__()
        self.kind = kind
        self.args = args


def _not_cancellable(_raise_cancel: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


async def wait_outcome(waiter: Waiter, *, cancellable: bool = False) -> Any:
    """Park the current task until ``waiter`` is resumed; return or raise its outcome.

    Not cancellable by default (a commit's outcome must be observed). A cancellable wait (reads)
    forgets the waiter: a result that arrives later is dropped.
    """
    if not cancellable:
        return await trio.lowlevel.wait_task_rescheduled(_not_cancellable)

    def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
        waiter.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    return await trio.lowlevel.wait_task_rescheduled(abort)


def resume_now(waiters: Sequence[Waiter]) -> None:
    """In trio: resume every waiter that is still waiting with its outcome."""
    for w in waiters:
        task, result = w.task, w.result
        if task is not None:
            assert result is not None
            w.task = None
            trio.lowlevel.reschedule(task, result)


def as_store_error(exc: BaseException) -> BaseException:
    """What a waiter raises for a database error (StoreError subclasses pass unchanged)."""
    if isinstance(exc, StoreError):
        return exc
    err = StoreError(short(exc))
    err.__cause__ = exc
    return err


# -- leases ----------------------------------------------------------------------------------


def node_name(node_id: str | None) -> str:
    """A new node identity for this process: ``{node_id or hostname}-{pid}-{6 hex}``."""
    return f"{node_id or socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Leases:
    """This node's leases as the writer last committed them, and its monotonic deadlines.

    Written by the writer (its thread or its asyncio task) after each transaction commits; read
    from trio. Times are ``time.monotonic()`` taken just before the transaction began, so a
    deadline is always earlier than the ``expires_at`` the database wrote (``now`` there was
    later) — by ``margin`` more, for clock-rate drift and scheduling.
    """

    def __init__(self, node: str, ttl: float) -> None:
        self.node = node
        self.ttl = ttl
        self.interval = ttl / 3
        # max(1 s, ttl/5) as designed; capped at ttl/2 so that a short TTL (tests) still
        # leaves a deadline after each renewal.
        self.margin = min(max(1.0, ttl / 5), ttl / 2)
        self.renewed_at = -math.inf
        self.next_renewal = 0.0
        self.held: dict[str, int] = {}
        self.acquired_at: dict[str, float] = {}
        self.taken_over = 0
        self.lost = 0
        self.renewals = 0
        self.failing = 0
        self.fenced = 0

    def due(self, now: float) -> bool:
        return now >= self.next_renewal

    def until_due(self) -> float:
        return min(max(0.0, self.next_renewal - time.monotonic()), 60.0)

    def renewed(self, began: float) -> None:
        self.renewed_at = began
        self.renewals += 1
        self.failing = 0
        self.next_renewal = began + self.interval

    def renewal_failed(self) -> None:
        self.failing += 1
        self.next_renewal = time.monotonic() + min(self.interval, 0.5)

    def acquired(self, user_id: str, epoch: int, began: float) -> None:
        self.held[user_id] = epoch
        self.acquired_at[user_id] = began

    def released(self, user_id: str, epoch: int | None) -> None:
        if epoch is None or self.held.get(user_id) == epoch:
            self.held.pop(user_id, None)
            self.acquired_at.pop(user_id, None)

    def fenced_unit(self, user_id: str, epoch: int) -> LeaseLostError:
        self.fenced += 1
        if self.held.get(user_id) == epoch:
            self.lost += 1
            self.released(user_id, epoch)
        return LeaseLostError(user_id, epoch)

    def deadline(self) -> float:
        return self.renewed_at + self.ttl - self.margin

    def late(self, began: float) -> bool:
        """Whether a renewal beginning now may come after another node took a lease over."""
        return bool(self.held) and began >= self.deadline()

    def verified(self, still_ours: dict[str, int]) -> None:
        """After a late renewal: forget (count as lost) every lease the database moved on."""
        for user_id, epoch in list(self.held.items()):
            if still_ours.get(user_id) != epoch:
                self.lost += 1
                self.released(user_id, epoch)

    def valid_until(self, user_id: str) -> float:
        at = self.acquired_at.get(user_id)
        if at is None:
            return -math.inf
        return max(at, self.renewed_at) + self.ttl - self.margin


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
        p.result = committed(p) if err is None else outcome.Error(as_store_error(err))
    for op in ops:
        kind = op.kind
        if kind == "acquire":
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
    if renewed:
        leases.renewal_failed()
    err = as_store_error(exc)
    for w in (*units, *ops):
        w.fail(err)


def head_rows(units: Sequence[Pending]) -> tuple[list[str], list[int]]:
    """Per user of the committed units, the head seq after them (for the NOTIFY hints)."""
    heads: dict[str, int] = {}
    for p in units:
        if p.events:
            seq = p.events[-1][1]
            if seq > heads.get(p.user_id, 0):
                heads[p.user_id] = seq
    return list(heads), list(heads.values())


def done_rows(units: Sequence[Pending]) -> list[tuple[int, str]]:
    return [(i, p.user_id) for p in units for i in p.unit.inbox_done]


def reply_rows(units: Sequence[Pending], now: float) -> list[tuple[str, str, bool, str, float]]:
    return [(r, u, ok, payload, now) for p in units for (r, u, ok, payload) in p.unit.replies]


# -- statistics ------------------------------------------------------------------------------


class Stats:
    """Counters of the writer (updated in the writer's thread; plain int increments)."""

    __slots__ = (
        "batches",
        "commit_seconds",
        "events_committed",
        "isolated_retries",
        "last_commit_seconds",
        "units_committed",
        "units_failed",
    )

    def __init__(self) -> None:
        self.batches = 0
        self.units_committed = 0
        self.units_failed = 0
        self.events_committed = 0
        self.isolated_retries = 0
        self.last_commit_seconds = 0.0
        self.commit_seconds = Histogram()

    def record(self, batch: Sequence[Pending], started: float) -> None:
        """Count the outcomes of the units of a transaction (ops are not counted)."""
        self.last_commit_seconds = seconds = time.perf_counter() - started
        self.commit_seconds.observe(seconds)
        for p in batch:
            if isinstance(p.result, outcome.Value):
                self.units_committed += 1
                self.events_committed += len(p.unit.events)
            else:
                self.units_failed += 1

    def snapshot(self, queued: int, leases: Leases | None = None) -> StoreStatistics:
        lease_stats = {}
        if leases is not None:
            lease_stats = {
                "leases_held": len(leases.held),
                "leases_taken_over": leases.taken_over,
                "leases_lost": leases.lost,
                "lease_renewals": leases.renewals,
                "lease_renewals_failing": leases.failing,
                "fenced_units": leases.fenced,
            }
        return StoreStatistics(
            **lease_stats,
            batches=self.batches,
            units_committed=self.units_committed,
            units_failed=self.units_failed,
            events_committed=self.events_committed,
            isolated_retries=self.isolated_retries,
            queued=queued,
            last_commit_seconds=self.last_commit_seconds,
            commit_seconds=self.commit_seconds.snapshot(),
        )


# -- rows ------------------------------------------------------------------------------------


def event_rows(batch: Sequence[Pending]) -> list[Event]:
    """The event rows of a batch (the committed events themselves: see :class:`Pending`)."""
    if len(batch) == 1:
        return batch[0].events
    return [ev for p in batch for ev in p.events]


def run_rows(batch: Sequence[Pending]) -> list[tuple[Any, ...]]:
    return [
        (
            r.user_id,
            r.run_id,
            r.agent,
            r.state,
            r.attempt,
            r.input_json,
            r.result_json,
            r.reason,
            r.created_at,
            r.updated_at,
        )
        for p in batch
        for r in p.unit.runs.values()
    ]


def committed(p: Pending) -> outcome.Value[list[Event]]:
    return outcome.Value(p.events)


# -- developers' statements ------------------------------------------------------------------


def apply_statements(conn: Connection, unit: UnitOfWork) -> None:
    """Run a unit's staged statements and ORM instances on ``conn``, in order."""
    orm: list[object] = []

    def flush_orm() -> None:
        if orm:
            with Session(
                bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
            ) as session:
                session.add_all(orm)
                session.commit()
            orm.clear()

    for s in unit.statements:
        if is_orm_instance(s.target):
            orm.append(s.target)
            continue
        flush_orm()
        if s.params is None:
            conn.execute(s.target)
        else:
            conn.execute(s.target, s.params)
    flush_orm()


def make_orm_transient(batch: Sequence[Pending]) -> None:
    """Before a retry: staged ORM objects of a rolled-back flush can be inserted again."""
    from sqlalchemy.orm import make_transient

    for p in batch:
        for s in p.unit.statements:
            if is_orm_instance(s.target):
                make_transient(s.target)


def short(exc: BaseException) -> str:
    """A one-line description of a database error, without the SQL and parameters."""
    orig = getattr(exc, "orig", None)
    msg = str(orig if orig is not None else exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(orig if orig is not None else exc).__name__}: {msg}"[:300]
