"""What the runtime needs from a store, as a protocol, and the values it returns."""

from __future__ import annotations

from typing import Protocol

import attrs

from .._histogram import HistogramSnapshot
from .._uow import UnitOfWork
from .._values import Event, RunInfo


@attrs.frozen(kw_only=True)
class UserSnapshot:
    """What a supervisor loads on activation."""

    head_seq: int
    """The user's highest committed ``seq`` (0 for a new user)."""
    live_runs: tuple[RunInfo, ...]
    """Runs the store still has in a live state (left behind by a process that died)."""


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """Counters of a store since it was opened."""

    batches: int
    """Group commits (transactions) attempted."""
    units_committed: int
    units_failed: int
    events_committed: int
    isolated_retries: int
    """Batches that failed whole and were retried unit by unit."""
    queued: int
    """Units waiting for the writer right now."""
    last_commit_seconds: float
    """Duration of the last group commit."""
    commit_seconds: HistogramSnapshot
    """Durations of every group commit (one transaction each)."""


class Store(Protocol):
    """The durable state of every user. All methods are called from trio tasks.

    Every method that reads or writes takes the ``user_id`` and touches only that user's rows.
    """

    async def load_user(self, user_id: str) -> UserSnapshot:
        """The head ``seq`` and the live runs of a user."""
        ...

    async def commit(self, user_id: str, base_seq: int, unit: UnitOfWork) -> list[Event]:
        """Commit a unit atomically. Its events get seqs ``base_seq+1 …`` in order.

        Raises :class:`~netra_actors.StoreError` if it did not commit (nothing of it is
        visible). Not cancellable: once submitted, the caller waits for the outcome.
        """
        ...

    async def replay(self, user_id: str, after_seq: int, limit: int) -> list[Event]:
        """Up to ``limit`` committed events with ``seq > after_seq``, in order."""
        ...

    async def get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        """The run, if it exists *for this user*."""
        ...

    async def list_runs(self, user_id: str, limit: int) -> list[RunInfo]:
        """The user's most recent runs, newest first."""
        ...

    async def check(self) -> None:
        """Raise :class:`~netra_actors.StoreError` unless the store answers."""
        ...

    def statistics(self) -> StoreStatistics:
        """Counters since the store was opened."""
        ...

    async def aclose(self) -> None:
        """Finish pending commits and release connections."""
        ...
