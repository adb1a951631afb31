"""The rules of one user's session, as a pure state machine: causes and ``now`` in, decisions out.

What decides what a user's session does lives in ``_core`` and nowhere else:

* **admission** of a new run and the busy policies: ``_admission.py``;
* **the queue** of waiting runs: a queued run's turn comes once every run it waits for ended
  (:meth:`Session.ended`, :meth:`Session.next_turn`, in the order the runs were admitted);
* **questions and inputs**: ``_inputs.py``;
* **time**: the session's one deadline (the earliest of its runs' — due timers and scheduled
  starts included — and, when idle, its passivation: :meth:`Session.next_deadline`), the runs
  due at a tick, and when it may stop (its runs may wait durably: they are rows);
* **commit retry**: after a failed commit of a unit the runtime owns, retry after a backoff or
  give up (:func:`retry_delay`: the session fails and is rebuilt from the store);
* **recovery** of the runs a stopped process left live: ``_recovery.py``;
* one run's life cycle: ``_lifecycle.py``.

The shells (``_supervisor.py`` and the handlers beside it) ask and execute; they decide nothing.
Pure: no I/O, no clock. ``tests/core/test_session_machine.py`` drives it against an independent model.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import attrs

from .._exceptions import IllegalStateError, IllegalTransitionError, MailboxFullError
from . import _lifecycle as lc
from ._lifecycle import Plan, RunLife


@attrs.frozen(kw_only=True)
class SessionRules:
    """The bounds and defaults the session's rules apply (from ``RuntimeConfig``)."""

    if_busy: str = "parallel"
    max_live_runs: int = 64
    max_inputs: int = 1000
    max_input_chars: int = 256 * 1024
    max_waiters: int = 1024
    idle_timeout: float = 60.0
    store_retries: int = 3


@attrs.define(eq=False, kw_only=True)
class LiveRun:
    """The session's record of one live run. The shell extends it with its handles."""

    run_id: str
    life: RunLife
    thread: str = "main"
    """The thread the run belongs to (every event of the run carries it)."""
    blockers: set[str] | None = None
    """A queued run: the runs that must end before it starts."""
    inputs: list[str] = attrs.field(factory=list)
    """The run's committed ``run_input`` values (JSON), in order: every attempt may take them."""
    consumed: int = 0
    """How many of ``inputs`` the running attempt has taken (``ctx.ask``)."""

    def new_attempt(self) -> None:
        """A new attempt takes the run's inputs from the first again."""
        self.consumed = 0


R = TypeVar("R", bound=LiveRun)


class Quiet(Protocol):
    """What the session asks its shell before it counts as idle."""

    def quiet(self) -> bool:
        """True when nothing outside the runs is open or pending (sockets, mailbox, requests)."""
        ...


def retry_delay(failed: int, *, retries: int) -> float | None:
    """Attempt ``failed`` (1, 2, …) of a unit the runtime owns failed: the delay before the
    next attempt, or None to give up (the session fails and is rebuilt from the store)."""
    if failed >= retries:
        return None
    return 0.05 * 2.0**failed


