"""The life cycle of a run, as pure functions: given a run's state, a cause and ``now``, a plan.

A run's state has one owner: the :class:`RunLife` value its supervisor keeps. Every cause the
supervisor sees — the run begins, a thread slot is granted, the agent finished, crashed, failed
on purpose or lost its commit, the user cancels, a deadline passes, the attempt waits durably
(an answer, a timer) or what it waits for comes, the owner takes the run over after a lost
process — goes through one function
here, which returns a :class:`Plan`: the steps to record in one unit of work (rollback notice,
state transitions, ``agent_started``), what to do with the running attempt, and the
:class:`RunLife` the run has once that unit committed. The supervisor executes plans; it decides
nothing about states itself.

Pure: no I/O, no clock (``now`` is an argument, on the supervisor's monotonic clock), no
randomness (backoff jitter is an argument). Tested like h11 tests its states:
``tests/core/test_lifecycle.py`` drives random causes against an independent model.

::

    begin ──► pending ─(async, or slot)─► starting ─► running ──finish──► completing ─► completed
                                            ▲            │
                              restart due ──┘◄─backoff───┤ crash / store_error (restartable)
                                                         └─► failed | timeout | dead | cancelled
    running ──wait (ask, sleep)──► running, no attempt ──wake (answer, due)──► next attempt
    running ──owner lost (recover)──► rolled back ``lost`` ─► starting (``recovered``) | failed
"""

from __future__ import annotations

import enum

import attrs

from .._exceptions import IllegalTransitionError
from ._execution import RunState, Transition, check_transition
from ._liveness import Liveness, LivenessPolicy
from ._restart import Escalate, Restart, RestartPolicy, RestartTracker

_S = RunState


class Crash(enum.StrEnum):
    """Why an attempt ended abnormally (the ``reason`` of its ``run_rolled_back``)."""

    CRASH = "crash"
    """The agent raised."""
    STORE_ERROR = "store_error"
    """The attempt's commit failed."""
    ERROR = "error"
    """The agent failed the run on purpose (``RunFailedError``): no restart."""


@attrs.frozen(kw_only=True)
class Rollback:
    """Step: the attempt's uncommitted work is discarded; one ``run_rolled_back`` records it."""

    reason: str
    """``crash``, ``error``, ``store_error``, ``cancelled``, ``timeout``, ``dead`` or ``lost``."""
    error: str
    attempt: int
    will_restart: bool


@attrs.frozen(kw_only=True)
class AgentStarted:
    """Step: attempt ``attempt`` of the agent begins (an ``agent_started`` event)."""

    attempt: int


Step = Transition | Rollback | AgentStarted


class Wait(enum.StrEnum):
    """What a live run is waiting for, when no attempt runs."""

    NONE = "none"
    SLOT = "slot"
    """A threaded run waits for a free thread."""
    BACKOFF = "backoff"
    """A crashed run waits until its restart is due (``RunLife.restart_at``)."""
    QUEUE = "queue"
    """A queued run (``if_busy="enqueue"``) waits for the runs live before it to end."""
    INPUT = "input"
    """A ``running`` run whose question is not answered yet: no attempt runs until it is."""
    TIMER = "timer"
    """A ``running`` run in a durable sleep: no attempt runs until ``RunLife.wake_at``."""
    SCHEDULED = "scheduled"
    """A ``pending`` run that starts at ``RunLife.wake_at`` (``start_at``)."""
    HANDOVER = "handover"
    """This node drains: the run's attempt stopped at a commit (or was stopped without one);
    nothing more happens here, and the next owner resumes the run."""

    @property
    def durable(self) -> bool:
        """A wait that holds no attempt and that the run row records (it survives the process):
        the session may passivate, and liveness does not apply."""
        return self in _DURABLE


_DURABLE = frozenset({Wait.INPUT, Wait.TIMER, Wait.SCHEDULED})


