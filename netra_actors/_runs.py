"""A live run as its owner holds it, and how a plan's steps become a unit of work.

A :class:`Run` is the core's record of a live run (:class:`~._core._session.LiveRun`: its
:class:`~._core._lifecycle.RunLife`, queue place and inputs) with the handles only the shell
holds (its agent class, inbox, running attempt, waiters, its journal). The run's life-cycle
state is its ``life`` and nothing else: the run row the store keeps is derived from it whenever a
unit is staged (a durable wait included: ``wait``, ``wake_at``).

Two of its handles are made only when they are used, since most runs never use them: its
inbox (a trio channel, made when the first message is sent to the run or an attempt first
receives), and the items of its journal (the units its attempts committed are kept as they
are and folded into journal items when the journal is read: by a new attempt, a question).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import attrs
import trio

from ._agent import AgentBase
from ._conversation import ConversationMessage
from ._core import Transition
from ._core._journal import Item, Journal
from ._core._lifecycle import AgentStarted, Plan, Rollback, RunLife, Wait
from ._core._session import LiveRun
from ._journal_events import History, fold_unit
from ._messages import Reply
from ._tracing import RunSpans
from ._uow import RunRow, UnitOfWork
from ._values import JSON, RunInfo, StagedEvent, dumps, loads


@attrs.frozen(kw_only=True)
class RunsSnapshot:
    """The answer to ``get_runs``: the user's head ``seq`` and recent runs, newest first."""

    head_seq: int
    runs: tuple[RunInfo, ...]


