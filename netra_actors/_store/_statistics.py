"""The writer's counters, and the :class:`StoreStatistics` snapshot taken from them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import outcome

from .._histogram import Histogram
from ._base import StoreStatistics
from ._leases import Leases
from ._rows import log
from ._waiting import Pending, short


class Stats:
    """Counters of the writer (updated in the writer's thread; plain int increments)."""

    __slots__ = (
        "batches",
        "commit_seconds",
        "commits_failing",
        "events_committed",
        "isolated_retries",
        "last_commit_error",
        "last_commit_seconds",
        "on_batch",
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
        self.on_batch: Callable[[Sequence[Pending], Sequence[Any], float], None] | None = None
        """Called in the writer after each transaction with its units, its other requests and
        when it began (``time.perf_counter()``): the tracing's group-commit span."""
        self.commits_failing = 0
        self.last_commit_error: str | None = None

    def committed(self) -> None:
        """A transaction committed: the store commits (again)."""
        if self.commits_failing:
            log.warning(
                "the store commits again, after %d failed transaction(s)", self.commits_failing
            )
        self.commits_failing = 0
        self.last_commit_error = None

    def commit_failed(self, error: BaseException) -> None:
        """A transaction (or every unit of it) failed: the store cannot commit right now —
        unless the data broke a constraint (a developer's statement): the store is fine then."""
        if any("Integrity" in cls.__name__ for cls in type(error).__mro__):
            return  # sqlite3 / SQLAlchemy IntegrityError, asyncpg IntegrityConstraintViolation
        self.commits_failing += 1
        self.last_commit_error = short(error)

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
            commits_failing=self.commits_failing,
            last_commit_error=self.last_commit_error,
            commit_seconds=self.commit_seconds.snapshot(),
        )