@attrs.frozen(kw_only=True)
class RunLife:
    """Everything the supervisor knows about a run's life cycle, as one immutable value."""

    state: RunState
    attempt: int
    """The number of the current (or last) attempt; 0 before the first one."""
    threaded: bool
    """Attempts run in a thread, which must be granted first (``Wait.SLOT``)."""
    tracker: RestartTracker
    liveness: Liveness
    wait: Wait = Wait.NONE
    restart_at: float | None = None
    """When the next attempt is due (``Wait.BACKOFF``)."""
    wake_at: float | None = None
    """When a ``Wait.TIMER`` or ``Wait.SCHEDULED`` run is due."""
    reason: str | None = None
    """Why the run ended (terminal states), as recorded in its last ``run_state``."""

    @property
    def running_attempt(self) -> int | None:
        """The attempt whose agent code may act right now (its operations are accepted)."""
        return self.attempt if self.state is _S.RUNNING and self.wait is Wait.NONE else None

    def next_deadline(self) -> float | None:
        """The earliest ``now`` at which :func:`on_tick` may return a plan, or None."""
        if self.state.is_terminal or self.state is _S.COMPLETING or self.wait is Wait.HANDOVER:
            return None  # on_tick never acts on these
        if self.wait.durable:
            return self.wake_at  # liveness does not apply while the run waits durably
        times: list[float] = []
        deadline = self.liveness.deadline
        if deadline is not None:
            times.append(deadline)
        if self.running_attempt is not None:
            beat = self.liveness.heartbeat_deadline
            if beat is not None:
                times.append(beat)
        if self.wait is Wait.BACKOFF and self.restart_at is not None:
            times.append(self.restart_at)
        return min(times) if times else None

    def beat(self, now: float) -> RunLife:
        """A sign of life from the running attempt."""
        liveness = self.liveness.beat(now)
        return self if liveness is self.liveness else attrs.evolve(self, liveness=liveness)


@attrs.frozen(kw_only=True)
class Plan:
    """What the supervisor does for one cause, in this order.

    1. ``stop_attempt``: cancel the running attempt (or slot wait) and discard what it staged;
    2. record ``steps`` in one unit of work and commit it;
    3. once committed, the run is ``life``; then ``spawn`` the attempt ``life.attempt`` or
       ``await_slot``. A terminal ``life`` ends the run.
    """

    life: RunLife
    steps: tuple[Step, ...] = ()
    stop_attempt: bool = False
    spawn: bool = False
    await_slot: bool = False


class _Steps:
    """Builds the steps of a plan, following the state through each transition."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.steps: list[Step] = []

    def go(self, target: RunState, reason: str | None = None) -> None:
        check_transition(self.state, target)
        self.steps.append(Transition(previous=self.state, state=target, reason=reason))
        self.state = target

    def add(self, step: Step) -> None:
        self.steps.append(step)


def begin(
    *,
    now: float,
    threaded: bool,
    restart: RestartPolicy,
    liveness: LivenessPolicy,
    queued: bool = False,
    start_at: float | None = None,
) -> Plan:
    """A new run: ``pending``; then an async agent starts at once, a threaded one waits for a
    slot, a ``queued`` one waits for its turn (:func:`on_dequeue`) and a scheduled one for
    ``start_at`` (``pending``, reason ``scheduled``; :func:`on_tick` starts it)."""
    life = RunLife(
        state=_S.PENDING,
        attempt=0,
        threaded=threaded,
        tracker=RestartTracker(policy=restart),
        liveness=Liveness.start(liveness, now),
    )
    if start_at is not None:
        scheduled = Transition(previous=None, state=_S.PENDING, reason="scheduled")
        life = attrs.evolve(life, wait=Wait.SCHEDULED, wake_at=start_at)
        return Plan(life=life, steps=(scheduled,))
    first: tuple[Step, ...] = (Transition(previous=None, state=_S.PENDING),)
    if queued:
        return Plan(life=attrs.evolve(life, wait=Wait.QUEUE), steps=first)
    plan = _go_pending(life, now)
    return attrs.evolve(plan, steps=first + plan.steps)


def _go_pending(life: RunLife, now: float) -> Plan:
    """A pending run may start now: at once (async), or once it has a thread (threaded)."""
    if life.threaded:
        return Plan(life=attrs.evolve(life, wait=Wait.SLOT), await_slot=True)
    return _start(life, _Steps(_S.PENDING), now)


def on_dequeue(life: RunLife, *, now: float) -> Plan | None:
    """A queued run's turn came. None if it is not queued (any more)."""
    if life.wait is not Wait.QUEUE or life.state is not _S.PENDING:
        return None
    # The run's deadline counts from its turn, not from when it was queued.
    fresh = Liveness.start(life.liveness.policy, now)
    return _go_pending(attrs.evolve(life, wait=Wait.NONE, liveness=fresh), now)