class Session(Generic[R]):
    """One user's session: its live runs (in the order they were admitted) and idle clock."""

    __slots__ = ("idle_since", "rules", "runs", "threads", "turns_due")

    def __init__(self, rules: SessionRules) -> None:
        self.rules = rules
        self.runs: dict[str, R] = {}
        self.threads: dict[str | None, str] = {}
        """The thread of each live run (the events a unit commits for it carry it)."""
        self.idle_since: float | None = None
        """Since when the session is idle (None: it is not, or nobody looked yet)."""
        self.turns_due = False
        """A run ended (or runs were recovered): a queued run's turn may have come."""

    def running(self, run_id: str, attempt: int) -> R | None:
        """The run, if ``attempt`` is its running attempt (else the sender is fenced off)."""
        run = self.runs.get(run_id)
        if run is None or run.life.running_attempt != attempt:
            return None
        return run

    def add(self, run: R, blockers: frozenset[str] | None = None) -> None:
        """``run`` is live from now on (queued behind ``blockers``)."""
        run.blockers = None if blockers is None else set(blockers)
        self.runs[run.run_id] = run
        self.threads[run.run_id] = run.thread

    # -- the queue ------------------------------------------------------------------------------

    def ended(self, run_id: str) -> None:
        """The run ended: it is no longer live, and no queued run waits for it any more."""
        del self.runs[run_id]
        self.threads.pop(run_id, None)
        for other in self.runs.values():
            if other.blockers is not None:
                other.blockers.discard(run_id)
                self.turns_due = True

    def next_turn(self, now: float) -> tuple[R, Plan] | None:
        """The first queued run whose turn came (every run before it ended), with its plan."""
        for run in self.runs.values():
            if run.blockers is not None and not run.blockers:
                run.blockers = None
                plan = lc.on_dequeue(run.life, now=now)
                if plan is not None:
                    return run, plan
        self.turns_due = False
        return None

    # -- the user's commands on a live run --------------------------------------------------

    def cancel(self, run: R) -> Plan:
        """The user cancels ``run``; :class:`IllegalStateError` if it cannot be."""
        try:
            return lc.on_cancel(run.life)
        except IllegalTransitionError:
            raise IllegalStateError(f"the run is {run.life.state.value}") from None

    def may_wait(self, waiting: int) -> None:
        """One more caller waits for a run that ``waiting`` callers wait for already."""
        if waiting >= self.rules.max_waiters:
            raise MailboxFullError("too many callers are waiting for this run")

    # -- time -----------------------------------------------------------------------------------

    def next_deadline(self, now: float, shell: Quiet) -> float | None:
        """The earliest moment something is due without a message (None: nothing ever is).

        Starts the idle clock when the session is idle: no live run and ``shell.quiet()``.
        """
        due: float | None = None
        for run in self.runs.values():
            t = run.life.next_deadline()
            if t is not None and (due is None or t < due):
                due = t
        if not self.only_waiting() or not shell.quiet():
            self.idle_since = None
            return due
        if self.idle_since is None:
            self.idle_since = now
        idle = self.idle_since + self.rules.idle_timeout
        return idle if due is None or idle < due else due

    def ticks(self, now: float) -> list[tuple[R, Plan]]:
        """The plans of the runs that are due at ``now`` (a deadline, a heartbeat, a restart, a
        timer, a scheduled start), earliest due first (ties: in the order the runs were
        admitted). Each plan concerns its own run alone: the shell may carry them all out in
        one unit (timers due together wake together)."""
        due_runs: list[tuple[float, int, R]] = []
        for i, run in enumerate(self.runs.values()):
            due = run.life.next_deadline()
            if due is not None and due <= now:
                due_runs.append((due, i, run))
        due_runs.sort(key=lambda d: (d[0], d[1]))
        plans: list[tuple[R, Plan]] = []
        for _, _, run in due_runs:
            plan = lc.on_tick(run.life, now=now)
            if plan is not None:
                plans.append((run, plan))
        return plans

    def may_passivate(self, now: float, shell: Quiet) -> bool:
        """Idle for ``idle_timeout``: the session may stop (it is rebuilt from the store)."""
        return (
            self.idle_since is not None
            and now >= self.idle_since + self.rules.idle_timeout
            and self.only_waiting()
            and shell.quiet()
        )

    def only_waiting(self) -> bool:
        """Every live run waits durably (for an answer, a timer or its start time): they are
        rows in the store, and the session may stop (it is rebuilt from the store)."""
        return all(run.life.wait.durable for run in self.runs.values())

    def attempts(self) -> int:
        """How many runs have an attempt running now."""
        return sum(run.life.running_attempt is not None for run in self.runs.values())