@attrs.define(eq=False, kw_only=True)
class Run(LiveRun):
    """A live run: the core's record of it, and the handles the shell holds."""

    agent: str
    agent_cls: type[AgentBase]
    input_json: str | None
    created_at: float
    inbox_size: int
    """How many messages its inbox holds (``RuntimeConfig.agent_mailbox_size``)."""
    result_json: str | None = None
    start_seq: int | None = None
    """The ``seq`` of the run's first event."""
    history_seq: int | None = None
    """The last ``seq`` of its thread the run's conversation may include (``_conversation.py``):
    the head when its first attempt was admitted (None: a queued run whose turn has not come)."""
    conversation: tuple[ConversationMessage, ...] | None = None
    """The thread's conversation up to the run's start, once an attempt read it: every later
    attempt gets the same (``_conversation.py``)."""
    child: trio.CancelScope | None = None
    """The running attempt's (or the slot wait's) cancel scope."""
    waiters: list[Reply[RunInfo]] = attrs.field(factory=list)
    _journal: Journal = attrs.field(factory=Journal)
    _unfolded: list[tuple[Sequence[StagedEvent], Item | None]] = attrs.field(factory=list)
    """Units committed since the journal was last read, not yet folded into it, in order."""
    _inbox: tuple[trio.MemorySendChannel[JSON], trio.MemoryReceiveChannel[JSON]] | None = None
    _inbox_closed: bool = False
    wake_wall: float | None = None
    """When its timer or scheduled start is due, in seconds since the epoch (the row's)."""
    question: Reply[JSON] | None = None
    """The running attempt's ``ctx.ask`` asked while a message streams: it waits in memory."""
    spans: RunSpans | None = None
    """Its open OpenTelemetry spans (tracing on only)."""

    @property
    def journal(self) -> Journal:
        """Everything the run's attempts committed, in order (what a new attempt replays): kept
        from the units that committed, or rebuilt from the store (``_journal_events.py``)."""
        if self._unfolded:
            units, self._unfolded = self._unfolded, []
            for events, model in units:
                fold_unit(self._journal, events, model)
        return self._journal

    @journal.setter
    def journal(self, journal: Journal) -> None:
        self._journal = journal
        self._unfolded = []

    def fold_later(self, events: Sequence[StagedEvent], model: Item | None) -> None:
        """A unit of the run committed (``events``, and the model call it carried): it goes
        into the journal when the journal is next read (the same as :func:`fold_unit` now).
        ``events`` is the unit's own list: nothing changes it once committed."""
        self._unfolded.append((events, model))

    def inbox_sender(self) -> trio.MemorySendChannel[JSON]:
        """Where messages sent to the run go (made on first use)."""
        return self._open_inbox()[0]

    def inbox_receiver(self) -> trio.MemoryReceiveChannel[JSON]:
        """Where its attempts receive the run's messages (made on first use: a run that was
        never sent anything and never received holds no channel)."""
        return self._open_inbox()[1]

    def close_inbox(self) -> None:
        """The run ended: its inbox takes no more messages (a receiver gets ``EndOfChannel``
        once it has taken what was sent before)."""
        self._inbox_closed = True
        if self._inbox is not None:
            self._inbox[0].close()

    def _open_inbox(
        self,
    ) -> tuple[trio.MemorySendChannel[JSON], trio.MemoryReceiveChannel[JSON]]:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = trio.open_memory_channel[JSON](self.inbox_size)
            if self._inbox_closed:
                inbox[0].close()
        return inbox

    @classmethod
    def from_store(
        cls,
        info: RunInfo,
        agent_cls: type[AgentBase],
        life: RunLife,
        *,
        mailbox: int,
        history: History | None = None,
    ) -> Run:
        """A run read back from the store (to recover it on activation), with what its
        committed events say (its journal, its inputs)."""
        run = cls(
            run_id=info.run_id,
            agent=info.agent,
            agent_cls=agent_cls,
            life=life,
            input_json=None if info.input is None else dumps(info.input),
            created_at=info.created_at,
            inbox_size=mailbox,
            result_json=None if info.result is None else dumps(info.result),
            thread=info.thread,
            start_seq=info.start_seq,
            history_seq=info.history_seq,
            wake_wall=info.wake_at,
        )
        if history is not None:
            run.journal = history.journal
            run.inputs = list(history.inputs)
        return run

    def row(self, user_id: str, life: RunLife, result_json: str | None) -> RunRow:
        """The run's row as it is once ``life`` is committed."""
        return RunRow(
            user_id=user_id,
            run_id=self.run_id,
            agent=self.agent,
            state=life.state.value,
            attempt=life.attempt,
            input_json=self.input_json,
            result_json=result_json,
            reason=life.reason or _WAIT_REASONS.get(life.wait),
            created_at=self.created_at,
            updated_at=time.time(),
            thread=self.thread,
            start_seq=self.start_seq,
            history_seq=self.history_seq,
            wait=life.wait.value if life.wait.durable else None,
            wake_at=self.wake_wall if life.wait in (Wait.TIMER, Wait.SCHEDULED) else None,
        )

    def info(self, user_id: str) -> RunInfo:
        """A snapshot of the run now."""
        life = self.life
        return RunInfo(
            user_id=user_id,
            run_id=self.run_id,
            agent=self.agent,
            state=life.state,
            attempt=life.attempt,
            created_at=self.created_at,
            updated_at=time.time(),
            reason=life.reason or _WAIT_REASONS.get(life.wait),
            input=None if self.input_json is None else loads(self.input_json),
            result=None if self.result_json is None else loads(self.result_json),
            thread=self.thread,
            start_seq=self.start_seq,
            history_seq=self.history_seq,
            wait=life.wait.value if life.wait.durable else None,
            wake_at=self.wake_wall if life.wait in (Wait.TIMER, Wait.SCHEDULED) else None,
        )


_WAIT_REASONS = {Wait.QUEUE: "queued", Wait.SCHEDULED: "scheduled"}
"""The ``reason`` a live run's row gives while it waits so (before it started)."""


def stage_plan(
    unit: UnitOfWork, user_id: str, run: Run, plan: Plan, result_json: str | None
) -> None:
    """Record a plan's steps, and the run row they lead to, in ``unit``."""
    run_id = run.run_id
    for step in plan.steps:
        if isinstance(step, Transition):
            unit.emit_encoded(run_id, "run_state", _state_json(step))
        elif isinstance(step, Rollback):
            unit.emit(
                run_id,
                "run_rolled_back",
                {
                    "reason": step.reason,
                    "error": step.error[:500],
                    "attempt": step.attempt,
                    "will_restart": step.will_restart,
                },
            )
        elif isinstance(step, AgentStarted):
            unit.emit(run_id, "agent_started", {"agent": run.agent, "attempt": step.attempt})
    unit.put_run(run.row(user_id, plan.life, result_json))


@functools.lru_cache(maxsize=256)
def _state_json(t: Transition) -> str:
    """The ``run_state`` payload of a transition (a handful of distinct ones: cached)."""
    data: dict[str, JSON] = {
        "state": t.state.value,
        "previous": t.previous.value if t.previous else None,
    }
    if t.reason is not None:
        data["reason"] = t.reason
    return dumps(data)
