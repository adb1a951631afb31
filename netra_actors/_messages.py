"""The messages a user's supervisor accepts: the only way into a user's session.

Requests that want an answer carry a :class:`Reply`; the supervisor answers each exactly once
(with a value, or with an exception that the caller re-raises).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import trio

from ._exceptions import RuntimeClosedError
from ._uow import StagedEvent
from ._values import JSON

if TYPE_CHECKING:
    from ._subscription import Subscription

T = TypeVar("T")


class Reply(Generic[T]):
    """A one-shot answer from the supervisor to a waiting caller."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    @property
    def is_set(self) -> bool:
        return self._done.is_set()

    def set(self, value: T) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def wait(self) -> T:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


# -- commands from users (through the runtime API / the gateway) ---------------------------


@attrs.define(slots=True)
class StartRun:
    agent: str | None
    input: JSON
    user_text: str | None
    """For ``say``: the user's message, committed with the run's ``pending`` state."""
    reply: Reply[str]


@attrs.define(slots=True)
class CancelRun:
    run_id: str
    reply: Reply[None]


@attrs.define(slots=True)
class GetRuns:
    limit: int
    reply: Reply[Any]


@attrs.define(slots=True)
class SendToRun:
    run_id: str
    message: JSON
    reply: Reply[None]


@attrs.define(slots=True)
class WaitRun:
    run_id: str
    reply: Reply[Any]


@attrs.define(slots=True)
class Subscribe:
    subscription: Subscription
    resume_from: int | None
    reply: Reply[int]
    """Answered with the user's head seq at the moment of subscription."""


# -- from agent children -------------------------------------------------------------------


@attrs.define(slots=True)
class Heartbeat:
    """Agent → supervisor: this attempt is alive."""

    run_id: str
    attempt: int


@attrs.define(slots=True)
class Checkpoint:
    """Agent → supervisor: add the staged work to the run's unit and commit it now.

    Answered after the commit with the user's head ``seq``.
    """

    run_id: str
    attempt: int
    reply: Reply[int]
    events: list[StagedEvent] = attrs.field(factory=list)
    rows: list[tuple[Any, Any]] = attrs.field(factory=list)
    final_result: Any = None
    is_final: bool = False


@attrs.define(slots=True)
class AgentExited:
    """Agent child → supervisor: the attempt ended (``error`` is None for a normal exit)."""

    run_id: str
    attempt: int
    error: BaseException | None
    reason: str = "crash"
    """``crash`` for an exception in agent code, ``store_error`` when its commit failed."""


# -- from the supervisor's own timers ------------------------------------------------------


@attrs.define(slots=True)
class RestartDue:
    run_id: str
    attempt: int


@attrs.define(slots=True)
class SlotReady:
    """A threaded run got a thread slot (``borrower`` holds it) for attempt ``attempt``."""

    run_id: str
    attempt: int
    borrower: object


@attrs.define(slots=True)
class LivenessDue:
    run_id: str
    handled: trio.Event
    """Set once the supervisor has looked (the watchdog waits for it before checking again)."""


Message = (
    StartRun
    | CancelRun
    | GetRuns
    | SendToRun
    | WaitRun
    | Subscribe
    | Heartbeat
    | Checkpoint
    | AgentExited
    | RestartDue
    | LivenessDue
    | SlotReady
)


def fail_message(msg: object, error: BaseException | None = None) -> None:
    """Answer a message that will never be handled (its supervisor is gone)."""
    reply = getattr(msg, "reply", None)
    if isinstance(reply, Reply):
        reply.fail(error or RuntimeClosedError("the user's session stopped; try again"))
