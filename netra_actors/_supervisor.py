"""The per-user supervisor: the only owner of a user's runs, unit of work and socket mailboxes.

One trio task per active user. It takes messages from its bounded mailbox one at a time, and every
change to the user's session happens in that order (invariant 1). It:

* stages what agents emit in each run's open unit of work, and commits units through the store —
  one unit at a time, so ``seq`` is gapless and the state machines equal the store (3, 6);
* hands committed events to the user's subscriptions only after the commit returned (2);
* owns its agent children (one per live run) and restarts them per policy, committing exactly one
  ``run_rolled_back`` for every crash, cancellation, timeout or death (4, 5);
* passivates itself when the user has no socket, no live run and has been idle.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._agent import Agent, AgentBase, AgentContext, AgentRegistry
from ._config import RuntimeConfig
from ._core import (
    Decision,
    Escalate,
    ExecutionStateMachine,
    Liveness,
    Restart,
    RestartTracker,
    RunState,
    Transition,
    Verdict,
    check_transition,
    initial_transition,
)
from ._exceptions import (
    CommandError,
    IllegalStateError,
    MailboxFullError,
    ResumeBeyondHeadError,
    RunFailedError,
    RunFencedError,
    RuntimeClosedError,
    StoreError,
    SubscriptionClosedError,
    TooLargeError,
    UnknownAgentError,
    UnknownRunError,
)
from ._histogram import Histogram
from ._messages import (
    AgentExited,
    CancelRun,
    Checkpoint,
    GetRuns,
    Heartbeat,
    LivenessDue,
    Message,
    RestartDue,
    SendToRun,
    SlotReady,
    StartRun,
    Subscribe,
    WaitRun,
)
from ._threaded import ThreadedAgent, run_threaded_attempt
from ._uow import RunRow, UnitOfWork
from ._values import JSON, Event, RunInfo, dumps, loads

if TYPE_CHECKING:
    from ._store import Store
    from ._subscription import Subscription

log = logging.getLogger("netra_actors.supervisor")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_run_id() -> str:
    """A new run id: ``r_`` and a ULID (time-ordered, 26 characters)."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_CROCKFORD[rem])
    return "r_" + "".join(reversed(chars))


class SessionFailed(Exception):
    """A unit the runtime owns could not be committed: the supervisor must stop.

    Its memory may now differ from the store, so it crashes (the runtime logs it and closes its
    subscriptions with ``session_failed``); the next activation rebuilds the user from the store.
    """

    def __init__(self, error: StoreError) -> None:
        super().__init__(f"the store keeps failing: {error}")
        self.error = error


@attrs.frozen(kw_only=True)
class RunsSnapshot:
    """The answer to ``get_runs``: the user's head ``seq`` and recent runs, newest first."""

    head_seq: int
    runs: tuple[RunInfo, ...]


@attrs.define
class Counters:
    """Process-wide counters the supervisors add to (read by metrics and statistics)."""

    runs_started: int = 0
    threads_live: int = 0
    """Threads of threaded agents that have not ended yet (abandoned ones included)."""
    threads_abandoned: int = 0
    """Threads still running code for an attempt that is over."""
    threads_abandoned_total: int = 0
    restarts: int = 0
    rollbacks: int = 0
    events_delivered: int = 0
    runs_ended: dict[str, int] = attrs.field(factory=dict)
    commit_to_mailbox: Histogram = attrs.field(factory=Histogram)
    """Delay from an event's commit to its hand-off to the socket mailboxes."""


@attrs.define(eq=False)
class _Run:
    """A live run, as its supervisor holds it."""

    run_id: str
    agent_cls: type[AgentBase]
    machine: ExecutionStateMachine
    row: RunRow
    tracker: RestartTracker
    liveness: Liveness
    inbox_tx: trio.MemorySendChannel[JSON]
    inbox_rx: trio.MemoryReceiveChannel[JSON]
    unit: UnitOfWork
    scope: trio.CancelScope | None = None
    """The running attempt's cancel scope; None while no attempt runs."""
    slot_wait: trio.CancelScope | None = None
    """A threaded run waiting for a free thread (see ``_await_slot``)."""
    watchdog: trio.CancelScope | None = None
    waiters: list[Any] = attrs.field(factory=list)

    @property
    def attempt(self) -> int:
        return self.row.attempt


