"""A socket mailbox: one subscriber's view of a user's committed events, bounded.

The supervisor hands committed events to every subscription of its user, in ``seq`` order, without
ever waiting (:meth:`Subscription._offer` never blocks). A subscription that holds more than its
capacity is closed with :class:`SlowConsumerError`: its reader reconnects with ``resume_from`` and
catches up from the store, so a slow client never holds back its supervisor or anyone else.

Resume is exact: subscribing registers the subscription *and* reads the user's head ``seq`` in one
step of the supervisor, so events up to that head come from the store (replay) and events after it
arrive live, with no gap and no duplicate at the seam.

A subscription may also *push* (:meth:`Subscription.push_to`): live items go straight to a
synchronous sink, in the delivering task, after their commit — no reader task is woken per unit.
Whatever the sink does not take (and everything while the subscription replays, or while items
wait in its buffer) takes the bounded buffer and its reader as above, so order, the capacity
and the overflow rule are the same on both paths.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._exceptions import SlowConsumerError, SubscriptionClosedError
from ._values import Delta, Event

if TYPE_CHECKING:
    from ._store import Store

log = logging.getLogger("netra_actors.supervisor")

Sink = Callable[[list[Any]], bool]
"""A push subscriber: takes live items (a list of :class:`Event`, or one :class:`Delta`) and
returns True, or returns False to leave them to the buffer and its reader."""


@attrs.frozen(kw_only=True)
class SubscriptionStatistics:
    """A snapshot of one subscription."""

    buffered: int
    """Live events waiting to be read."""
    capacity: int
    delivered: int
    """Events returned to the reader so far (replayed and live)."""
    replaying: bool
    """True while events up to the subscribe-time head are still being read from the store."""


class Subscription:
    """The committed events of one user, for one reader (typically one WebSocket).

    Read with ``async for event in subscription`` or :meth:`receive_batch`. Close with
    :meth:`close` (or ``async with``).
    """

    def __init__(
        self,
        store: Store,
        user_id: str,
        *,
        resume_from: int | None,
        capacity: int,
        page: int,
        deltas: bool = False,
    ) -> None:
        self.user_id = user_id
        self.deltas = deltas
        """Whether provisional text (:class:`~netra_actors.Delta`) is delivered too: read such a
        subscription with :meth:`receive_items`."""
        self.resume_from = resume_from
        self.head_seq = 0
        """The user's head ``seq`` when the subscription was registered."""
        self._store = store
        self._capacity = capacity
        self._page = page
        self._buf: collections.deque[Event | Delta] = collections.deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed: SubscriptionClosedError | None = None
        self._replay_next: int | None = resume_from  # last seq handed out while replaying
        self._delivered = 0
        self._last_seq: int | None = resume_from
        self._on_close: Callable[[], None] | None = None
        self._sink: Sink | None = None

    # -- the supervisor's side (never blocks) -----------------------------------------------

    def _registered(self, head_seq: int, on_close: Callable[[], None]) -> None:
        self.head_seq = head_seq
        self._on_close = on_close
        if self._replay_next is not None and self._replay_next >= head_seq:
            self._replay_next = None

    def _offer(self, events: Sequence[Event]) -> bool:
        """Append committed events (or push them). False if this subscription is closed (drop
        it)."""
        if self._closed is not None:
            return False
        if self._sink is not None and not self._buf and self._replay_next is None:
            if self._push(events):
                return True
            if self.closed:  # the sink failed
                return False
        if len(self._buf) + len(events) > self._capacity:
            self._close(SlowConsumerError())
            return False
        self._buf.extend(events)
        self._lot.unpark_all()
        return True

    def _offer_delta(self, delta: Delta) -> bool:
        """Append provisional text, merged into the previous delta of the same message when
        it follows it directly (a reader that is behind gets fewer, longer deltas, never gaps).
        False if this subscription is closed (drop it)."""
        if self._closed is not None:
            return False
        buf = self._buf
        if self._sink is not None and not buf and self._replay_next is None:
            if self._push([delta]):
                return True
            if self.closed:  # the sink failed
                return False
        if buf:
            last = buf[-1]
            if (
                type(last) is Delta
                and last.message_id == delta.message_id
                and last.offset + len(last.text) == delta.offset
            ):
                buf[-1] = last._replace(text=last.text + delta.text)
                return True
        if len(buf) >= self._capacity:
            self._close(SlowConsumerError())
            return False
        buf.append(delta)
        self._lot.unpark_all()
        return True

    def _push(self, items: Sequence[Any]) -> bool:
        """Hand live items to the sink; False if it left them to the buffer (or failed: then
        this subscription is closed)."""
        assert self._sink is not None
        try:
            taken = self._sink(items if type(items) is list else list(items))
        except Exception:
            log.exception("user %r: a subscription's sink failed; closing it", self.user_id)
            self._close(SubscriptionClosedError("session_failed", "the subscription's sink failed"))
            return False
        if taken:
            self._count(items)
        return taken

    def _close(self, error: SubscriptionClosedError) -> None:
        if self._closed is None:
            self._closed = error
            self._buf.clear()
            self._lot.unpark_all()

    # -- the reader's side ------------------------------------------------------------------

    def push_to(self, sink: Sink | None) -> None:
        """Push live items to ``sink`` instead of waking a reader (None: stop pushing).

        ``sink(items)`` is called in the task that delivers, right after the commit, with the
        events of one unit (a list of :class:`Event`) or one :class:`Delta`; it must not block
        and should not raise (a sink that raises closes the subscription). It returns True when
        it took the items, or False to leave them to the buffer: they are then read as without
        a sink (:meth:`receive_items`), and so is everything after them until the buffer is
        empty again. A sink is only called when the buffer is empty and the replay is done, so
        items reach it in order; a sink whose reader also hands items on must refuse while
        that reader holds items it has not yet passed on.
        """
        self._sink = sink

    def pending(self) -> bool:
        """True while items wait in the buffer (or in the replay) for the reader."""
        return bool(self._buf) or self._replay_next is not None

    @property
    def closed(self) -> bool:
        """True once closed, for whatever reason."""
        return self._closed is not None

    def close(self) -> None:
        """Stop receiving. The supervisor is told, and forgets this subscription."""
        if self._closed is None:
            self._close(SubscriptionClosedError("closed"))
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()

    async def receive_batch(self, max_events: int = 256) -> list[Event]:
        """The next events in ``seq`` order: at least one, at most ``max_events``.

        Raises :class:`SlowConsumerError` if this reader fell behind, or
        :class:`SubscriptionClosedError` once closed. (A subscription opened with ``deltas``
        is read with :meth:`receive_items`.)
        """
        if self.deltas:
            raise TypeError("this subscription delivers deltas too: use receive_items()")
        return await self.receive_items(max_events)  # type: ignore[return-value]

    async def receive_items(self, max_items: int = 256) -> list[Event | Delta]:
        """The next committed events and provisional deltas, in the order they happened.

        Events come in ``seq`` order (replayed first when resuming); a delta never follows its
        message's committed ``message`` event or its attempt's ``run_rolled_back``.
        """
        max_events = max_items
        if self._replay_next is not None and self._closed is None:
            after = self._replay_next
            want = min(max_events, self._page, self.head_seq - after)
            events = await self._store.replay(self.user_id, after, want)
            events = [e for e in events if e.seq <= self.head_seq]
            if not events or events[0].seq != after + 1:
                error = SubscriptionClosedError(
                    "session_failed", f"replay after seq {after} found a gap in the store"
                )
                self._close(error)
                raise error
            self._replay_next = events[-1].seq if events[-1].seq < self.head_seq else None
            return self._hand_out(events)
        while not self._buf:
            if self._closed is not None:
                raise self._closed
            await self._lot.park()
        if self._closed is not None:
            raise self._closed
        n = min(max_events, len(self._buf))
        return self._hand_out([self._buf.popleft() for _ in range(n)])

    def _hand_out(self, items: list[Any]) -> list[Event | Delta]:
        self._count(items)
        return items

    def _count(self, items: Sequence[Any]) -> None:
        self._delivered += len(items)
        for item in reversed(items):
            if type(item) is Event:
                self._last_seq = item.seq
                break

    async def receive(self) -> Event:
        """The next event (see :meth:`receive_batch`)."""
        return (await self.receive_batch(1))[0]

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except SubscriptionClosedError as exc:
            if exc.reason == "closed":
                raise StopAsyncIteration from None
            raise

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def statistics(self) -> SubscriptionStatistics:
        """Buffer depth and counters."""
        return SubscriptionStatistics(
            buffered=len(self._buf),
            capacity=self._capacity,
            delivered=self._delivered,
            replaying=self._replay_next is not None,
        )
