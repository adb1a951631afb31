"""Retention: the background task that erases the threads nobody touched for N days.

One task per runtime (``RuntimeConfig.retention_days``; off when None). Every
``retention_interval`` seconds it reads the expired threads from the store (one bounded read
across users, ``stale_threads``) and erases each **through the user's owner**, in batches: one
``DeleteThread`` message with ``idle_before`` per batch of at most ``retention_batch`` events,
then a pause of ``retention_pause`` seconds before the next one.

Why through the owner: a batch is then a unit of work like any other — in the user's mailbox
order, committed under the user's lease epoch in the same transaction as its statements — so
fencing holds without a second mechanism (a node that lost the user erases nothing, and no late
write of an old owner lands after the erasure), and the owner re-checks the rule at the moment
it erases (no live run in the thread, no event since the cutoff: ``_core/_erasure.py``). If
another node owns the user, the batch is forwarded to it like any command. Live traffic is never
stalled: each batch is a single message between the user's own messages, each transaction
touches at most ``retention_batch`` rows, and the pause leaves the writer to everyone else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._config import RuntimeConfig
from ._core._erasure import idle_before
from ._erasure import MORE
from ._exceptions import NetraError
from ._messages import DeleteThread, Reply

log = logging.getLogger("netra_actors.retention")

SWEEP_LIMIT = 1000
"""Expired threads read per sweep step (the next step reads the next ones)."""

Request = Callable[[str, Callable[[], Any]], Awaitable[Any]]


class Retention:
    """The retention task of one runtime (see the module docstring)."""

    def __init__(self, config: RuntimeConfig, store: Any, request: Request) -> None:
        assert config.retention_days is not None
        self.days = config.retention_days
        self.batch = config.retention_batch
        self.pause = config.retention_pause
        self.interval = config.retention_interval
        self._store = store
        self._request = request
        self.clock: Callable[[], float] = time.time
        """The wall clock the cutoff is computed on (tests replace it)."""
        self.batches = 0
        """Erasing batches carried out (for statistics and tests)."""
        self.threads_erased = 0

    async def run(self) -> None:
        """Sweep every ``interval`` seconds, forever."""
        if getattr(self._store, "stale_threads", None) is None:
            log.warning("retention is off: the store cannot list expired threads")
            return
        while True:
            try:
                await self.sweep()
            except NetraError as exc:
                log.warning("retention sweep failed: %s", exc)
            await trio.sleep(self.interval)

    async def sweep(self) -> int:
        """One sweep: erase every thread expired now. Returns how many were erased."""
        cutoff = idle_before(self.clock(), self.days)
        erased = 0
        seen: set[tuple[str, str]] = set()
        while True:
            found = await self._store.stale_threads(cutoff, SWEEP_LIMIT)
            fresh = [(u, t) for u, t, _ in found if (u, t) not in seen]
            if not fresh:
                return erased
            for user_id, thread in fresh:
                seen.add((user_id, thread))
                if await self._erase(user_id, thread, cutoff):
                    erased += 1

    async def _erase(self, user_id: str, thread: str, cutoff: float) -> bool:
        """Erase one thread batch by batch; True if it was erased (not kept)."""
        while True:
            try:
                result = await self._request(
                    user_id,
                    lambda: DeleteThread(
                        thread=thread, reply=Reply(), idle_before=cutoff, limit=self.batch
                    ),
                )
            except NetraError as exc:  # busy, moved, a failing store: the next sweep retries
                log.warning("retention of user %r thread %r: %s", user_id, thread, exc)
                return False
            self.batches += 1
            await trio.sleep(self.pause)
            if result != MORE:
                self.threads_erased += result == "done"
                return bool(result == "done")
