"""The mailbox loop of a user's session, shared by both roles (owner and follower).

A session takes messages from its bounded mailbox one at a time (invariant 1) and hands each to
its role. When the mailbox is empty it asks the role for its one deadline (the core computes it:
its runs' deadlines and, when idle, its passivation); it acts at once on a deadline that passed,
files a future one with the timer wheel (which pokes it then), and waits for its next message.
With nothing due it waits with no timer at all. Any message but a poke restarts the idle clock.
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
                    if await role.on_time() and on_idle():
                        return
                    continue
                wheel.schedule(role, deadline)  # it pokes us then (see wake)
            msg = await rx.receive()
        else:
            burst += 1
            if burst >= BURST:  # stay fair to other tasks under a burst
                burst = 0
                await trio.lowlevel.checkpoint()
        if type(msg) is not Poke:  # activity: the idle clock starts again
            session.idle_since = None
        if await role.handle(msg):
            return
