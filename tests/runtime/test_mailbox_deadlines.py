"""The mailbox loop acts on a deadline that passed before its next message, even while messages
queue (a due timer does not wait behind the commits of the runs woken before it)."""

from __future__ import annotations

import gc
import math
import weakref
from typing import Any

import trio

from netra_actors._core._session import Session, SessionRules
from netra_actors._deadlines import Deadlines
from netra_actors._mailbox import serve
from netra_actors._messages import Poke
from netra_actors.testing import guest_test


class Role:
    """A role whose deadline is set by the test; it records what the loop asks of it."""

    def __init__(self, log: list[Any], wheel: Deadlines) -> None:
        self.session: Session[Any] = Session(SessionRules())
        self.deadline: float | None = None
        self.wake_at = math.inf
        self.due = False
        self.log = log
        self.wheel = wheel
        self.due_at: float | None = None
        """When the next thing is due (None: nothing)."""

    def wake(self) -> None:
        self.log.append("poked")

    def next_deadline(self) -> float | None:
        return self.due_at

    async def on_time(self) -> bool:
        self.log.append("on_time")
        self.due_at = None  # acted on
        return False

    async def handle(self, msg: Any) -> bool:
        self.log.append(msg)
        if msg == "m1":  # while handling it, something becomes due (a committed sleep's timer)
            self.due_at = self.deadline = trio.current_time()  # as ``Owner.due_at`` files it
            self.wheel.schedule(self, self.due_at)
            await trio.sleep(0.01)  # (a commit): the wheel fires meanwhile
        return bool(msg == "last")


@guest_test()
async def test_a_deadline_that_passes_while_messages_queue_goes_before_the_next_one() -> None:
    log: list[Any] = []
    wheel = Deadlines()
    role = Role(log, wheel)
    tx, rx = trio.open_memory_channel[Any](10)
    for msg in ("m1", "m2", "m3", "last"):
        tx.send_nowait(msg)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wheel.run)
        with trio.fail_after(5):
            await serve(role, rx, wheel, lambda: False)
        nursery.cancel_scope.cancel()
    # the wheel poked it while m1 was handled: it acts on time before m2, not after "last"
    assert [x for x in log if x != "poked"] == ["m1", "on_time", "m2", "m3", "last"]
    assert not role.due


@guest_test()
async def test_what_is_due_again_after_acting_goes_before_the_next_message_too() -> None:
    log: list[Any] = []
    wheel = Deadlines()
    role = Role(log, wheel)
    fired = 0

    async def on_time() -> bool:
        nonlocal fired
        fired += 1
        log.append("on_time")
        # the first round leaves something due at once (a later timer that came due meanwhile)
        role.due_at = trio.current_time() if fired == 1 else None
        return False

    role.on_time = on_time  # type: ignore[method-assign]
    role.due = True
    tx, rx = trio.open_memory_channel[Any](10)
    tx.send_nowait(Poke())
    tx.send_nowait("last")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wheel.run)
        with trio.fail_after(5):
            await serve(role, rx, wheel, lambda: False)
        nursery.cancel_scope.cancel()
    assert [type(x).__name__ if isinstance(x, Poke) else x for x in log if x != "poked"] == [
        "on_time",
        "on_time",
        "Poke",
        "last",
    ]


@guest_test()
async def test_the_wheel_does_not_keep_a_session_that_ended_in_memory() -> None:
    wheel = Deadlines()
    log: list[Any] = []
    role = Role(log, wheel)
    gone = weakref.ref(role)
    wheel.schedule(role, trio.current_time() + 0.01)  # e.g. a heartbeat filed while it ran
    del role  # the session passivated before its entry came due
    gc.collect()
    assert gone() is None
    other = Role(log, wheel)
    other.deadline = trio.current_time() + 0.02
    wheel.schedule(other, other.deadline)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wheel.run)
        with trio.fail_after(5):
            while not other.due:  # noqa: ASYNC110 (the wheel sets it)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert log == ["poked"]  # the live one was poked; the dead entry was skipped
    assert len(wheel) == 0
