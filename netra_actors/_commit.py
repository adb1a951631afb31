"""Committing a user's units while this node owns the user: fencing, retry, then delivery.

Every unit of a user is committed here, one at a time, under the lease epoch this node holds
(a unit another node fenced off raises :class:`Lost`: this node no longer owns the user). Seqs
are assigned at commit (gapless, invariant 3), and committed events go to the user's sockets
only once the commit returned (invariant 2). A unit the runtime owns (a state change, a
rollback notice) is retried as the core's ``retry_delay`` says; when it gives up the session
fails (:class:`SessionFailed`) and is rebuilt from the store.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from ._core._session import retry_delay
from ._exceptions import LeaseLostError, StoreError
from ._logs import STORE_FAILURES, log_limited
from ._uow import UnitOfWork

if TYPE_CHECKING:
    from ._deps import SupervisorDeps
    from ._feed import Feed

log = logging.getLogger("netra_actors.supervisor")


class SessionFailed(Exception):
    """A unit the runtime owns could not be committed: the supervisor must stop.

    Its memory may now differ from the store, so it crashes (the runtime logs it and closes its
    subscriptions with ``session_failed``); the next activation rebuilds the user from the store.
    """

    def __init__(self, error: StoreError) -> None:
        super().__init__(f"the store keeps failing: {error}")
        self.error = error


class Lost(Exception):
    """A fenced commit: this node no longer owns the user (unwinds to the supervisor's run)."""


class Committer:
    """Commits one user's units (see the module docstring)."""

    __slots__ = ("_deps", "_feed", "_threads", "consuming", "epoch", "user_id")

    def __init__(
        self,
        deps: SupervisorDeps,
        user_id: str,
        feed: Feed,
        epoch: int | None,
        threads: Mapping[str | None, str],
    ) -> None:
        self._deps = deps
        self._feed = feed
        self._threads = threads
        """The thread of each live run (the session's map): every unit's events carry it."""
        self.user_id = user_id
        self.epoch = epoch
        """The lease epoch every unit is committed under (None: unfenced)."""
        self.consuming: Any = None
        """The inbox item being handled: its deletion rides the command's first unit."""

    async def commit(self, unit: UnitOfWork) -> None:
        """Commit one unit, then deliver its events (raises StoreError if it did not commit)."""
        deps = self._deps
        feed = self._feed
        item = self.consuming
        if item is not None:  # the inbox command is consumed with its first effect
            unit.inbox_done.append(item.id)
        unit.threads = self._threads
        if deps.cluster.relay_pending(self.user_id):  # its deltas reach other nodes first
            await deps.cluster.relay_flushed(self.user_id)
        try:
            if self.epoch is None:  # unfenced (a store without leases)
                events = await deps.store.commit(self.user_id, feed.head, unit)
            else:
                assert deps.leases is not None
                events = await deps.leases.commit(self.user_id, feed.head, unit, epoch=self.epoch)
        except LeaseLostError as exc:
            deps.counters.fenced += 1
            raise Lost() from exc
        if item is not None:
            self.consuming = None
        if deps.tracer is not None:
            deps.tracer(self.user_id, "committed", events)
        if events:
            feed.head = events[-1].seq
            feed.deliver(events, deps.counters)

    async def commit_owned(self, unit: UnitOfWork) -> None:
        """Commit a unit the runtime owns (rollback notices, state changes), retrying.

        If the store keeps failing, the session fails: its runs stay live in the store and the
        next activation ends them ``dead`` with a rollback event.
        """
        retries = self._deps.rules.store_retries
        failed = 0
        while True:
            try:
                await self.commit(unit)
                return
            except StoreError as exc:
                failed += 1
                delay = retry_delay(failed, retries=retries)
                if delay is None:
                    raise SessionFailed(exc) from exc
                log_limited(
                    log,
                    logging.WARNING,
                    "commit_retry",
                    "user %r: commit failed (%s), retry %d/%d",
                    self.user_id,
                    exc,
                    failed,
                    retries,
                    limiter=STORE_FAILURES,
                )
                await trio.sleep(delay)
