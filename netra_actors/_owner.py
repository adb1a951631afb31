"""A user's session while this node owns it: its state, and how the core's plans are carried out.

The owner holds the session (the core's :class:`~._core._session.Session`: the live runs, the
queue, the idle clock), its sockets (:class:`~._feed.Feed`), its committer and the messages its
agents are streaming. A plan (``_core/_lifecycle.py``) is carried out in one order: stop the
running attempt if the plan says so, commit the plan's steps as one unit, and only then apply it
— spawn the next attempt, wait for a thread slot, or end the run (answer its waiters, let a
queued run's turn come). While the node drains, no attempt starts any more: each run is
handed over (``_lifecycle.on_handover``) at its attempt's next commit, or at the end of the
drain, and the next owner resumes it. The handlers (``_commands.py``, ``_agent_reports.py``) and
the supervisor (``_supervisor.py``) build on it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._children import slot_waiter, start_attempt
from ._commit import Committer
from ._core._lifecycle import Crash, Plan, Rollback, on_crash, on_handover
from ._core._session import Session
from ._deps import SupervisorDeps
from ._feed import Feed
from ._hold import Hold
from ._logs import log_store_error
from ._messages import Message, Poke
from ._runs import Run, stage_plan
from ._streams import OpenMessages
from ._uow import UnitOfWork

if TYPE_CHECKING:
    from ._context import InTask

log = logging.getLogger("netra_actors.supervisor")


class Owner:
    """The state of a user's session on the node that owns it (see the module docstring)."""

    following = False

    def __init__(
        self,
        deps: SupervisorDeps,
        user_id: str,
        mailbox: trio.MemoryReceiveChannel[Message],
        send: trio.MemorySendChannel[Message],
        feed: Feed,
        epoch: int | None,
    ) -> None:
        self.user_id = user_id
        self._deps = deps
        self._config = deps.config
        self._store = deps.store
        self._rx = mailbox
        self._tx = send
        self.session: Session[Run] = Session(deps.rules)
        self.feed = feed
        self.committer = Committer(deps, user_id, feed, epoch, self.session.threads)
        self.streams = self._new_streams()
        """The messages the user's agents are streaming."""
        self.nursery: trio.Nursery | None = None
        self.stopping = False
        """Drained: stop after this message (and release the lease)."""
        self.draining = False
        """The node drains: hand every run over at its next commit, start no attempt."""
        self.hold = Hold()
        """An agent task that does the supervisor's work while it is parked (a checkpoint)."""
        self.in_task: InTask | None = None
        """What an async agent's context calls to take a checkpoint or a beat in its own task
        (the supervisor's ``_checkpoint.InTask``; None: always by message)."""

    def _new_streams(self) -> OpenMessages:
        config = self._config
        return OpenMessages(max_open=config.max_open_messages, max_chars=config.max_message_chars)

    @property
    def runs(self) -> dict[str, Run]:
        return self.session.runs

    @property
    def subs(self) -> list[Any]:
        return self.feed.subs

    @property
    def head(self) -> int:
        return self.feed.head

    @property
    def epoch(self) -> int | None:
        return self.committer.epoch

    def quiet(self) -> bool:
        """No socket open, nobody waiting for a run, nothing in the mailbox (the core asks, to
        count as idle)."""
        return (
            not self.feed.active()
            and self._rx.statistics().current_buffer_used == 0
            and not any(run.waiters for run in self.session.runs.values())
        )

    def wake(self) -> None:
        """Wake the loop (a subscription closed, the deadline passed, or an agent left it work).
        Never blocks."""
        # Full: the loop is busy and looks again anyway. Closed: nobody is left to tell.
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self._tx.send_nowait(Poke())

    def trace(self, what: str, detail: Any = None) -> None:
        if self._deps.tracer is not None:
            self._deps.tracer(self.user_id, what, detail)

    # -- carrying out plans ----------------------------------------------------------------

    async def execute(self, run: Run, plan: Plan) -> None:
        """Carry out a plan whose unit the runtime owns (retried; see ``Committer``)."""
        if plan.stop_attempt:
            self.stop_attempt(run)
        if run.history_seq is None and (plan.spawn or plan.await_slot):
            # the conversation it reads: its thread as its turn (or its start time) came
            run.history_seq = self.head
        unit = UnitOfWork(self.user_id)
        stage_plan(unit, self.user_id, run, plan, run.result_json)
        await self.committer.commit_owned(unit)
        self.applied(run, plan)

    async def execute_all(self, plans: list[tuple[Run, Plan]]) -> None:
        """Carry out plans of distinct runs (due together) as one unit the runtime owns: one
        commit for all, then each is applied in order (its attempt spawned …)."""
        if len(plans) == 1:
            await self.execute(*plans[0])
            return
        unit = UnitOfWork(self.user_id)
        for run, plan in plans:
            if plan.stop_attempt:
                self.stop_attempt(run)
            stage_plan(unit, self.user_id, run, plan, run.result_json)
        await self.committer.commit_owned(unit)
        for run, plan in plans:
            self.applied(run, plan)

    async def crashed(self, run: Run, attempt: int, cause: Crash, error: str) -> bool:
        """The attempt crashed (or lost its commit): carry out the core's plan. False if the
        report is late (the attempt is over)."""
        plan = on_crash(
            run.life, attempt=attempt, cause=cause, error=error, now=trio.current_time()
        )
        if plan is None:
            return False
        log_store_error(log, self.user_id, run.run_id, attempt, run.agent, error)
        await self.execute(run, plan)
        return True

    def applied(self, run: Run, plan: Plan, release_slot: Callable[[], None] | None = None) -> None:
        """The plan's unit committed: the run is now ``plan.life``; act on it."""
        run.life = plan.life
        due = plan.life.next_deadline()
        if due is not None:  # a timer, a start time, a backoff …: due even while messages queue
            self.due_at(due)
        if self._deps.tracing is not None:
            self._deps.tracing.applied(self.user_id, run, plan)
        if self.draining and (plan.spawn or plan.await_slot):
            if release_slot is not None:
                release_slot()
            self.hand_over(run)  # no attempt starts on a draining node: the next owner's
            return
        counters = self._deps.counters
        for step in plan.steps:
            if isinstance(step, Rollback):
                counters.rollbacks += 1
                if step.will_restart:
                    counters.restarts += 1
                self.streams.end_run(run.run_id)  # its rollback retracted them
        if plan.life.state.is_terminal:
            self._finalize(run)
        elif plan.spawn:
            assert self.nursery is not None
            start_attempt(
                self.nursery, self._tx, self.user_id, run, self._deps, release_slot, self.in_task
            )
        elif plan.await_slot:
            assert self.nursery is not None
            run.child = trio.CancelScope()
            self.nursery.start_soon(
                slot_waiter, self._tx, self._deps.threads, run.run_id, run.child
            )

    def due_at(self, when: float) -> None:
        """Something is due at ``when`` (the supervisor has the timer wheel poke it then)."""

    def hand_over(self, run: Run) -> None:
        """The node drains: stop the run's attempt (committing nothing more); the next owner
        resumes the run."""
        plan = on_handover(run.life)
        if plan is not None:
            self.stop_attempt(run)
            run.life = plan.life
            self.streams.end_run(run.run_id)

    def drained(self) -> bool:
        """Draining, and no attempt runs here any more: the session may stop."""
        return self.draining and self.session.attempts() == 0

    def stop_attempt(self, run: Run) -> None:
        """Cancel the running attempt (or slot wait); what it staged is discarded with it."""
        if run.child is not None:
            run.child.cancel()
            run.child = None

    def _finalize(self, run: Run) -> None:
        self.stop_attempt(run)
        self.streams.end_run(run.run_id)
        run.close_inbox()
        self.session.ended(run.run_id)
        state = run.life.state.value
        counters = self._deps.counters
        counters.runs_ended[state] = counters.runs_ended.get(state, 0) + 1
        info = run.info(self.user_id)
        for reply in run.waiters:
            reply.set(info)
        self.trace("run_ended", (run.run_id, state))

    async def start_turns(self) -> None:
        """Start the queued runs whose turn came (every run live before them has ended)."""
        session = self.session
        if self.draining:
            session.turns_due = False
            return
        while (turn := session.next_turn(trio.current_time())) is not None:
            run, plan = turn
            await self.execute(run, plan)