def _start(life: RunLife, steps: _Steps, now: float) -> Plan:
    """Steps of the next attempt: [``starting``,] ``agent_started``[, ``running``]; then spawn.

    A ``running`` run that waited (an answer, a timer) resumes with ``agent_started`` alone."""
    if steps.state is _S.PENDING:
        steps.go(_S.STARTING)
    attempt = life.attempt + 1
    steps.add(AgentStarted(attempt=attempt))
    if steps.state is not _S.RUNNING:
        steps.go(_S.RUNNING)
    return Plan(
        life=attrs.evolve(
            life,
            state=_S.RUNNING,
            attempt=attempt,
            wait=Wait.NONE,
            restart_at=None,
            wake_at=None,
            liveness=life.liveness.restarted(now),
        ),
        steps=tuple(steps.steps),
        spawn=True,
    )


def on_slot(life: RunLife, *, now: float) -> Plan | None:
    """A threaded run was granted a thread: its next attempt starts. None if it no longer waits."""
    if life.wait is not Wait.SLOT or life.state is _S.COMPLETING or life.state.is_terminal:
        return None
    return _start(life, _Steps(life.state), now)


def on_finish(life: RunLife, *, attempt: int) -> Plan | None:
    """The attempt returned and its final unit is being committed: ``completing``, ``completed``.

    The caller adds the attempt's staged work and ``agent_completed`` to the same unit.
    None when ``attempt`` is not the running attempt (its output is fenced off).
    """
    if life.running_attempt != attempt:
        return None
    steps = _Steps(life.state)
    steps.go(_S.COMPLETING)
    steps.go(_S.COMPLETED)
    return Plan(life=attrs.evolve(life, state=_S.COMPLETED, reason=None), steps=tuple(steps.steps))


def on_crash(
    life: RunLife, *, attempt: int, cause: Crash, error: str, now: float, jitter: float = 1.0
) -> Plan | None:
    """The running attempt crashed (or failed, or lost its commit): roll back; restart or fail.

    None when ``attempt`` is not the running attempt (a late report of an attempt that is over).
    """
    if life.running_attempt != attempt:
        return None
    return _roll_back(life, cause.value, error, now=now, jitter=jitter, restart="restart")


def _roll_back(
    life: RunLife, reason: str, error: str, *, now: float, jitter: float, restart: str
) -> Plan:
    """The attempt ended abnormally (``reason``): one rollback, then the restart policy's
    decision — ``starting`` (``restart`` says why) and the next attempt after its backoff, or
    ``failed``. (A failure on purpose, ``error``, never restarts.)"""
    if reason == Crash.ERROR.value:
        decision: Restart | Escalate = Escalate(reason="the agent failed the run")
        tracker = life.tracker
    else:
        d, tracker = life.tracker.decide(now=now, crashed=True, jitter=jitter)
        decision = d if isinstance(d, Restart) else Escalate(reason=_why(d))
    steps = _Steps(life.state)
    will_restart = isinstance(decision, Restart)
    steps.add(Rollback(reason=reason, error=error, attempt=life.attempt, will_restart=will_restart))
    if isinstance(decision, Restart):
        steps.go(_S.STARTING, restart)
        if decision.delay <= 0:
            wait, at = (Wait.SLOT, None) if life.threaded else (Wait.BACKOFF, now)
        else:
            wait, at = Wait.BACKOFF, now + decision.delay
        new = attrs.evolve(life, state=_S.STARTING, tracker=tracker, wait=wait, restart_at=at)
        return Plan(
            life=new,
            steps=tuple(steps.steps),
            stop_attempt=True,
            await_slot=wait is Wait.SLOT,
        )
    why = f"{reason}: {decision.reason}"
    steps.go(_S.FAILED, why)
    return Plan(
        life=_ended(life, _S.FAILED, why, tracker),
        steps=tuple(steps.steps),
        stop_attempt=True,
    )


