"""A user's sockets on this node: its subscriptions and the head ``seq`` they have been given.

Both roles of a session (the owner and a follower) hold one, and hand it on when the role
changes. It registers a subscription and reads the head in one step (exact resume, invariant 7),
hands committed events to every subscription in ``seq`` order without waiting (invariants 2, 3),
drops the ones that closed, and catches up from the store what was committed meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._exceptions import ResumeBeyondHeadError, StoreError, SubscriptionClosedError
from ._messages import Subscribe
from ._values import Delta, Event

if TYPE_CHECKING:
    from ._deps import Counters
    from ._store import Store
    from ._subscription import Subscription

log = logging.getLogger("netra_actors.cluster")

ERASED = "erased"
"""The reason subscriptions close with when their user's data was erased."""


class Feed:
    """The subscriptions of one user on this node, and the head ``seq`` they were given."""

    __slots__ = ("head", "subs")

    def __init__(self) -> None:
        self.subs: list[Subscription] = []
        self.head = -1
        """The last ``seq`` handed to the subscriptions (-1: not known yet)."""

    def subscribe(
        self, msg: Subscribe, on_close: Callable[[], None], open_text: Iterable[Delta] = ()
    ) -> None:
        """Register a subscription at the head (``open_text``: messages still streaming)."""
        if msg.resume_from is not None and msg.resume_from > self.head:
            msg.reply.fail(
                ResumeBeyondHeadError(
                    f"resume_from {msg.resume_from} is greater than head_seq {self.head}"
                )
            )
            return
        sub = msg.subscription
        sub._registered(self.head, on_close)
        self.subs.append(sub)
        if sub.deltas:  # messages still streaming: all their text so far, at offset 0
            for delta in open_text:
                sub._offer_delta(delta)
        msg.reply.set(self.head)

    def deliver(self, events: list[Event], counters: Counters) -> None:
        """Committed events, after their commit: to every subscription, in order."""
        keep = []
        for sub in self.subs:
            if sub._offer(events):
                keep.append(sub)
                counters.events_delivered += len(events)
        self.subs = keep
        counters.commit_to_mailbox.observe(max(0.0, time.time() - events[-1].ts))

    def deliver_delta(self, delta: Delta) -> None:
        """Provisional text: to the subscriptions that take it, now."""
        for sub in self.subs:
            if sub.deltas:
                sub._offer_delta(delta)

    def active(self) -> bool:
        """True while a subscription is open (the closed ones are dropped)."""
        self.subs = [s for s in self.subs if not s.closed]
        return bool(self.subs)

    def close(self, reason: str) -> None:
        for sub in self.subs:
            sub._close(SubscriptionClosedError(reason))

    def erased(self, head: int) -> None:
        """The user's data was erased (the store's head went back to ``head``): every
        subscription closes ``erased`` (its client drops what it holds: close code 4410)."""
        self.close(ERASED)
        self.subs = []
        self.head = head

    async def catch_up(self, store: Store, user_id: str, after: int, *, page: int) -> None:
        """Hand over the events committed after ``after`` up to ``head`` (for subscriptions a
        follower handed to the new owner)."""
        while after < self.head:
            events = await store.replay(user_id, after, page)
            events = [e for e in events if e.seq <= self.head]
            if not events:
                return
            self.subs = [s for s in self.subs if s._offer(events)]
            after = events[-1].seq

    async def follow(
        self,
        store: Store,
        user_id: str,
        *,
        page: int,
        counters: Counters,
        on_events: Callable[[list[Event]], None] | None = None,
    ) -> None:
        """Hand over every event another node committed after ``head``, in order
        (``on_events`` sees them as they are handed over)."""
        while True:
            try:
                events = await store.replay(user_id, self.head, page)
            except StoreError as exc:
                log.warning("user %r: following failed: %s", user_id, exc)
                return
            if not events:
                return
            self.head = events[-1].seq
            self.subs = [s for s in self.subs if s._offer(events)]
            if on_events is not None:
                on_events(events)
            counters.follow_lag.observe(max(0.0, time.time() - events[-1].ts))
            if len(events) < page:
                return
