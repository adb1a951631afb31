"""The messages a user's supervisor accepts: the only way into a user's session.

Requests that want an answer carry a :class:`Reply`; the supervisor answers each exactly once
(with a value, or with an exception that the caller re-raises).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import outcome
import trio

from ._exceptions import RuntimeClosedError
from ._journal_events import ModelStep
from ._values import JSON, Delta, StagedEvent

if TYPE_CHECKING:
    from ._subscription import Subscription

T = TypeVar("T")


class Reply(Generic[T]):
    """A one-shot answer from the supervisor to one waiting trio task.

    The waiter parks itself with ``wait_task_rescheduled`` and the answer reschedules it: no
    event object, no cancel scope. A waiter that is cancelled simply stops waiting; the answer
    is then dropped.
    """

    __slots__ = ("_outcome", "_task")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._outcome: outcome.Outcome[T] | None = None

    @property
    def is_set(self) -> bool:
        return self._outcome is not None

    def set(self, value: T) -> None:
        self._resolve(outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        self._resolve(outcome.Error(error))

    def _resolve(self, result: outcome.Outcome[T]) -> None:
        if self._outcome is not None:
            return
        self._outcome = result
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task, result)

    async def wait(self) -> T:
        result = self._outcome
        if result is not None:
            await trio.lowlevel.checkpoint()
            return result.unwrap()
        self._task = trio.lowlevel.current_task()

        def abort(_raise_cancel: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        value: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return value


# -- commands from users (through the runtime API / the gateway) ---------------------------


@attrs.define(slots=True)
class StartRun:
    agent: str | None
    input: JSON
    user_text: str | None
    """For ``say``: the user's message, committed with the run's ``pending`` state."""
    reply: Reply[str]
    if_busy: str | None = None
    """``parallel``, ``reject``, ``enqueue`` or ``interrupt`` (None: the runtime's default)."""
    message_meta: dict[str, JSON] | None = None
    """For ``say``: further fields of the user's ``message`` event (e.g. ``agui``)."""
    trace_context: dict[str, str] | None = None
    """The caller's W3C trace context (``traceparent``, ``tracestate``): the run span's parent."""
    thread: str | None = None
    """The run's thread (None: ``main``)."""
    message_id: str | None = None
    """For ``say``: the user's message id, chosen by the client (unique per user)."""
    earlier: tuple[tuple[str, str], ...] = ()
    """For ``say``: ``(message_id, text)`` of further user messages committed before it, in the
    same unit (AG-UI's messages the thread does not have yet)."""
    start_at: float | None = None
    """Start the run then (seconds since the epoch), not now: ``pending``, reason ``scheduled``."""


@attrs.define(slots=True)
class SendInput:
    run_id: str
    input: JSON
    reply: Reply[None]
    meta: str = ""
    """Further fields of the ``run_input``'s ``data``, as JSON object members (``""``: none)."""


@attrs.define(slots=True)
class CancelRun:
    run_id: str
    reply: Reply[None]


@attrs.define(slots=True)
class DeleteThread:
    """Erase a thread (``_erasure.py``). ``idle_before`` set: a retention batch — erase at most
    ``limit`` events, and only if the thread has no live run and no event since then."""

    thread: str
    reply: Reply[Any]
    idle_before: float | None = None
    limit: int | None = None


@attrs.define(slots=True)
class EraseUser:
    """Delete every row of the user (``_erasure.py``); its sockets close ``erased``."""

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


@attrs.define(slots=True)
class InboxCommand:
    """A command another node posted for this user (``item``: the store's inbox row)."""

    item: Any


@attrs.define(slots=True)
class Drain:
    """The node shuts down: hand the user over. Each attempt stops at its next commit (``final``:
    now, without committing its open unit); once none runs, the owner stops and releases the
    lease, and the next owner resumes the runs."""

    reply: Reply[None]
    final: bool = False


@attrs.define(slots=True)
class TryLease:
    """A follower's user has no live lease: try to take it (the owner is gone)."""


@attrs.define(slots=True)
class TookLease:
    """A follower's waiting command found the owner gone, and this node took the lease."""

    epoch: int


@attrs.define(slots=True)
class Poke:
    """Something changed outside the mailbox (a subscription closed): look at the state again."""


@attrs.define(slots=True)
class Relayed:
    """Cluster loop → follower: provisional text the user's owner (another node) relayed."""

    deltas: list[Delta]


# -- from agent children -------------------------------------------------------------------


@attrs.define(slots=True)
class Heartbeat:
    """Agent → supervisor: this attempt is alive."""

    run_id: str
    attempt: int


@attrs.define(slots=True)
class Checkpoint:
    """Agent → supervisor: commit the attempt's staged work now (as one unit).

    Answered after the commit with the user's head ``seq``. ``is_final``: the agent returned
    ``final_result``; the unit also records ``agent_completed`` and the run's completion.
    """

    run_id: str
    attempt: int
    reply: Reply[int]
    beat: bool = False
    """Also a heartbeat (the agent's last one is older than its beat interval)."""
    events: list[StagedEvent] = attrs.field(factory=list)
    rows: list[tuple[Any, Any]] = attrs.field(factory=list)
    final_result: Any = None
    is_final: bool = False
    closes: tuple[str, ...] = ()
    """Open messages this unit commits (their provisional text ends here)."""
    model: ModelStep | None = None
    """A model call this unit commits (kept beside the events, and in the run's journal)."""


@attrs.define(slots=True)
class Write:
    """Agent → supervisor: provisional text of an open message (sent to sockets at once)."""

    run_id: str
    attempt: int
    message_id: str
    text: str


@attrs.define(slots=True)
class Ask:
    """Agent → supervisor: the next input of the run (``input_requested`` if none is waiting),
    after committing what the attempt staged before it."""

    run_id: str
    attempt: int
    data_json: str
    """The ``input_requested`` payload (prompt, optional schema), encoded."""
    reply: Reply[Any]
    events: list[StagedEvent] = attrs.field(factory=list)
    rows: list[tuple[Any, Any]] = attrs.field(factory=list)
    """What the attempt staged before asking: committed first, with the question if one is
    asked (in the same unit), on its own if the answer was recorded already."""
    replayed: bool = False
    """The journal has this question: it is not committed again."""
    cut_at: int | None = None
    """The attempt replays and the journal does not have this question: if it must be
    committed, it is a divergence at this position of the journal."""
    hold: bool = False
    """A message is streaming (its provisional text lives in the attempt): the attempt waits
    for the answer in memory instead of stopping."""


@attrs.define(slots=True)
class Sleep:
    """Agent → supervisor: the attempt sleeps durably until ``until`` (seconds since the epoch);
    ``events`` (its ``sleeping`` event, unless replayed) commit with the wait."""

    run_id: str
    attempt: int
    until: float
    events: list[StagedEvent]
    rows: list[tuple[Any, Any]]
    reply: Reply[Any]


@attrs.define(slots=True)
class AgentExited:
    """Agent child → supervisor: the attempt raised ``error``."""

    run_id: str
    attempt: int
    error: BaseException
    reason: str = "crash"
    """``crash`` for an exception in agent code, ``error`` for ``RunFailedError``."""


@attrs.define(slots=True)
class SlotReady:
    """A threaded run got a thread slot, held by ``borrower`` until ``release()``."""

    run_id: str
    borrower: object
    release: Callable[[], None]
    """Frees the slot: called by whoever ends up not using it."""


Message = (
    StartRun
    | CancelRun
    | DeleteThread
    | EraseUser
    | GetRuns
    | SendToRun
    | SendInput
    | WaitRun
    | Subscribe
    | Poke
    | Relayed
    | TookLease
    | TryLease
    | InboxCommand
    | Drain
    | Heartbeat
    | Checkpoint
    | Write
    | Ask
    | Sleep
    | AgentExited
    | SlotReady
)


def fail_message(msg: object, error: BaseException | None = None) -> None:
    """Answer a message that will never be handled (its supervisor is gone)."""
    reply = getattr(msg, "reply", None)
    if isinstance(reply, Reply):
        reply.fail(error or RuntimeClosedError("the user's session stopped; try again"))
    if isinstance(msg, SlotReady):
        msg.release()