def _why(decision: object) -> str:
    return decision.reason if isinstance(decision, Escalate) else "stopped"


def on_cancel(life: RunLife, *, error: str = "cancelled by the user") -> Plan:
    """The user cancels the run (``error`` says how: ``interrupted`` by a new message …).

    Raises :class:`IllegalTransitionError` if it cannot be (``completing``, or over).
    """
    check_transition(life.state, _S.CANCELLED)
    return _abort(life, _S.CANCELLED, "cancelled", error)


def on_tick(life: RunLife, *, now: float) -> Plan | None:
    """Time passed: the deadline, a missing heartbeat, a restart, a timer or a scheduled start
    that is due. None if none."""
    if life.state.is_terminal or life.state is _S.COMPLETING or life.wait is Wait.HANDOVER:
        return None
    if life.wait.durable:
        if life.wake_at is None or now < life.wake_at:
            return None
        if life.wait is Wait.TIMER:
            return on_wake(life, now=now)
        fresh = Liveness.start(life.liveness.policy, now)  # its deadline counts from its start
        return _go_pending(attrs.evolve(life, wait=Wait.NONE, wake_at=None, liveness=fresh), now)
    deadline = life.liveness.deadline
    if deadline is not None and now >= deadline:
        limit = life.liveness.policy.run_timeout
        return _abort(life, _S.TIMEOUT, "timeout", f"the run exceeded its deadline of {limit:g}s")
    if life.running_attempt is not None:
        beat = life.liveness.heartbeat_deadline
        if beat is not None and now >= beat:
            limit = life.liveness.policy.heartbeat_timeout
            return _abort(life, _S.DEAD, "dead", f"no heartbeat for {limit:g}s")
    if life.wait is Wait.BACKOFF and life.restart_at is not None and now >= life.restart_at:
        if life.threaded:
            return Plan(life=attrs.evolve(life, wait=Wait.SLOT, restart_at=None), await_slot=True)
        return _start(life, _Steps(life.state), now)
    return None


def on_wait(
    life: RunLife, *, attempt: int, wait: Wait, wake_at: float | None = None
) -> Plan | None:
    """The running attempt waits durably (``Wait.INPUT``, or ``Wait.TIMER`` until ``wake_at``):
    it stops (its work up to the wait is committed), and the run holds no attempt until
    :func:`on_wake`. None when ``attempt`` is not the running attempt."""
    if life.running_attempt != attempt or wait not in (Wait.INPUT, Wait.TIMER):
        return None
    return Plan(life=attrs.evolve(life, wait=wait, wake_at=wake_at), stop_attempt=True)


def on_handover(life: RunLife) -> Plan | None:
    """This node drains (a planned stop): the run's attempt, or its wait for a thread, stops
    without committing anything more, and the run is left to the next owner, which resumes it
    (its row still says it was running: ``lost``, then a new attempt that replays). None for a
    run that needs nothing here: it waits durably, is queued or is over."""
    if life.state.is_terminal or life.wait.durable or life.wait in (Wait.QUEUE, Wait.HANDOVER):
        return None
    return Plan(life=attrs.evolve(life, wait=Wait.HANDOVER, restart_at=None), stop_attempt=True)


