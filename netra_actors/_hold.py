"""The session's hold: at most one agent task doing its supervisor's work (``_checkpoint.py``).

An async agent's checkpoint may run in the agent's own task while the supervisor is parked; the
hold is that turn. The supervisor waits for it (:meth:`Hold.settle`) before its next message and
then carries out what the agent left to it (a failed or fenced commit's ``deferred`` work).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

Deferred = Callable[[], Awaitable[Any]]
"""Work the supervisor must carry out before its next message."""


class Hold:
    """Who may change the user's session now besides its supervisor: at most one agent task,
    taken only while the supervisor is parked (see the module docstring)."""

    __slots__ = ("_waiter", "deferred", "held")

    def __init__(self) -> None:
        self.held = False
        """An agent task does the supervisor's work now."""
        self.deferred: Deferred | None = None
        """What the supervisor must carry out before its next message (a failed commit's)."""
        self._waiter: trio.lowlevel.Task | None = None

    def release(self) -> None:
        """The agent's part is done: the supervisor may go on (if it waits, it is resumed)."""
        self.held = False
        task, self._waiter = self._waiter, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def settle(self) -> None:
        """In the supervisor, before it handles a message: wait for the agent that holds the
        session, then carry out what it left to the supervisor."""
        while self.held:
            self._waiter = trio.lowlevel.current_task()

            def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
                self._waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        deferred, self.deferred = self.deferred, None
        if deferred is not None:
            await deferred()
