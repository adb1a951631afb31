"""This node's identity and its leases: what the writer last committed, and the deadlines.

The lease statements themselves ride the group commit (:mod:`._group_commit`); this is the
bookkeeping that turns their outcomes into ``time.monotonic()`` deadlines the owners act on.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time

from .._exceptions import LeaseLostError

FORGET_AFTER = 86400.0
"""Seconds after which the row of a node that stopped renewing is deleted by the next reap
(it holds nothing by then: its leases are free since it lapsed)."""


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
        self.others: bool | None = None
        """Whether another node was alive at the last look (each renewal, each claim's read;
        None: not looked yet). Claims act on a read alone only while this node is alone."""

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
        """A held lease lasts as long as this node's row: the node's deadline."""
        if user_id not in self.acquired_at:
            return -math.inf
        return self.deadline()