def on_wake(life: RunLife, *, now: float) -> Plan | None:
    """What a waiting run waited for came (its answer, or its time): its next attempt starts
    (``agent_started``; the run stays ``running``) and replays the journal. None if it does
    not wait for an answer or a timer."""
    if life.state is not _S.RUNNING or life.wait not in (Wait.INPUT, Wait.TIMER):
        return None
    # The run's deadline counts its active time: the wait stopped its clock.
    life = attrs.evolve(life, liveness=Liveness.start(life.liveness.policy, now))
    if life.threaded:
        return Plan(life=attrs.evolve(life, wait=Wait.SLOT, wake_at=None), await_slot=True)
    return _start(life, _Steps(life.state), now)


LOST = "the process running the attempt stopped"
"""The ``error`` of a ``lost`` rollback."""


def on_recover(life: RunLife, *, now: float, runnable: bool = True, jitter: float = 1.0) -> Plan:
    """The owner took the user and found the run live, left so by a process that stopped (or
    by an owner that lost the user).

    ``completing`` finishes ``completed`` (its result was committed); a run that waits durably
    keeps waiting; a ``pending`` run goes on (queued runs stay queued); a ``starting`` run (its
    restart was due) starts its next attempt. A ``running`` run lost its attempt: one rollback
    (reason ``lost``), then — as the restart policy decides, so that a run that takes its process
    down every time ends — ``starting`` (reason ``recovered``) and a new attempt that replays
    the journal, or ``failed``. ``runnable`` is False when this process does not have the run's
    agent: the run then ends ``failed``.
    """
    if life.state is _S.COMPLETING:
        steps = _Steps(life.state)
        steps.go(_S.COMPLETED)
        return Plan(life=attrs.evolve(life, state=_S.COMPLETED), steps=tuple(steps.steps))
    if life.state.is_terminal:
        raise IllegalTransitionError(life.state.value, _S.FAILED.value)
    if not runnable:
        return _abort(life, _S.FAILED, "lost", "this server does not have the run's agent")
    if life.wait.durable or life.wait is Wait.QUEUE:
        return Plan(life=life)
    if life.state is _S.PENDING:
        return _go_pending(life, now)
    if life.state is _S.STARTING:
        if life.threaded:
            return Plan(life=attrs.evolve(life, wait=Wait.SLOT, restart_at=None), await_slot=True)
        return _start(life, _Steps(_S.STARTING), now)
    return _roll_back(life, "lost", LOST, now=now, jitter=jitter, restart="recovered")


def recovered(
    state: RunState,
    attempt: int,
    *,
    threaded: bool,
    queued: bool,
    restart: RestartPolicy,
    liveness: LivenessPolicy,
    now: float,
    wait: Wait = Wait.NONE,
    wake_at: float | None = None,
    restarts: tuple[float, ...] = (),
) -> RunLife:
    """The life of a run read back from the store (to plan its recovery).

    ``wait``: the durable wait its row records (``wake_at`` on this clock); ``restarts``: when
    its earlier restarts were granted (this clock), so that they count against the policy."""
    if queued and state is _S.PENDING and wait is Wait.NONE:
        wait = Wait.QUEUE
    if not wait.durable and wait is not Wait.QUEUE:
        wait, wake_at = Wait.NONE, None
    return RunLife(
        state=state,
        attempt=attempt,
        threaded=threaded,
        tracker=RestartTracker(policy=restart, restarts=restarts),
        liveness=Liveness.start(liveness, now),
        wait=wait,
        wake_at=wake_at if wait in (Wait.TIMER, Wait.SCHEDULED) else None,
    )


def _abort(life: RunLife, target: RunState, reason: str, error: str) -> Plan:
    """Roll back whatever runs (or waits), then end ``target``."""
    steps = _Steps(life.state)
    steps.add(Rollback(reason=reason, error=error, attempt=life.attempt, will_restart=False))
    steps.go(target, reason)
    return Plan(
        life=_ended(life, target, reason, life.tracker),
        steps=tuple(steps.steps),
        stop_attempt=True,
    )


def _ended(life: RunLife, state: RunState, reason: str, tracker: RestartTracker) -> RunLife:
    return attrs.evolve(
        life,
        state=state,
        reason=reason,
        tracker=tracker,
        wait=Wait.NONE,
        restart_at=None,
        wake_at=None,
    )
