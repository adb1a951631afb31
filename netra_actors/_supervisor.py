"""The per-user supervisor: the only owner of a user's runs, unit of work and socket mailboxes.

One trio task per active user. It takes messages from its bounded mailbox one at a time, and every
change to the user's session happens in that order (invariant 1). For each cause (a command, an
agent's checkpoint or crash, a deadline) it asks the pure life cycle (``_core/_lifecycle.py``) for
a plan, records the plan's steps in one unit of work, commits it, and only then applies it:

* seqs are assigned at commit, one unit at a time, so they are gapless (3);
* committed events go to the user's subscriptions only after the commit returned (2);
* a crash, cancellation, timeout or death commits exactly one ``run_rolled_back`` (4), restarts
  follow the run's policy (5), and every transition is checked against the table (6).

Time: the supervisor has one deadline, the earliest of its runs' (deadline, heartbeat, restart
due) and, when idle with no socket, its passivation. It waits for its next message until then;
with no run and a socket open it waits with no timer at all.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._agent import Agent, AgentRegistry
from ._children import ThreadCounters, slot_waiter, start_attempt
from ._cluster import Cluster, error_payload
from ._config import IF_BUSY, RuntimeConfig
from ._core import RunState
from ._core import _lifecycle as life_cycle
from ._core._lifecycle import Crash, Plan, Rollback, Wait
from ._deadlines import Deadlines
from ._exceptions import (
    AgentError,
    BusyError,
    CommandError,
    IllegalStateError,
    IllegalTransitionError,
    LeaseLostError,
    MailboxFullError,
    ResumeBeyondHeadError,
    RunFencedError,
    RuntimeClosedError,
    StoreError,
    SubscriptionClosedError,
    TooLargeError,
    UnknownAgentError,
    UnknownRunError,
)
from ._follower import message_of
from ._histogram import Histogram
from ._ids import new_message_id, new_run_id
from ._messages import (
    AgentExited,
    Ask,
    CancelRun,
    Checkpoint,
    Drain,
    GetRuns,
    Heartbeat,
    InboxCommand,
    Message,
    Poke,
    Reply,
    SendInput,
    SendToRun,
    SlotReady,
    StartRun,
    Subscribe,
    TookLease,
    TryLease,
    WaitRun,
    Write,
)
from ._resilience import Resilience
from ._runs import TAKES_INPUT, Run, RunsSnapshot, stage_plan
from ._streams import OpenMessages
from ._uow import UnitOfWork
from ._values import JSON, Event, RunInfo, dumps, loads

if TYPE_CHECKING:
    from ._store import ClusterStore, Store
    from ._subscription import Subscription

log = logging.getLogger("netra_actors.supervisor")


class SessionFailed(Exception):
    """A unit the runtime owns could not be committed: the supervisor must stop.

    Its memory may now differ from the store, so it crashes (the runtime logs it and closes its
    subscriptions with ``session_failed``); the next activation rebuilds the user from the store.
    """

    def __init__(self, error: StoreError) -> None:
        super().__init__(f"the store keeps failing: {error}")
        self.error = error


@attrs.define
class Counters:
    """Process-wide counters the supervisors add to (read by metrics and statistics)."""

    runs_started: int = 0
    restarts: int = 0
    rollbacks: int = 0
    events_delivered: int = 0
    runs_ended: dict[str, int] = attrs.field(factory=dict)
    threads: ThreadCounters = attrs.field(factory=ThreadCounters)
    fenced: int = 0
    """Units this node could not commit because another node took the user over."""
    follow_lag: Histogram = attrs.field(factory=Histogram)
    """From a commit on another node to its hand-off to a follower's sockets here."""
    commit_to_mailbox: Histogram = attrs.field(factory=Histogram)
    """Delay from an event's commit to its hand-off to the socket mailboxes."""