@attrs.frozen(kw_only=True)
class SupervisorDeps:
    """What every supervisor shares with the runtime."""

    config: RuntimeConfig
    store: Store
    agents: AgentRegistry
    counters: Counters
    threads: trio.CapacityLimiter
    """Caps the threads of threaded agents across all users."""
    tracer: Callable[[str, str, Any], None] | None = None
    """Test hook: called as ``tracer(user_id, what, detail)`` at key points."""


class UserSupervisor:
    """The supervisor of one user. Created and run by the runtime; reached only via its mailbox."""

    def __init__(
        self,
        deps: SupervisorDeps,
        user_id: str,
        mailbox: trio.MemoryReceiveChannel[Message],
        send: trio.MemorySendChannel[Message],
    ) -> None:
        self.user_id = user_id
        self._deps = deps
        self._config = deps.config
        self._store = deps.store
        self._rx = mailbox
        self._tx = send
        self.head = 0
        self.runs: dict[str, _Run] = {}
        self.subs: list[Subscription] = []
        self._nursery: trio.Nursery | None = None

    # -- life cycle ------------------------------------------------------------------------

    async def run(self, *, on_idle: Callable[[], bool]) -> None:
        """Activate (load + recover), then handle messages until passivated.

        ``on_idle`` is called when the user is idle; it returns True if the runtime removed this
        supervisor from its registry (then the supervisor stops).
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            snapshot = await self._store.load_user(self.user_id)
            self.head = snapshot.head_seq
            await self._recover(snapshot.live_runs)
            self._trace("activated", self.head)
            idle_timeout = self._config.idle_timeout
            handled_since_yield = 0
            while True:
                msg: Message | None = None
                try:
                    msg = self._rx.receive_nowait()
                except trio.WouldBlock:
                    handled_since_yield = 0
                    with trio.move_on_after(idle_timeout):  # only when there is nothing to do
                        msg = await self._rx.receive()
                    if msg is None:
                        if self._is_idle() and on_idle():
                            break
                        continue
                else:
                    handled_since_yield += 1
                    if handled_since_yield >= 64:  # stay fair to other tasks under a burst
                        handled_since_yield = 0
                        await trio.lowlevel.checkpoint()
                await self._handle(msg)
            nursery.cancel_scope.cancel()
        self._trace("passivated", self.head)

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
        self.subs = [s for s in self.subs if not s.closed]
        return not self.runs and not self.subs and self._rx.statistics().current_buffer_used == 0

    def _trace(self, what: str, detail: Any = None) -> None:
        if self._deps.tracer is not None:
            self._deps.tracer(self.user_id, what, detail)

    # -- dispatch --------------------------------------------------------------------------

    async def _handle(self, msg: Message) -> None:
        match msg:
            case Heartbeat():
                self._on_heartbeat(msg)
            case Checkpoint():
                await self._on_checkpoint(msg)
            case StartRun():
                await self._answer(msg, self._on_start_run(msg))
            case CancelRun():
                await self._answer(msg, self._on_cancel_run(msg))
            case GetRuns():
                await self._answer(msg, self._on_get_runs(msg))
            case SendToRun():
                await self._answer(msg, self._on_send_to_run(msg))
            case WaitRun():
                await self._on_wait_run(msg)
            case Subscribe():
                self._on_subscribe(msg)
            case AgentExited():
                await self._on_agent_exited(msg)
            case RestartDue():
                await self._on_restart_due(msg)
            case LivenessDue():
                await self._on_liveness_due(msg)
            case SlotReady():
                await self._on_slot_ready(msg)

    async def _answer(self, msg: Any, coro: Any) -> None:
        """Run a command handler; answer its reply with the result or the command error."""
        try:
            result = await coro
        except CommandError as exc:
            msg.reply.fail(exc)
        except SessionFailed as exc:
            msg.reply.fail(exc.error)
            raise  # memory may differ from the store now: crash, and rebuild from the store
        except StoreError as exc:
            msg.reply.fail(exc)  # the command's own unit failed: nothing changed
        except BaseException as exc:
            msg.reply.fail(exc)
            raise
        else:
            msg.reply.set(result)

    # -- committing ------------------------------------------------------------------------

    async def _commit(self, unit: UnitOfWork) -> list[Event]:
        """Commit one unit; on success apply its transitions, then deliver its events."""
        events = await self._store.commit(self.user_id, self.head, unit)
        self._trace("committed", events)
        self._after_commit(unit, events)
        return events

    async def _commit_runtime(self, unit: UnitOfWork) -> list[Event]:
        """Commit a unit the runtime owns (rollback notices, state changes), retrying.

        If the store keeps failing, the supervisor crashes: its runs stay live in the store and
        the next activation ends them ``dead`` with a rollback event.
        """
        retries = self._config.store_retries
        for attempt in range(1, retries + 1):
            try:
                return await self._commit(unit)
            except StoreError as exc:
                if attempt == retries:
                    raise SessionFailed(exc) from exc
                log.warning(
                    "user %r: commit failed (%s), retry %d/%d", self.user_id, exc, attempt, retries
                )
                await trio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    def _after_commit(self, unit: UnitOfWork, events: list[Event]) -> None:
        for run_id, t in unit.transitions:
            run = self.runs[run_id]
            if t.previous is not None:
                run.machine.apply(t)
        for run_id, row in unit.runs.items():
            self.runs[run_id].row = row
        if events:
            self.head = events[-1].seq
            self._deliver(events)
        for run_id, _t in unit.transitions:
            ended = self.runs.get(run_id)
            if ended is not None and ended.machine.state.is_terminal:
                self._finalize(ended)

    def _deliver(self, events: list[Event]) -> None:
        counters = self._deps.counters
        now = time.time()
        keep = []
        for sub in self.subs:
            if sub._offer(events):
                keep.append(sub)
                counters.events_delivered += len(events)
        self.subs = keep
        counters.commit_to_mailbox.observe(max(0.0, now - events[-1].ts))

    # -- staging helpers -------------------------------------------------------------------

    def _stage_transition(
        self,
        unit: UnitOfWork,
        run: _Run,
        target: RunState,
        *,
        reason: str | None = None,
        extra: dict[str, JSON] | None = None,
        row_changes: dict[str, Any] | None = None,
    ) -> None:
        current = next(
            (t.state for rid, t in reversed(unit.transitions) if rid == run.run_id),
            run.machine.state,
        )
        check_transition(current, target)
        row = unit.runs.get(run.run_id, run.row)
        if row_changes:
            row = attrs.evolve(row, **row_changes)
        unit.record_transition(
            row, Transition(previous=current, state=target, reason=reason), extra
        )

    def _stage_rollback(
        self, unit: UnitOfWork, run: _Run, reason: str, error: str, *, will_restart: bool
    ) -> None:
        unit.emit(
            run.run_id,
            "run_rolled_back",
            {
                "reason": reason,
                "error": error[:500],
                "attempt": run.attempt,
                "will_restart": will_restart,
            },
        )
        self._deps.counters.rollbacks += 1

    def _stage_start(self, unit: UnitOfWork, run: _Run, attempt: int) -> None:
        """Stage ``[starting,] agent_started, running`` for attempt number ``attempt``."""
        current = next(
            (t.state for rid, t in reversed(unit.transitions) if rid == run.run_id),
            run.machine.state,
        )
        if current is RunState.PENDING:
            self._stage_transition(unit, run, RunState.STARTING)
        unit.emit(run.run_id, "agent_started", {"agent": run.row.agent, "attempt": attempt})
        self._stage_transition(unit, run, RunState.RUNNING, row_changes={"attempt": attempt})

    # -- children --------------------------------------------------------------------------

    def _spawn(self, run: _Run, borrower: object | None = None) -> None:
        """Start the next attempt's child: a trio task, or a pykka actor for threaded agents."""
        assert self._nursery is not None
        run.scope = trio.CancelScope()
        run.liveness = run.liveness.restarted(trio.current_time())
        ctx = AgentContext(
            user_id=self.user_id,
            run_id=run.run_id,
            agent=run.row.agent,
            attempt=run.attempt,
            supervisor=self._tx,
            inbox=run.inbox_rx,
            max_staged=self._config.max_staged_events,
            max_event_bytes=self._config.max_event_bytes,
            beat_every=_beat_every(run.liveness.policy.heartbeat_timeout),
        )
        input_value = None if run.row.input_json is None else loads(run.row.input_json)
        if issubclass(run.agent_cls, ThreadedAgent):
            self._nursery.start_soon(
                self._threaded_child, run.agent_cls, ctx, input_value, run.scope, borrower
            )
        else:
            assert issubclass(run.agent_cls, Agent)
            self._nursery.start_soon(self._agent_child, run.agent_cls, ctx, input_value, run.scope)

    def _start_watchdog(self, run: _Run) -> None:
        assert self._nursery is not None
        run.watchdog = trio.CancelScope()
        self._nursery.start_soon(self._watchdog, run, run.watchdog)

    async def _agent_child(
        self, cls: type[Agent], ctx: AgentContext, input_value: JSON, scope: trio.CancelScope
    ) -> None:
        error: BaseException | None = None
        with scope:
            try:
                result = await cls().run(ctx, input_value)
                await ctx._finish(result)
                return
            except RunFencedError:
                return
            except StoreError:
                return  # the supervisor saw the failed commit and handles it
            except Exception as exc:
                error = exc
        if scope.cancelled_caught or error is None:
            return
        await self._report_crash(ctx, error)

    async def _report_crash(self, ctx: AgentContext, error: BaseException) -> None:
        reason = "error" if isinstance(error, RunFailedError) else "crash"
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._tx.send(AgentExited(ctx.run_id, ctx.attempt, error, reason))

    async def _threaded_child(
        self,
        cls: type[ThreadedAgent],
        ctx: AgentContext,
        input_value: JSON,
        scope: trio.CancelScope,
        borrower: object | None,
    ) -> None:
        counters = self._deps.counters
        limiter = self._deps.threads

        def thread_ended(attempt: Any) -> None:
            counters.threads_live -= 1
            if attempt.abandoned:
                counters.threads_abandoned -= 1
            if borrower is not None:
                limiter.release_on_behalf_of(borrower)

        def abandoned(attempt: Any) -> None:
            counters.threads_abandoned += 1
            counters.threads_abandoned_total += 1
            log.warning(
                "user %r run %s attempt %d: its thread ignores cancellation; abandoned "
                "(its late output is discarded)",
                self.user_id,
                ctx.run_id,
                ctx.attempt,
            )

        async def crashed(error: BaseException) -> None:
            await self._report_crash(ctx, error)

        counters.threads_live += 1
        await run_threaded_attempt(
            cls,
            ctx,
            input_value,
            scope,
            on_thread_end=thread_ended,
            on_abandon=abandoned,
            on_crash=crashed,
        )

    def _await_slot(self, run: _Run, attempt: int) -> None:
        """A threaded run waits (``pending`` or ``starting``) for a free thread."""
        assert self._nursery is not None
        run.slot_wait = trio.CancelScope()
        self._nursery.start_soon(self._slot_waiter, run.run_id, attempt, run.slot_wait)

    async def _slot_waiter(self, run_id: str, attempt: int, scope: trio.CancelScope) -> None:
        limiter = self._deps.threads
        borrower = object()
        with scope:
            await limiter.acquire_on_behalf_of(borrower)
            try:
                await self._tx.send(SlotReady(run_id, attempt, borrower))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                limiter.release_on_behalf_of(borrower)  # the supervisor is gone
            except BaseException:
                limiter.release_on_behalf_of(borrower)
                raise

    async def _on_slot_ready(self, msg: SlotReady) -> None:
        run = self.runs.get(msg.run_id)
        expected = RunState.PENDING if msg.attempt == 1 else RunState.STARTING
        if (
            run is None
            or run.slot_wait is None
            or run.machine.state is not expected
            or msg.attempt != run.attempt + 1
        ):
            self._deps.threads.release_on_behalf_of(msg.borrower)
            return
        run.slot_wait = None
        unit = UnitOfWork(self.user_id)
        self._stage_start(unit, run, msg.attempt)
        try:
            await self._commit_runtime(unit)
        except BaseException:
            self._deps.threads.release_on_behalf_of(msg.borrower)
            raise
        self._spawn(run, msg.borrower)

    async def _watchdog(self, run: _Run, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                at = run.liveness.next_check()
                if at is None:
                    return
                await trio.sleep_until(at)
                if run.liveness.verdict(trio.current_time()) is None:
                    continue
                handled = trio.Event()
                await self._tx.send(LivenessDue(run.run_id, handled))
                await handled.wait()

    def _stop_attempt(self, run: _Run) -> None:
        """Cancel the running attempt (if any) and discard its staged, uncommitted work."""
        if run.scope is not None:
            run.scope.cancel()
            run.scope = None
        if run.slot_wait is not None:
            run.slot_wait.cancel()
            run.slot_wait = None
        run.unit = UnitOfWork(self.user_id)

    def _finalize(self, run: _Run) -> None:
        self._stop_attempt(run)
        if run.watchdog is not None:
            run.watchdog.cancel()
        run.inbox_tx.close()
        state = run.machine.state.value
        counters = self._deps.counters
        counters.runs_ended[state] = counters.runs_ended.get(state, 0) + 1
        info = _info(run)
        for reply in run.waiters:
            reply.set(info)
        del self.runs[run.run_id]
        self._trace("run_ended", (run.run_id, state))

    def _fenced(self, run_id: str, attempt: int) -> _Run | None:
        run = self.runs.get(run_id)
        if run is None or run.attempt != attempt or run.scope is None:
            return None
        return run

    # -- handlers: agents ------------------------------------------------------------------

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        run = self._fenced(msg.run_id, msg.attempt)
        if run is not None:  # late beats of an attempt that is over are ignored
            run.liveness = run.liveness.beat(trio.current_time())

    async def _on_checkpoint(self, msg: Checkpoint) -> None:
        run = self._fenced(msg.run_id, msg.attempt)
        if run is None:
            msg.reply.fail(RunFencedError("this attempt of the run is over"))
            return
        run.liveness = run.liveness.beat(trio.current_time())
        unit, run.unit = run.unit, UnitOfWork(self.user_id)
        for staged in msg.events:
            unit.emit_encoded(staged)
        for row, params in msg.rows:
            unit.stage(row, params)
        if msg.is_final:
            result_json = dumps(msg.final_result)
            unit.emit(run.run_id, "agent_completed", {"result": msg.final_result})
            self._stage_transition(
                unit, run, RunState.COMPLETING, row_changes={"result_json": result_json}
            )
        if not unit:
            msg.reply.set(self.head)
            return
        try:
            await self._commit(unit)
        except StoreError as exc:
            msg.reply.fail(exc)
            await self._crash_run(run, "store_error", str(exc))
            return
        msg.reply.set(self.head)
        if msg.is_final:
            run.scope = None  # the attempt finished; its task is returning
            done = UnitOfWork(self.user_id)
            self._stage_transition(done, run, RunState.COMPLETED)
            await self._commit_runtime(done)

    async def _on_agent_exited(self, msg: AgentExited) -> None:
        run = self._fenced(msg.run_id, msg.attempt)
        if run is None or msg.error is None:
            return
        error = f"{type(msg.error).__name__}: {msg.error}"
        log.info(
            "user %r run %s attempt %d crashed: %s", self.user_id, run.run_id, run.attempt, error
        )
        await self._crash_run(run, msg.reason, error)

    async def _crash_run(self, run: _Run, reason: str, error: str) -> None:
        """Roll back the attempt; commit one rollback notice; restart per policy or fail.

        ``reason`` is ``crash``, ``store_error`` or ``error`` (the agent raised RunFailedError:
        it asked for no restart).
        """
        self._stop_attempt(run)
        decision: Decision
        if reason == "error":
            decision = Escalate(reason="the agent failed the run")
        else:
            decision, run.tracker = run.tracker.decide(now=trio.current_time(), crashed=True)
        unit = UnitOfWork(self.user_id)
        if isinstance(decision, Restart):
            self._stage_rollback(unit, run, reason, error, will_restart=True)
            self._stage_transition(unit, run, RunState.STARTING, reason="restart")
            await self._commit_runtime(unit)
            self._deps.counters.restarts += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._restart_timer, run.run_id, run.attempt, decision.delay)
        else:
            why = decision.reason if isinstance(decision, Escalate) else "stopped"
            self._stage_rollback(unit, run, reason, error, will_restart=False)
            self._stage_transition(unit, run, RunState.FAILED, reason=f"{reason}: {why}")
            await self._commit_runtime(unit)

    async def _restart_timer(self, run_id: str, attempt: int, delay: float) -> None:
        await trio.sleep(delay)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._tx.send(RestartDue(run_id, attempt))

    async def _on_restart_due(self, msg: RestartDue) -> None:
        run = self.runs.get(msg.run_id)
        if run is None or run.attempt != msg.attempt or run.machine.state is not RunState.STARTING:
            return
        if run.agent_cls.threaded:
            self._await_slot(run, run.attempt + 1)
            return
        unit = UnitOfWork(self.user_id)
        self._stage_start(unit, run, run.attempt + 1)
        await self._commit_runtime(unit)
        self._spawn(run)

    async def _on_liveness_due(self, msg: LivenessDue) -> None:
        try:
            run = self.runs.get(msg.run_id)
            if run is None:
                return
            now = trio.current_time()
            verdict = run.liveness.verdict(now)
            if verdict is Verdict.DEAD and run.scope is None:
                run.liveness = run.liveness.beat(now)  # waiting to restart: nobody to beat
                return
            if verdict is None or run.machine.state is RunState.COMPLETING:
                return
            self._stop_attempt(run)
            unit = UnitOfWork(self.user_id)
            if verdict is Verdict.TIMEOUT:
                limit = run.liveness.policy.run_timeout
                error = f"the run exceeded its deadline of {limit:g}s"
                target = RunState.TIMEOUT
            else:
                limit = run.liveness.policy.heartbeat_timeout
                error = f"no heartbeat for {limit:g}s"
                target = RunState.DEAD
            self._stage_rollback(unit, run, verdict.value, error, will_restart=False)
            self._stage_transition(unit, run, target, reason=verdict.value)
            await self._commit_runtime(unit)
        finally:
            msg.handled.set()

    # -- handlers: commands ----------------------------------------------------------------

    async def _on_start_run(self, msg: StartRun) -> str:
        agents = self._deps.agents
        name = msg.agent if msg.agent is not None else agents.default
        cls = agents.get(name) if name is not None else None
        if cls is None:
            raise UnknownAgentError(f"no agent named {name!r}")
        try:
            input_json = dumps(msg.input)
        except TypeError:
            raise CommandError("input must be a JSON value") from None
        if len(input_json) > self._config.max_event_bytes:
            raise TooLargeError(
                f"input is {len(input_json)} bytes of JSON; the limit is "
                f"{self._config.max_event_bytes}"
            )
        if len(self.runs) >= self._config.max_live_runs_per_user:
            raise MailboxFullError(
                f"this user already has {len(self.runs)} live runs; wait for one to end"
            )
        run_id = new_run_id()
        now_wall = time.time()
        now = trio.current_time()
        inbox_tx, inbox_rx = trio.open_memory_channel[JSON](self._config.agent_mailbox_size)
        row = RunRow(
            user_id=self.user_id,
            run_id=run_id,
            agent=cls.name,
            state=RunState.PENDING.value,
            attempt=0,
            input_json=input_json,
            result_json=None,
            reason=None,
            created_at=now_wall,
            updated_at=now_wall,
        )
        run = _Run(
            run_id=run_id,
            agent_cls=cls,
            machine=ExecutionStateMachine(RunState.PENDING),
            row=row,
            tracker=RestartTracker(policy=cls.restart_policy or self._config.restart),
            liveness=Liveness.start(cls.liveness or self._config.liveness, now),
            inbox_tx=inbox_tx,
            inbox_rx=inbox_rx,
            unit=UnitOfWork(self.user_id),
        )
        unit = UnitOfWork(self.user_id)
        if msg.user_text is not None:
            unit.emit(run_id, "message", {"role": "user", "text": msg.user_text})
        unit.record_transition(row, initial_transition())
        self.runs[run_id] = run
        if not cls.threaded:
            self._stage_start(unit, run, 1)
        try:
            await self._commit(unit)
        except BaseException:
            del self.runs[run_id]
            raise
        self._deps.counters.runs_started += 1
        self._start_watchdog(run)
        if cls.threaded:
            self._await_slot(run, 1)  # waits in ``pending`` for a free thread
        else:
            self._spawn(run)
        return run_id

    async def _on_cancel_run(self, msg: CancelRun) -> None:
        run = self.runs.get(msg.run_id)
        if run is None:
            info = await self._store.get_run(self.user_id, msg.run_id)
            if info is None:
                raise UnknownRunError("no such run")
            raise IllegalStateError(f"the run already ended ({info.state.value})")
        if run.machine.state is RunState.COMPLETING:
            raise IllegalStateError("the run is completing")
        self._stop_attempt(run)
        unit = UnitOfWork(self.user_id)
        self._stage_rollback(unit, run, "cancelled", "cancelled by the user", will_restart=False)
        self._stage_transition(unit, run, RunState.CANCELLED, reason="cancelled")
        await self._commit_runtime(unit)

    async def _on_get_runs(self, msg: GetRuns) -> RunsSnapshot:
        runs = await self._store.list_runs(self.user_id, msg.limit)
        return RunsSnapshot(head_seq=self.head, runs=tuple(runs))

    async def _on_send_to_run(self, msg: SendToRun) -> None:
        run = self.runs.get(msg.run_id)
        if run is None:
            if await self._store.get_run(self.user_id, msg.run_id) is None:
                raise UnknownRunError("no such run")
            raise IllegalStateError("the run already ended")
        try:
            run.inbox_tx.send_nowait(msg.message)
        except trio.WouldBlock:
            raise MailboxFullError("the run's inbox is full") from None

    async def _on_wait_run(self, msg: WaitRun) -> None:
        run = self.runs.get(msg.run_id)
        if run is not None:
            if len(run.waiters) >= self._config.max_waiters_per_run:
                msg.reply.fail(MailboxFullError("too many callers are waiting for this run"))
                return
            run.waiters.append(msg.reply)
            return
        try:
            info = await self._store.get_run(self.user_id, msg.run_id)
        except StoreError as exc:
            msg.reply.fail(exc)
            return
        if info is None:
            msg.reply.fail(UnknownRunError("no such run"))
        else:
            msg.reply.set(info)

    def _on_subscribe(self, msg: Subscribe) -> None:
        if msg.resume_from is not None and msg.resume_from > self.head:
            msg.reply.fail(
                ResumeBeyondHeadError(
                    f"resume_from {msg.resume_from} is greater than head_seq {self.head}"
                )
            )
            return
        msg.subscription._registered(self.head)
        self.subs.append(msg.subscription)
        msg.reply.set(self.head)

    # -- activation ------------------------------------------------------------------------

    async def _recover(self, live: tuple[RunInfo, ...]) -> None:
        """End the runs a dead process left live: ``completing`` → completed, others → dead."""
        if not live:
            return
        unit = UnitOfWork(self.user_id)
        for info in live:
            cls = self._deps.agents.get(info.agent) or Agent
            inbox_tx, inbox_rx = trio.open_memory_channel[JSON](1)
            run = _Run(
                run_id=info.run_id,
                agent_cls=cls,
                machine=ExecutionStateMachine(info.state),
                row=_row_from_info(info),
                tracker=RestartTracker(policy=self._config.restart),
                liveness=Liveness.start(self._config.liveness, trio.current_time()),
                inbox_tx=inbox_tx,
                inbox_rx=inbox_rx,
                unit=UnitOfWork(self.user_id),
            )
            self.runs[info.run_id] = run
            if info.state is RunState.COMPLETING:
                self._stage_transition(unit, run, RunState.COMPLETED)
            else:
                error = "the process stopped while the run was live"
                self._stage_rollback(unit, run, "dead", error, will_restart=False)
                self._stage_transition(unit, run, RunState.DEAD, reason="dead")
        log.info(
            "user %r: recovered %d run(s) left live by a stopped process", self.user_id, len(live)
        )
        await self._commit_runtime(unit)


def _beat_every(heartbeat_timeout: float | None) -> float:
    """How often staging operations send a heartbeat of their own: well within the timeout."""
    return 1.0 if heartbeat_timeout is None else min(1.0, heartbeat_timeout / 4)


def _row_from_info(info: RunInfo) -> RunRow:
    return RunRow(
        user_id=info.user_id,
        run_id=info.run_id,
        agent=info.agent,
        state=info.state.value,
        attempt=info.attempt,
        input_json=None if info.input is None else dumps(info.input),
        result_json=None if info.result is None else dumps(info.result),
        reason=info.reason,
        created_at=info.created_at,
        updated_at=info.updated_at,
    )


def _info(run: _Run) -> RunInfo:
    r = run.row
    return RunInfo(
        user_id=r.user_id,
        run_id=r.run_id,
        agent=r.agent,
        state=run.machine.state,
        attempt=r.attempt,
        created_at=r.created_at,
        updated_at=r.updated_at,
        reason=r.reason,
        input=None if r.input_json is None else loads(r.input_json),
        result=None if r.result_json is None else loads(r.result_json),
    )
