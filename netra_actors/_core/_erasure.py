"""The rules of the data lifecycle: deleting a thread, retention, erasing a user (pure).

Erasure keeps the log's shape: a deleted or expired thread's events keep their ``seq`` and
become ``erased`` placeholders, and one ``thread_deleted`` event says so. This module says which
live runs a deletion cancels first, when retention may erase a thread (never one with a live run,
never one with recent activity), how a retention batch is bounded, and what the
``thread_deleted`` event holds. No I/O, no clock: times are arguments.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Protocol

from .._exceptions import CommandError, IllegalStateError
from ._execution import RunState

ERASED = "erased"
"""The event name of an erased placeholder (its ``data`` is ``{}``)."""
THREAD_DELETED = "thread_deleted"
"""The one event a deletion commits: ``{"thread", "reason"}``; it belongs to no thread."""
DAY = 86400.0
DEFAULT_RETENTION_BATCH = 1000
"""Events erased per retention transaction (``RuntimeConfig.retention_batch``)."""


class HasThread(Protocol):
    @property
    def thread(self) -> str: ...

    @property
    def run_id(self) -> str: ...


class Verdict(Enum):
    """What a retention batch does with a thread."""

    KEEP = "keep"
    """A live run, or activity since the cutoff: not expired."""
    ERASE = "erase"
    """Expired: erase a batch of its events."""


def runs_of_thread(runs: Iterable[HasThread], thread: str) -> list[str]:
    """The live runs a deletion of ``thread`` cancels first, in admission order."""
    return [r.run_id for r in runs if r.thread == thread]


def check_cancellable(state: RunState) -> None:
    """A deletion cancels its thread's live runs; one that is ``completing`` is committing its
    result right now: refuse (IllegalStateError, nothing changes), the client tries again."""
    if state is RunState.COMPLETING:
        raise IllegalStateError("a run of the thread is completing; try again in a moment")


def retention_verdict(live_runs: int, last_ts: float | None, idle_before: float) -> Verdict:
    """Whether retention erases a thread now: no live run, and its last event (``last_ts``;
    None: nothing left but placeholders) older than ``idle_before``."""
    if live_runs or (last_ts is not None and last_ts >= idle_before):
        return Verdict.KEEP
    return Verdict.ERASE


def idle_before(now: float, days: float) -> float:
    """The cutoff of retention: threads with no event since then expire."""
    return now - days * DAY


def thread_deleted(thread: str, reason: str) -> dict[str, str]:
    """The data of the ``thread_deleted`` event (``reason``: ``deleted`` or ``retention``)."""
    if reason not in ("deleted", "retention"):
        raise CommandError(f"unknown reason {reason!r}")
    return {"thread": thread, "reason": reason}
