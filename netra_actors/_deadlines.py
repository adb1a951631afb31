"""One timer for every supervisor: wakes a supervisor when its deadline has passed.

A supervisor has one deadline (the earliest of its runs' deadlines, heartbeats and restarts, or
its passivation when idle). Instead of a cancel scope around every wait for its next message, it
tells this wheel when it must be woken, and waits for its mailbox alone. The wheel is one trio
task with a heap; an entry that turns out to be early (the deadline moved on activity) is simply
re-filed at the supervisor's current deadline. A supervisor with nothing due files nothing: idle
sessions cost no timer at all. The heap holds its targets weakly: a session that passivated
before its entry came due (a run's heartbeat deadline, filed while its attempt ran) is not
kept in memory by it.
"""

from __future__ import annotations

import heapq
import itertools
import math
import weakref
from typing import Protocol

import trio


class Wakeable(Protocol):
    """What the wheel needs from a supervisor."""

    wake_at: float
    """The earliest time the wheel holds for it (``inf``: none)."""
    due: bool
    """Set by the wheel when it pokes it: its deadline passed (the mailbox loop acts on it
    before its next message, even when messages queue)."""

    @property
    def deadline(self) -> float | None:
        """Its current deadline, as last computed (None: nothing is due)."""
        ...

    def wake(self) -> None:
        """Poke it (never blocks)."""
        ...


class Deadlines:
    """The timer wheel of one runtime. Run :meth:`run` in a task of the runtime's nursery."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[Wakeable]]] = []
        self._order = itertools.count()
        self._lot = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, target: Wakeable, when: float) -> None:
        """Wake ``target`` at ``when`` (no-op if it is already due to be woken by then)."""
        if when >= target.wake_at:
            return
        target.wake_at = when
        first = not self._heap or when < self._heap[0][0]
        heapq.heappush(self._heap, (when, next(self._order), weakref.ref(target)))
        if first:
            self._lot.unpark_all()

    async def run(self) -> None:
        """Wake every target whose deadline has passed, forever."""
        heap = self._heap
        while True:
            if not heap:
                await self._lot.park()
                continue
            with trio.move_on_at(heap[0][0]):
                await self._lot.park()  # an earlier entry arrived: look again
                continue
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                when, _, ref = heapq.heappop(heap)
                target = ref()
                if target is None or target.wake_at != when:
                    continue  # gone, or superseded by an earlier entry
                target.wake_at = math.inf
                deadline = target.deadline
                if deadline is None:
                    continue
                if deadline <= now:
                    target.due = True
                    target.wake()
                else:  # moved later meanwhile: file it again
                    self.schedule(target, deadline)
