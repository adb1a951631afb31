"""Trio tasks waiting for the database side, and the outcomes it gives them.

A caller in trio that waits for the database is a :class:`Waiter`: it parks its task with
``trio.lowlevel.wait_task_rescheduled`` and the database side stores an ``outcome`` on it; one
hand-off per batch (:meth:`netra_actors._bridge.Bridge.resume_soon`) reschedules every waiter of
the batch. No trio object is created per request. :class:`Server` is the trio side every writer
and reader shares: what a waiter gets once it has stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import outcome
import trio

from .._exceptions import StoreError
from .._uow import UnitOfWork
from .._values import Event

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
        # tuple's Python-level ``__new__`` (half the cost per event). An event's thread is its
        # run's (``unit.threads``), else the unit's own.
        thread_of, thread = unit.threads.get, unit.thread
        self.events = [
            _new(
                Event,
                (
                    user_id,
                    seq,
                    ev.run_id,
                    ev.event,
                    now,
                    ev.data_json,
                    thread_of(ev.run_id, thread),
                ),
            )
            for seq, ev in enumerate(unit.events, base_seq + 1)
        ]


class Op(Waiter):
    """A request for the writer other than a unit of work; it rides the next group transaction.

    ``kind`` is ``acquire`` (user_id), ``claim`` (user_id, expected epoch, head seq read; nobody
    waits for it), ``release`` (user_id, epoch), ``release_all`` (),
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


def short(exc: BaseException) -> str:
    """A one-line description of a database error, without the SQL and parameters."""
    orig = getattr(exc, "orig", None)
    msg = str(orig if orig is not None else exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(orig if orig is not None else exc).__name__}: {msg}"[:300]


def as_store_error(exc: BaseException) -> BaseException:
    """What a waiter raises for a database error (StoreError subclasses pass unchanged)."""
    if isinstance(exc, StoreError):
        return exc
    err = StoreError(short(exc))
    err.__cause__ = exc
    return err


class Server:
    """The trio side of a writer or reader once it has ended: every later request, and every
    one still queued or in flight, fails with ``StoreError("the store <role> stopped: …")``."""

    role = "server"

    def __init__(self) -> None:
        self.dead: str | None = None
        """Why it stopped (None while it runs)."""
        self.exited = False
        self._exit_waiter: Waiter | None = None
        """The task waiting in ``stop()``, resumed once it has ended."""

    def stopped_error(self) -> StoreError:
        return StoreError(f"the store {self.role} stopped: {self.dead}")

    def _ended(self, left: Iterable[Waiter], exc: BaseException | None) -> None:
        """In trio, once it has ended: fail every waiter of ``left`` still without an outcome,
        wake the task in ``stop()``."""
        self.exited = True
        if exc is not None:
            self.dead = short(exc)
        elif self.dead is None:
            self.dead = "it was closed"
        waiters = list(left)
        for w in waiters:
            if w.result is None:
                w.fail(self.stopped_error())
        if self._exit_waiter is not None:
            self._exit_waiter.result = outcome.Value(None)
            waiters.append(self._exit_waiter)
        resume_now(waiters)