@attrs.frozen(kw_only=True)
class SupervisorDeps:
    """What every supervisor shares with the runtime."""

    config: RuntimeConfig
    store: Store
    agents: AgentRegistry
    counters: Counters
    threads: trio.CapacityLimiter
    """Caps the threads of threaded agents across all users."""
    deadlines: Deadlines
    """The timer wheel that wakes supervisors at their deadline."""
    resilience: Resilience
    """Retry and circuit-breaker state of every dependency (one per runtime)."""
    cluster: Cluster
    """Requests to other nodes, the inbox and following (see ``_cluster.py``)."""
    leases: ClusterStore | None = None
    """The store, when it holds leases (the SQL store): then several nodes may share it."""
    tracer: Callable[[str, str, Any], None] | None = None
    """Test hook: called as ``tracer(user_id, what, detail)`` at key points."""


class _Lost(Exception):
    """Internal: a fenced commit: this node no longer owns the user (unwinds to ``run``)."""


class UserSupervisor:
    """The supervisor of one user: its owner, while this node holds the user's lease.

    Created and run by the runtime (which also runs a :class:`~netra_actors._follower.
    UserFollower` while another node owns the user); reached only via its mailbox.
    """

    following = False

    def __init__(
        self,
        deps: SupervisorDeps,
        user_id: str,
        mailbox: trio.MemoryReceiveChannel[Message],
        send: trio.MemorySendChannel[Message],
        *,
        epoch: int | None = None,
        subs: list[Subscription] | None = None,
        head: int | None = None,
        first: Message | None = None,
    ) -> None:
        self.user_id = user_id
        self._deps = deps
        self._config = deps.config
        self._store = deps.store
        self._rx = mailbox
        self._tx = send
        self.epoch = epoch
        """The lease epoch every unit is committed under (None: unfenced)."""
        self._handed_head = head
        self._first = first
        self._consuming: Any = None
        self._stopping = False
        """Drained: stop after this message (and release the lease)."""
        """The inbox item being handled: its deletion rides the command's first unit."""
        self.head = 0
        self.runs: dict[str, Run] = {}
        self.subs: list[Subscription] = subs if subs is not None else []
        self._nursery: trio.Nursery | None = None
        self._idle_since: float | None = None
        self._streams = OpenMessages(
            max_open=deps.config.max_open_messages, max_chars=deps.config.max_message_chars
        )
        """The messages the user's agents are streaming."""
        self._dequeue = False
        """A run ended: a queued run may start."""
        self.deadline: float | None = None
        """The supervisor's one deadline, as computed when it last waited (see ``_deadlines``)."""
        self.wake_at = math.inf
        """When the timer wheel will poke it (``inf``: never)."""

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
            await self._serve(on_idle)
        except* _Lost:  # raised inside the nursery: it arrives in an exception group
            lost = True
        if lost:
            self._lost()
            return False
        if self.epoch is not None:
            assert self._deps.leases is not None
            with trio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await self._deps.leases.release(self.user_id, self.epoch)
        return True

    def _lost(self) -> None:
        """Another node owns the user now: its runs are not ours; end our part, commit nothing."""
        log.warning("user %r: another node took over the session (lease lost)", self.user_id)
        error = RuntimeClosedError("the user's session moved to another node; try again")
        for run in self.runs.values():
            for reply in run.waiters:
                reply.fail(error)
            if run.asking is not None:
                run.asking.fail(error)
        self.runs.clear()
        self._streams = OpenMessages(
            max_open=self._config.max_open_messages, max_chars=self._config.max_message_chars
        )

    async def _serve(self, on_idle: Callable[[], bool]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            snapshot = await self._store.load_user(self.user_id)
            self.head = snapshot.head_seq
            if self._handed_head is not None and self._handed_head < self.head:
                await self._catch_up(self._handed_head)  # subscriptions a follower handed over
            await self._recover(snapshot.live_runs)
            self._trace("activated", self.head)
            if self._first is not None:
                first, self._first = self._first, None
                await self._handle(first)
            rx = self._rx
            wheel = self._deps.deadlines
            burst = 0
            while True:
                try:
                    msg = rx.receive_nowait()
                except trio.WouldBlock:
                    burst = 0
                    deadline = self.deadline = self._next_deadline()
                    if deadline is not None:
                        if deadline <= trio.current_time():
                            idle = await self._on_time()
                            if self._dequeue:
                                await self._start_queued()
                            elif idle and on_idle():
                                break
                            continue
                        wheel.schedule(self, deadline)  # it pokes us then (see wake)
                    msg = await rx.receive()
                else:
                    burst += 1
                    if burst >= 64:  # stay fair to other tasks under a burst
                        burst = 0
                        await trio.lowlevel.checkpoint()
                if type(msg) is not Poke:  # activity: the idle clock starts again
                    self._idle_since = None
                await self._handle(msg)
                if self._stopping:
                    break
                if self._dequeue:
                    await self._start_queued()
            nursery.cancel_scope.cancel()
        self._trace("passivated", self.head)

    async def _catch_up(self, after: int) -> None:
        """Hand the subscriptions the committed events after ``after`` up to ``head``."""
        while after < self.head:
            events = await self._store.replay(self.user_id, after, self._config.replay_page)
            events = [e for e in events if e.seq <= self.head]
            if not events:
                return
            self.subs = [s for s in self.subs if s._offer(events)]
            after = events[-1].seq

    def _next_deadline(self) -> float | None:
        """The earliest moment something is due without a message (None: nothing ever is)."""
        times = [t for run in self.runs.values() if (t := run.life.next_deadline()) is not None]
        if self._is_idle():
            if self._idle_since is None:
                self._idle_since = trio.current_time()
            times.append(self._idle_since + self._config.idle_timeout)
        return min(times) if times else None

    async def _on_time(self) -> bool:
        """The deadline passed: act on every run that is due. True if idle long enough to stop."""
        now = trio.current_time()
        for run in list(self.runs.values()):
            due = run.life.next_deadline()
            if due is not None and due <= now:
                plan = life_cycle.on_tick(run.life, now=now)
                if plan is not None:
                    await self._execute(run, plan)
        return (
            self._idle_since is not None
            and now >= self._idle_since + self._config.idle_timeout
            and self._is_idle()
        )

    def abandon(self, reason: str) -> None:
        """The supervisor has stopped (``reason``): answer everyone still waiting on it."""
        error = RuntimeClosedError(f"the user's session stopped ({reason}); try again")
        for run in self.runs.values():
            for reply in run.waiters:
                reply.fail(error)
            run.waiters.clear()
        for sub in self.subs:
            sub._close(SubscriptionClosedError(reason))

    def _is_idle(self) -> bool:
        if not self.runs:
            self.subs = [s for s in self.subs if not s.closed]
        return not self.runs and not self.subs and self._rx.statistics().current_buffer_used == 0

    def _trace(self, what: str, detail: Any = None) -> None:
        if self._deps.tracer is not None:
            self._deps.tracer(self.user_id, what, detail)

    # -- dispatch --------------------------------------------------------------------------

    async def _handle(self, msg: Message) -> None:
        match msg:
            case Checkpoint():
                await self._on_checkpoint(msg)
            case Write():
                self._on_write(msg)
            case Ask():
                await self._on_ask(msg)
            case Heartbeat():
                run = self._running(msg.run_id, msg.attempt)
                if run is not None:  # late beats of an attempt that is over are ignored
                    run.life = run.life.beat(trio.current_time())
            case StartRun():
                await self._answer(msg.reply, self._on_start_run(msg))
            case CancelRun():
                await self._answer(msg.reply, self._on_cancel_run(msg))
            case GetRuns():
                await self._answer(msg.reply, self._on_get_runs(msg))
            case SendToRun():
                await self._answer(msg.reply, self._on_send_to_run(msg))
            case SendInput():
                await self._answer(msg.reply, self._on_send_input(msg))
            case WaitRun():
                await self._on_wait_run(msg)
            case Subscribe():
                self._on_subscribe(msg)
            case AgentExited():
                await self._on_agent_exited(msg)
            case SlotReady():
                await self._on_slot_ready(msg)
            case InboxCommand():
                await self._on_inbox(msg.item)
            case Drain():
                await self._answer(msg.reply, self._on_drain())
            case Poke() | TookLease() | TryLease():
                pass  # the loop looks at the state again

    async def _answer(self, reply: Reply[Any], coro: Any) -> None:
        """Run a command handler; answer its reply with the result or the command error."""
        try:
            result = await coro
        except _Lost:
            reply.fail(RuntimeClosedError("the user's session moved to another node; try again"))
            raise
        except (CommandError, StoreError) as exc:
            reply.fail(exc)  # a StoreError here: the command's own unit failed, nothing changed
        except SessionFailed as exc:
            reply.fail(exc.error)
            raise  # memory may differ from the store now: crash, and rebuild from the store
        except BaseException as exc:
            reply.fail(exc)
            raise
        else:
            reply.set(result)

    # -- committing ------------------------------------------------------------------------

    async def _commit(self, unit: UnitOfWork) -> None:
        """Commit one unit, then deliver its events (raises StoreError if it did not commit).

        The unit commits only while this node holds the user's lease (``epoch``): a fenced
        unit raises ``_Lost``, which ends this supervisor's ownership.
        """
        item = self._consuming
        if item is not None:  # the inbox command is consumed with its first effect
            unit.inbox_done.append(item.id)
        try:
            if self.epoch is None:  # unfenced (a store without leases)
                events = await self._store.commit(self.user_id, self.head, unit)
            else:
                assert self._deps.leases is not None
                events = await self._deps.leases.commit(
                    self.user_id, self.head, unit, epoch=self.epoch
                )
        except LeaseLostError as exc:
            self._deps.counters.fenced += 1
            raise _Lost() from exc
        if item is not None:
            self._consuming = None
        self._trace("committed", events)
        if events:
            self.head = events[-1].seq
            self._deliver(events)

    async def _commit_owned(self, unit: UnitOfWork) -> None:
        """Commit a unit the runtime owns (rollback notices, state changes), retrying.

        If the store keeps failing, the supervisor crashes: its runs stay live in the store and
        the next activation ends them ``dead`` with a rollback event.
        """
        retries = self._config.store_retries
        for attempt in range(1, retries + 1):
            try:
                await self._commit(unit)
                return
            except LeaseLostError:
                raise  # (never reached: _commit raises _Lost)
            except StoreError as exc:
                if attempt == retries:
                    raise SessionFailed(exc) from exc
                log.warning(
                    "user %r: commit failed (%s), retry %d/%d", self.user_id, exc, attempt, retries
                )
                await trio.sleep(0.05 * 2**attempt)

    def _deliver(self, events: list[Event]) -> None:
        counters = self._deps.counters
        keep = []
        for sub in self.subs:
            if sub._offer(events):
                keep.append(sub)
                counters.events_delivered += len(events)
        self.subs = keep
        counters.commit_to_mailbox.observe(max(0.0, time.time() - events[-1].ts))

    # -- plans -----------------------------------------------------------------------------

    async def _execute(self, run: Run, plan: Plan) -> None:
        """Carry out a plan whose unit the runtime owns (retried; see ``_commit_owned``)."""
        if plan.stop_attempt:
            self._stop_attempt(run)
        unit = UnitOfWork(self.user_id)
        stage_plan(unit, self.user_id, run, plan, run.result_json)
        await self._commit_owned(unit)
        self._applied(run, plan)

    def _applied(
        self, run: Run, plan: Plan, release_slot: Callable[[], None] | None = None
    ) -> None:
        """The plan's unit committed: the run is now ``plan.life``; act on it."""
        run.life = plan.life
        counters = self._deps.counters
        for step in plan.steps:
            if isinstance(step, Rollback):
                counters.rollbacks += 1
                if step.will_restart:
                    counters.restarts += 1
                self._streams.end_run(run.run_id)  # its rollback retracted them
        if plan.life.state.is_terminal:
            self._finalize(run)
        elif plan.spawn:
            self._spawn(run, release_slot)
        elif plan.await_slot:
            assert self._nursery is not None
            run.child = trio.CancelScope()
            self._nursery.start_soon(
                slot_waiter, self._tx, self._deps.threads, run.run_id, run.child
            )

    # -- children --------------------------------------------------------------------------

    def _spawn(self, run: Run, release_slot: Callable[[], None] | None = None) -> None:
        """Start attempt ``run.life.attempt``: a trio task, or a pykka actor when threaded."""
        assert self._nursery is not None
        start_attempt(self._nursery, self._tx, self.user_id, run, self._deps, release_slot)

    def _stop_attempt(self, run: Run) -> None:
        """Cancel the running attempt (or slot wait); what it staged is discarded with it."""
        if run.child is not None:
            run.child.cancel()
            run.child = None

    def _finalize(self, run: Run) -> None:
        self._stop_attempt(run)
        self._streams.end_run(run.run_id)
        run.inbox_tx.close()
        for other in self.runs.values():
            if other.blockers is not None:
                other.blockers.discard(run.run_id)
                self._dequeue = True
        state = run.life.state.value
        counters = self._deps.counters
        counters.runs_ended[state] = counters.runs_ended.get(state, 0) + 1
        info = run.info(self.user_id)
        for reply in run.waiters:
            reply.set(info)
        del self.runs[run.run_id]
        self._trace("run_ended", (run.run_id, state))

    def _running(self, run_id: str, attempt: int) -> Run | None:
        """The run, if ``attempt`` is its running attempt (else the sender is fenced off)."""
        run = self.runs.get(run_id)
        if run is None or run.life.running_attempt != attempt:
            return None
        return run

    # -- handlers: agents ------------------------------------------------------------------

    async def _on_checkpoint(self, msg: Checkpoint) -> None:
        run = self._running(msg.run_id, msg.attempt)
        if run is None:
            msg.reply.fail(RunFencedError("this attempt of the run is over"))
            return
        if msg.beat:
            run.life = run.life.beat(trio.current_time())
        unit = UnitOfWork(self.user_id, msg.events)
        for row, params in msg.rows:
            unit.stage(row, params)
        plan: Plan | None = None
        result_json = None
        if msg.is_final:
            plan = life_cycle.on_finish(run.life, attempt=msg.attempt)
            assert plan is not None  # the attempt is the running one: checked above
            result_json = dumps(msg.final_result)
            unit.emit_encoded(run.run_id, "agent_completed", f'{{"result":{result_json}}}')
            stage_plan(unit, self.user_id, run, plan, result_json)
        if not unit:
            if msg.journal is not None:
                run.journal.record(msg.journal)
            msg.reply.set(self.head)
            return
        try:
            await self._commit(unit)
        except StoreError as exc:
            msg.reply.fail(exc)
            await self._crashed(run, msg.attempt, Crash.STORE_ERROR, str(exc))
            return
        if msg.journal is not None:  # committed: a restarted attempt may rely on it
            run.journal.record(msg.journal)
        msg.reply.set(self.head)
        self._streams.committed(msg.closes)  # the committed message supersedes its deltas
        if plan is not None:
            run.result_json = result_json
            run.child = None  # the attempt finished: its task is returning, let it
            self._applied(run, plan)

    def _on_write(self, msg: Write) -> None:
        """Provisional text of an open message: to the sockets that take deltas, now."""
        if self._running(msg.run_id, msg.attempt) is None:
            return  # a late write of an attempt that is over
        leases = self._deps.leases
        if (
            self.epoch is not None
            and leases
            and time.monotonic() > leases.lease_valid_until(self.user_id)
        ):
            return  # past our own lease deadline: another node may own the user by now
        delta = self._streams.write(msg.run_id, msg.attempt, msg.message_id, msg.text)
        if delta is not None:
            for sub in self.subs:
                if sub.deltas:
                    sub._offer_delta(delta)

    async def _on_ask(self, msg: Ask) -> None:
        run = self._running(msg.run_id, msg.attempt)
        if run is None:
            msg.reply.fail(RunFencedError("this attempt of the run is over"))
            return
        run.life = run.life.beat(trio.current_time())
        if run.consumed < len(run.inputs):  # answered already (or a restart): no new question
            run.consumed += 1
            msg.reply.set(loads(run.inputs[run.consumed - 1]))
            return
        if run.asking is not None:
            msg.reply.fail(AgentError("this attempt is already waiting for an input"))
            return
        unit = UnitOfWork(self.user_id)
        unit.emit_encoded(run.run_id, "input_requested", msg.data_json)
        try:
            await self._commit(unit)
        except StoreError as exc:
            msg.reply.fail(exc)
            await self._crashed(run, msg.attempt, Crash.STORE_ERROR, str(exc))
            return
        run.asking = msg.reply

    async def _crashed(self, run: Run, attempt: int, cause: Crash, error: str) -> None:
        plan = life_cycle.on_crash(
            run.life, attempt=attempt, cause=cause, error=error, now=trio.current_time()
        )
        if plan is not None:
            await self._execute(run, plan)

    async def _on_agent_exited(self, msg: AgentExited) -> None:
        run = self.runs.get(msg.run_id)
        if run is None:
            return
        error = f"{type(msg.error).__name__}: {msg.error}"
        plan = life_cycle.on_crash(
            run.life,
            attempt=msg.attempt,
            cause=Crash(msg.reason),
            error=error,
            now=trio.current_time(),
        )
        if plan is None:
            return  # a late report of an attempt that is already over
        log.info(
            "user %r run %s attempt %d crashed: %s", self.user_id, run.run_id, msg.attempt, error
        )
        await self._execute(run, plan)

    async def _on_slot_ready(self, msg: SlotReady) -> None:
        run = self.runs.get(msg.run_id)
        plan = None if run is None else life_cycle.on_slot(run.life, now=trio.current_time())
        if run is None or plan is None:
            msg.release()
            return
        run.child = None
        unit = UnitOfWork(self.user_id)
        stage_plan(unit, self.user_id, run, plan, run.result_json)
        try:
            await self._commit_owned(unit)
        except BaseException:
            msg.release()
            raise
        self._applied(run, plan, msg.release)

    # -- handlers: commands ----------------------------------------------------------------

    async def _on_start_run(self, msg: StartRun) -> str:
        config = self._config
        agents = self._deps.agents
        name = msg.agent if msg.agent is not None else agents.default
        cls = agents.get(name) if name is not None else None
        if cls is None:
            raise UnknownAgentError(f"no agent named {name!r}")
        input_json = self._encode_input(msg.input)
        policy = config.if_busy if msg.if_busy is None else msg.if_busy
        if policy not in IF_BUSY:
            raise CommandError(f"if_busy must be one of {', '.join(IF_BUSY)}")
        if len(self.runs) >= config.max_live_runs_per_user:
            raise MailboxFullError(
                f"this user already has {len(self.runs)} live runs; wait for one to end"
            )
        live = list(self.runs.values())
        if live and policy == "reject":
            raise BusyError(f"this user has {len(live)} live run(s) (if_busy is reject)")
        if live and policy == "interrupt":
            for other in live:  # a completing run is left to finish
                if other.life.state is not RunState.COMPLETING and other.run_id in self.runs:
                    await self._execute(
                        other, life_cycle.on_cancel(other.life, error="interrupted")
                    )
        queued = bool(live) and policy == "enqueue"
        plan = life_cycle.begin(
            now=trio.current_time(),
            threaded=cls.threaded,
            restart=cls.restart_policy or config.restart,
            liveness=cls.liveness or config.liveness,
            queued=queued,
        )
        inbox_tx, inbox_rx = trio.open_memory_channel[JSON](config.agent_mailbox_size)
        run = Run(
            run_id=new_run_id(),
            agent=cls.name,
            agent_cls=cls,
            life=plan.life,
            input_json=input_json,
            created_at=time.time(),
            inbox_tx=inbox_tx,
            inbox_rx=inbox_rx,
        )
        if queued:
            run.blockers = {other.run_id for other in live}
        unit = UnitOfWork(self.user_id)
        if msg.user_text is not None:
            message: dict[str, JSON] = dict(msg.message_meta or {})
            message.update(role="user", text=msg.user_text, message_id=new_message_id())
            unit.emit(run.run_id, "message", message)
        stage_plan(unit, self.user_id, run, plan, None)
        self.runs[run.run_id] = run
        try:
            await self._commit(unit)
        except BaseException:
            del self.runs[run.run_id]
            raise
        self._deps.counters.runs_started += 1
        self._applied(run, plan)
        return run.run_id

    async def _start_queued(self) -> None:
        """Start the queued runs whose turn came (every run live before them has ended)."""
        self._dequeue = False
        for run in list(self.runs.values()):
            if run.blockers is not None and not run.blockers:
                run.blockers = None
                plan = life_cycle.on_dequeue(run.life, now=trio.current_time())
                if plan is not None:
                    await self._execute(run, plan)

    async def _ended_run(self, run_id: str) -> RunInfo:
        """A run that is not live: its stored snapshot, or UnknownRunError."""
        info = await self._store.get_run(self.user_id, run_id)
        if info is None:
            raise UnknownRunError("no such run")
        return info

    async def _on_cancel_run(self, msg: CancelRun) -> None:
        run = self.runs.get(msg.run_id)
        if run is None:
            info = await self._ended_run(msg.run_id)
            raise IllegalStateError(f"the run already ended ({info.state.value})")
        try:
            plan = life_cycle.on_cancel(run.life)
        except IllegalTransitionError:
            raise IllegalStateError(f"the run is {run.life.state.value}") from None
        await self._execute(run, plan)

    async def _on_get_runs(self, msg: GetRuns) -> RunsSnapshot:
        runs = await self._store.list_runs(self.user_id, msg.limit)
        return RunsSnapshot(head_seq=self.head, runs=tuple(runs))

    async def _on_send_to_run(self, msg: SendToRun) -> None:
        run = self.runs.get(msg.run_id)
        if run is None:
            await self._ended_run(msg.run_id)
            raise IllegalStateError("the run already ended")
        try:
            run.inbox_tx.send_nowait(msg.message)
        except trio.WouldBlock:
            raise MailboxFullError("the run's inbox is full") from None

    async def _on_send_input(self, msg: SendInput) -> None:
        run = self.runs.get(msg.run_id)
        if run is None:
            await self._ended_run(msg.run_id)
            raise IllegalStateError("the run already ended")
        if run.life.state not in TAKES_INPUT:
            raise IllegalStateError(f"the run is {run.life.state.value}")
        input_json = self._encode_input(msg.input)
        if len(run.inputs) >= self._config.max_inputs_per_run:
            raise MailboxFullError(f"the run already has {len(run.inputs)} inputs")
        unit = UnitOfWork(self.user_id)
        unit.emit_encoded(run.run_id, "run_input", f'{{"input":{input_json}}}')
        await self._commit(unit)
        run.inputs.append(input_json)
        if run.asking is not None:  # the running attempt waits for it
            reply, run.asking = run.asking, None
            run.consumed += 1
            reply.set(loads(input_json))

    def _encode_input(self, value: JSON) -> str:
        try:
            encoded = dumps(value)
        except TypeError:
            raise CommandError("input must be a JSON value") from None
        limit = self._config.max_event_bytes
        if len(encoded) > limit:
            raise TooLargeError(f"input is {len(encoded)} bytes of JSON; the limit is {limit}")
        return encoded

    async def _on_wait_run(self, msg: WaitRun) -> None:
        run = self.runs.get(msg.run_id)
        if run is not None:
            if len(run.waiters) >= self._config.max_waiters_per_run:
                msg.reply.fail(MailboxFullError("too many callers are waiting for this run"))
            else:
                run.waiters.append(msg.reply)
            return
        await self._answer(msg.reply, self._ended_run(msg.run_id))

    def _on_subscribe(self, msg: Subscribe) -> None:
        if msg.resume_from is not None and msg.resume_from > self.head:
            msg.reply.fail(
                ResumeBeyondHeadError(
                    f"resume_from {msg.resume_from} is greater than head_seq {self.head}"
                )
            )
            return
        sub = msg.subscription
        sub._registered(self.head, self._poke)
        self.subs.append(sub)
        if sub.deltas:  # messages still streaming: all their text so far, at offset 0
            for delta in self._streams.snapshot():
                sub._offer_delta(delta)
        msg.reply.set(self.head)

    async def _on_drain(self) -> None:
        """A planned shutdown: end what is still live ``dead`` (one unit), then stop."""
        unit = UnitOfWork(self.user_id)
        plans = []
        for run in list(self.runs.values()):
            plan = life_cycle.on_shutdown(run.life)
            if plan is not None:
                self._stop_attempt(run)
                stage_plan(unit, self.user_id, run, plan, run.result_json)
                plans.append((run, plan))
        if unit:
            await self._commit_owned(unit)
        for run, plan in plans:
            self._applied(run, plan)
        self._stopping = True

    def take_over(self) -> None:
        """(The cluster loop asks followers only.)"""

    def inbox(self, item: Any) -> bool:
        """The cluster loop: a command another node posted for this user (never blocks)."""
        try:
            self._tx.send_nowait(InboxCommand(item))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # busy or gone: the item stays in the inbox, offered again later
        return True

    async def _on_inbox(self, item: Any) -> None:
        """Carry out a command from another node; answer it through the store."""
        ok, payload = True, "{}"
        self._consuming = item
        try:
            msg = message_of(item.kind, loads(item.payload))
            match msg:
                case StartRun():
                    payload = dumps({"run_id": await self._on_start_run(msg)})
                case CancelRun():
                    await self._on_cancel_run(msg)
                case SendInput():
                    await self._on_send_input(msg)
                case SendToRun():
                    await self._on_send_to_run(msg)
        except CommandError as exc:
            ok, payload = False, error_payload(exc)
        except StoreError as exc:
            ok, payload = False, error_payload(CommandError(f"the store failed: {exc}"))
        unit = UnitOfWork(self.user_id)  # the answer (and the deletion, if nothing committed)
        unit.replies.append((item.request_id, self.user_id, ok, payload))
        await self._commit_owned(unit)
        self._consuming = None

    def wake(self) -> None:
        """The timer wheel: the deadline passed."""
        self._poke()

    def _poke(self) -> None:
        """Wake the loop (a subscription closed, or the deadline passed). Never blocks."""
        # Full: the loop is busy and looks again anyway. Closed: nobody is left to tell.
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self._tx.send_nowait(Poke())

    # -- activation ------------------------------------------------------------------------

    async def _recover(self, live: tuple[RunInfo, ...]) -> None:
        """End the runs a stopped process left live: ``completing`` → completed, others → dead."""
        if not live:
            return
        config = self._config
        now = trio.current_time()
        unit = UnitOfWork(self.user_id)
        plans: list[tuple[Run, Plan]] = []
        for info in live:
            known = self._deps.agents.get(info.agent)
            cls = known or Agent  # unknown here: the run cannot go on, it ends
            life = life_cycle.recovered(
                info.state,
                info.attempt,
                threaded=cls.threaded,
                queued=info.reason == "queued",
                restart=cls.restart_policy or config.restart,
                liveness=cls.liveness or config.liveness,
                now=now,
            )
            run = Run.from_store(info, cls, life, mailbox=config.agent_mailbox_size)
            plan = life_cycle.on_recover(life, now=now, runnable=known is not None)
            if plan.life.wait is Wait.QUEUE:  # queued runs keep their order
                run.blockers = {r.run_id for r, p in plans if not p.life.state.is_terminal}
            self.runs[run.run_id] = run
            stage_plan(unit, self.user_id, run, plan, run.result_json)
            plans.append((run, plan))
        log.info(
            "user %r: recovered %d run(s) left live by a stopped process", self.user_id, len(live)
        )
        if unit:
            await self._commit_owned(unit)
        for run, plan in plans:
            self._applied(run, plan)
        self._dequeue = True
