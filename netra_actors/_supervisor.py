"""The per-user supervisor: the owner role of a user's session, from activation to its end.

One trio task per active user. Activation loads the user and recovers the runs a stopped
process left live (the core decides how: ``_core/_recovery.py``; a run that goes on gets its
journal back from the store, ``_journal_events.rebuild``); then the shared mailbox loop
(``_mailbox.py``) hands it one message at a time, and every change to the user's session happens
in that order (invariant 1). It dispatches each message to its handler (``_commands.py`` for the
user's commands, ``_agent_reports.py`` for its agents), acts on the runs that are due when its one
deadline passes, and lets queued runs start when their turn came. It ends when idle (the runtime
removed it; its runs may still wait as rows), drained (no attempt runs any more), or fenced
(another node took the user over: this node follows now).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import trio

from . import _agent_reports as agents
from . import _commands as commands
from . import _erasure as erasure
from ._agent import Agent
from ._checkpoint import InTask
from ._commit import Lost, SessionFailed
from ._core._lifecycle import Wait
from ._core._recovery import StoredRun, recover
from ._deps import SupervisorDeps
from ._exceptions import RuntimeClosedError, StoreError
from ._feed import Feed
from ._journal_events import History, rebuild
from ._mailbox import serve
from ._messages import (
    AgentExited,
    Ask,
    CancelRun,
    Checkpoint,
    DeleteThread,
    Drain,
    EraseUser,
    GetRuns,
    Heartbeat,
    InboxCommand,
    Message,
    Poke,
    SendInput,
    SendToRun,
    Sleep,
    SlotReady,
    StartRun,
    Subscribe,
    TookLease,
    TryLease,
    WaitRun,
    Write,
    fail_message,
)
from ._owner import Owner
from ._runs import Run, stage_plan
from ._uow import UnitOfWork
from ._values import RunInfo

log = logging.getLogger("netra_actors.supervisor")

_DURABLE = frozenset(w.value for w in Wait if w.durable)


def _stopped(exc: BaseException) -> BaseException:
    """What the sender of a message the session will never handle is told, ``exc`` ending it."""
    if isinstance(exc, SessionFailed):
        return exc.error
    if isinstance(exc, Lost):
        return RuntimeClosedError("the user's session moved to another node; try again")
    return RuntimeClosedError("the user's session stopped; try again")


class UserSupervisor(Owner):
    """The supervisor of one user: its owner, while this node holds the user's lease.

    Created and run by the runtime (which runs a :class:`~netra_actors._follower.UserFollower`
    instead while another node owns the user); reached only via its mailbox.
    """

    def __init__(
        self,
        deps: SupervisorDeps,
        user_id: str,
        mailbox: trio.MemoryReceiveChannel[Message],
        send: trio.MemorySendChannel[Message],
        *,
        epoch: int | None = None,
        feed: Feed | None = None,
        first: Message | None = None,
    ) -> None:
        super().__init__(deps, user_id, mailbox, send, feed or Feed(), epoch)
        self.in_task = InTask(self)
        self._first = first
        self.deadline: float | None = None
        """The session's one deadline, as computed when it last waited (see ``_deadlines``)."""
        self.wake_at = math.inf
        """When the timer wheel will poke it (``inf``: never)."""
        self.due = False
        """The timer wheel found its deadline passed (see ``_mailbox.serve``)."""

    # -- life cycle ------------------------------------------------------------------------

    async def run(self, *, on_idle: Callable[[], bool]) -> bool:
        """Activate (load + recover), then handle messages until passivated or fenced.

        ``on_idle`` is called when the user has been idle for ``idle_timeout``; it returns True
        if the runtime removed this supervisor from its registry (then the supervisor stops and
        releases the lease). Returns False if another node took the user over (this node must
        follow now), True otherwise.
        """
        lost = False
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self._activate()
                await serve(self, self._rx, self._deps.deadlines, on_idle)
                nursery.cancel_scope.cancel()
            self.trace("passivated", self.feed.head)
        except* Lost:  # raised inside the nursery: it arrives in an exception group
            lost = True
        if lost:
            self._lost()
            return False
        epoch = self.committer.epoch
        if epoch is not None:
            assert self._deps.leases is not None
            with trio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await self._deps.leases.release(self.user_id, epoch)
        return True

    def _lost(self) -> None:
        """Another node owns the user now: its runs are not ours; end our part, commit nothing."""
        log.warning("user %r: another node took over the session (lease lost)", self.user_id)
        self._fail_waiters(
            RuntimeClosedError("the user's session moved to another node; try again")
        )
        self.session.runs.clear()
        self.streams = self._new_streams()

    def abandon(self, reason: str) -> None:
        """The supervisor has stopped (``reason``): answer everyone still waiting on it."""
        error = RuntimeClosedError(f"the user's session stopped ({reason}); try again")
        for run in self.session.runs.values():
            for reply in run.waiters:
                reply.fail(error)
            if run.question is not None:
                run.question.fail(error)
            run.waiters.clear()
        self.feed.close(reason)

    def _fail_waiters(self, error: BaseException) -> None:
        for run in self.session.runs.values():
            for reply in run.waiters:
                reply.fail(error)
            if run.question is not None:
                run.question.fail(error)

    # -- activation ------------------------------------------------------------------------

    async def _activate(self) -> None:
        snapshot = await self._store.load_user(self.user_id)
        feed = self.feed
        handed, feed.head = feed.head, snapshot.head_seq
        if handed > feed.head:  # the user was erased since a follower gave its sockets a seq
            feed.erased(feed.head)
        elif 0 <= handed < feed.head:  # subscriptions a follower handed over
            await feed.catch_up(self._store, self.user_id, handed, page=self._config.replay_page)
        await self._recover(snapshot.live_runs)
        self.trace("activated", feed.head)
        if self._first is not None:
            first, self._first = self._first, None
            await self.handle(first)

    async def _recover(self, live: tuple[RunInfo, ...]) -> None:
        """Carry out the core's recovery of the runs a stopped process left live (one unit)."""
        if not live:
            return
        config = self._config
        classes = {info.run_id: self._deps.agents.get(info.agent) for info in live}
        histories: dict[str, History] = {}
        for info in live:
            if info.attempt > 0:  # it ran: what it committed is replayed, its restarts count
                histories[info.run_id] = await self._history(info.run_id)
        now, wall = trio.current_time(), time.time()
        stored = []
        for info in live:
            cls = classes[info.run_id] or Agent  # unknown here: the run cannot go on, it ends
            history = histories.get(info.run_id)
            restarts = () if history is None else tuple(now - (wall - t) for t in history.restarts)
            stored.append(
                StoredRun(
                    run_id=info.run_id,
                    state=info.state,
                    attempt=info.attempt,
                    queued=info.reason == "queued",
                    runnable=classes[info.run_id] is not None,
                    threaded=cls.threaded,
                    restart=cls.restart_policy or config.restart,
                    liveness=cls.liveness or config.liveness,
                    wait=Wait(info.wait) if info.wait in _DURABLE else Wait.NONE,
                    wake_at=None if info.wake_at is None else now + (info.wake_at - wall),
                    restarts=restarts,
                )
            )
        recoveries = recover(stored, now=now)
        unit = UnitOfWork(self.user_id)
        runs = []
        for info, rec in zip(live, recoveries, strict=True):
            cls = classes[info.run_id] or Agent
            run = Run.from_store(
                info,
                cls,
                rec.life,
                mailbox=config.agent_mailbox_size,
                history=histories.get(info.run_id),
            )
            self.session.add(run, rec.blockers)
            stage_plan(unit, self.user_id, run, rec.plan, run.result_json)
            runs.append(run)
        log.info("user %r: took over %d live run(s)", self.user_id, len(live))
        if unit:
            await self.committer.commit_owned(unit)
        for run, rec in zip(runs, recoveries, strict=True):
            self.applied(run, rec.plan)
        self.session.turns_due = True

    async def _history(self, run_id: str) -> History:
        """What the run's committed events (and model calls) say, read from the store."""
        events, calls = await self._store.run_history(self.user_id, run_id)
        return rebuild(events, calls)

    # -- the mailbox loop's role -----------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.session.next_deadline(trio.current_time(), self)

    async def on_time(self) -> bool:
        """The deadline passed: act on every run that is due. True if idle long enough."""
        hold = self.hold
        if hold.held or hold.deferred is not None:
            await hold.settle()
        now = trio.current_time()
        plans = self.session.ticks(now)
        if plans:  # everything due now in one unit: timers due together wake together
            await self.execute_all(plans)
        idle = self.session.may_passivate(now, self)
        if self.session.turns_due:
            await self.start_turns()
            return False
        return idle

    async def handle(self, msg: Message) -> bool:
        """Dispatch one message to its handler. True if the supervisor stops now (drained)."""
        hold = self.hold
        if hold.held or hold.deferred is not None:  # an agent did our work: it comes first
            try:
                await hold.settle()
            except BaseException as exc:  # the session ends there: ``msg`` is never handled
                fail_message(msg, _stopped(exc))
                raise
        match msg:
            case Checkpoint():
                await agents.checkpoint(self, msg)
            case Write():
                agents.write(self, msg)
            case Ask():
                await agents.ask(self, msg)
            case Sleep():
                await agents.sleep(self, msg)
            case Heartbeat():
                agents.heartbeat(self, msg)
            case StartRun():
                await commands.answer(msg.reply, commands.start_run(self, msg))
            case CancelRun():
                await commands.answer(msg.reply, commands.cancel_run(self, msg))
            case DeleteThread():
                await commands.answer(msg.reply, erasure.delete_thread(self, msg))
            case EraseUser():
                await commands.answer(msg.reply, erasure.erase_user(self, msg))
            case GetRuns():
                await commands.answer(msg.reply, commands.get_runs(self, msg))
            case SendToRun():
                await commands.answer(msg.reply, commands.send_to_run(self, msg))
            case SendInput():
                await commands.answer(msg.reply, commands.send_input(self, msg))
            case WaitRun():
                await commands.wait_run(self, msg)
            case Subscribe():
                commands.subscribe(self, msg, self.wake)
            case AgentExited():
                await agents.exited(self, msg)
            case SlotReady():
                await agents.slot_ready(self, msg)
            case InboxCommand():
                await commands.on_inbox(self, msg.item)
            case Drain():
                await commands.answer(msg.reply, commands.drain(self, msg.final))
            case Poke() | TookLease() | TryLease():
                pass  # the loop looks at the state again
        if self.drained():
            self.stopping = True
        if self.stopping:
            return True
        if self.session.turns_due:
            await self.start_turns()
        return False

    # -- the cluster loop and the timer wheel (never block) --------------------------------

    def due_at(self, when: float) -> None:
        """Something is due at ``when``: the timer wheel pokes the loop then, and the loop acts
        on it before its next message (a run's timer does not wait until the mailbox is empty:
        the runs woken before it may keep it busy with their commits)."""
        if self.deadline is None or when < self.deadline:
            self.deadline = when
        self._deps.deadlines.schedule(self, when)

    def take_over(self) -> None:
        """(The cluster loop asks followers only.)"""

    def went_back(self, head: int) -> None:
        """(The cluster loop asks followers only: an owner erases its user itself.)"""

    def relayed(self, deltas: list[Any]) -> None:
        """(Relayed text goes to followers only: the owner streams its own.)"""

    def relay_unsure(self) -> None:
        """(Relayed text goes to followers only.)"""

    def inbox(self, item: Any) -> bool:
        """The cluster loop: a command another node posted for this user (never blocks)."""
        try:
            self._tx.send_nowait(InboxCommand(item))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # busy or gone: the item stays in the inbox, offered again later
        return True
