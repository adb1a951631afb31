"""The mailbox loop of a user's session, shared by both roles (owner and follower).

A session takes messages from its bounded mailbox one at a time (invariant 1) and hands each to
its role. When the mailbox is empty it asks the role for its one deadline (the core computes it:
its runs' deadlines and, when idle, its passivation); it acts at once on a deadline that passed,
files a future one with the timer wheel (which pokes it then), and waits for its next message.
With nothing due it waits with no timer at all. Any message but a poke restarts the idle clock.
A deadline that passes while messages queue (the wheel sets ``role.due``; a plan applied
mid-burst files its run's deadline at once: ``Owner.due_at``) is acted on before the next
message: timers due together wake in one unit, and a later one does not wait behind the
commits of the runs woken before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import trio

from ._core._session import Session
from ._deadlines import Deadlines
from ._messages import Message, Poke

#: Messages handled in a row before the loop yields to other tasks (fairness under a burst).
BURST = 64


class Role(Protocol):
    """What the loop needs from a session's role."""

    deadline: float | None
    wake_at: float
    due: bool

    @property
    def session(self) -> Session[Any]:
        """The core's state of the session (its idle clock)."""
        ...

    def wake(self) -> None: ...

    def next_deadline(self) -> float | None:
        """The earliest moment something is due without a message (None: nothing is)."""
        ...

    async def on_time(self) -> bool:
        """The deadline passed: act on it. True if the session may passivate now."""
        ...

    async def handle(self, msg: Message) -> bool:
        """Handle one message. True if the session ends now."""
        ...


async def serve(
    role: Role,
    rx: trio.MemoryReceiveChannel[Message],
    wheel: Deadlines,
    on_idle: Callable[[], bool],
) -> None:
    """Handle messages until the role ends, or it passivates (``on_idle()`` returns True)."""
    session = role.session
    burst = 0
    while True:
        try:
            msg = rx.receive_nowait()
        except trio.WouldBlock:
            burst = 0
            deadline = role.deadline = role.next_deadline()
            if deadline is not None:
                if deadline <= trio.current_time():
                    role.due = False
                    if await role.on_time() and on_idle():
                        return
                    _refile(role, wheel)  # messages that came meanwhile wait for what is due
                    continue
                wheel.schedule(role, deadline)  # it pokes us then (see wake)
            msg = await rx.receive()
        else:
            burst += 1
            if burst >= BURST:  # stay fair to other tasks under a burst
                burst = 0
                await trio.lowlevel.checkpoint()
            # A deadline passed while messages queue (the wheel says so): it goes first, so
            # that a due timer does not wait behind the commits of the runs woken before it.
            # No passivation here (a message is in hand); bounded, then the wheel has it.
            for _ in range(_DUE_ROUNDS):
                if not role.due:
                    break
                role.due = False
                await role.on_time()
                _refile(role, wheel)
        if type(msg) is not Poke:  # activity: the idle clock starts again
            session.idle_since = None
        if await role.handle(msg):
            return


_DUE_ROUNDS = 4
"""How many times in a row the loop acts on what came due before it takes its next message."""


def _refile(role: Role, wheel: Deadlines) -> None:
    """After acting on what was due: the next deadline (a timer due later, …) is due now
    (``role.due``) or filed with the wheel."""
    deadline = role.deadline = role.next_deadline()
    if deadline is not None:
        if deadline <= trio.current_time():
            role.due = True
        else:
            wheel.schedule(role, deadline)
