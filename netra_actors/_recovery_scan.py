"""The recovery scan: this node looks for users whose runs need an owner and have none, and
takes them without waiting for a client.

A run outlives its process (``docs/reliability.md``): when the node that owned a user is gone,
or a run's timer or scheduled start comes due while nobody holds the user, the store still has
the run. Every ``RuntimeConfig.recovery_scan`` seconds each node reads (two indexed queries, at
most ``recovery_batch`` users: ``Store.orphans``) the users with a live run that is not waiting
as a row, or with a timer or a start due within two scan intervals, whose lease nobody holds —
and activates each one that is not active here (``Registry.wake``): taking the lease over is
recovery (``_core/_recovery.py``). Every fourth scan it also asks the store to release the
leases of nodes proven gone (``ClusterStore.reap``: their incarnation lock could be taken), so
that a lone server restarted after ``kill -9`` does not wait for its old leases to expire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from ._exceptions import StoreError
from ._store import Store

log = logging.getLogger("netra_actors.recovery")


async def scan(
    store: Store,
    wake: Callable[[str], bool],
    *,
    interval: float,
    batch: int,
    stopped: Callable[[], bool],
) -> None:
    """Run the scan until cancelled (``wake(user_id)`` activates a user; ``stopped()``: the
    node drains, take nobody)."""
    reap: Any = getattr(store, "reap", None)
    rounds = 0
    while True:
        if not stopped():
            try:
                if reap is not None and rounds % 4 == 0:
                    gone = await reap()
                    if gone:
                        log.info("nodes proven gone, their users taken over: %s", ", ".join(gone))
                users = await store.orphans(batch, 2 * interval)
            except StoreError as exc:
                log.warning("the recovery scan failed: %s", exc)
                users = []
            woken = sum(wake(user_id) for user_id in users)
            if woken:
                log.info("took %d user(s) whose runs had no owner", woken)
            rounds += 1
        await trio.sleep(interval)
