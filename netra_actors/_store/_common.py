"""Pieces shared by the SQLite and PostgreSQL writers and readers.

A caller in trio that waits for the database is a :class:`Waiter`: it parks its task with
``trio.lowlevel.wait_task_rescheduled`` and the database side stores an ``outcome`` on it; one
hand-off per batch (:meth:`netra_actors._bridge.Bridge.resume_soon`) reschedules every waiter of
the batch. No trio object is created per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import outcome
import trio
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import Executable

from .._core import LIVE_STATES
from .._exceptions import StoreError
from .._histogram import Histogram
from .._uow import UnitOfWork
from .._values import Event, RunInfo
from ._base import StoreStatistics

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

    __slots__ = ("base_seq", "events", "unit", "user_id")

    def __init__(self, user_id: str, base_seq: int, unit: UnitOfWork) -> None:
        super().__init__()
        self.user_id = user_id
        self.base_seq = base_seq
        self.unit = unit
        now = time.time()
        # ``tuple.__new__`` directly: the same value as ``Event(...)``, without the named
        # tuple's Python-level ``__new__`` (half the cost per event).
        self.events = [
            _new(Event, (user_id, seq, ev.run_id, ev.event, now, ev.data_json))
            for seq, ev in enumerate(unit.events, base_seq + 1)
        ]


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
        self.last_commit_seconds = seconds = time.perf_counter() - started
        self.commit_seconds.observe(seconds)
        for p in batch:
            if isinstance(p.result, outcome.Value):
                self.units_committed += 1
                self.events_committed += len(p.unit.events)
            else:
                self.units_failed += 1

    def snapshot(self, queued: int) -> StoreStatistics:
        return StoreStatistics(
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


def is_orm_instance(target: object) -> bool:
    """True for an instance of a mapped (ORM) class."""
    return hasattr(type(target), "__mapper__") and hasattr(target, "_sa_instance_state")


def check_stageable(target: object) -> None:
    """Raise ``TypeError`` unless ``target`` can be staged in a unit of work."""
    if not (is_orm_instance(target) or isinstance(target, Executable)):
        raise TypeError(
            "stage() takes an instance of a SQLAlchemy mapped class or a Core statement "
            f"(insert/update/delete), not {type(target).__name__}"
        )


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
