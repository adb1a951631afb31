"""The execution state machine of a run: states, the transition table, and nothing else.

Pure: no I/O, no clock. Like h11's ``_state.py`` every legal transition is one row of a table;
an illegal transition raises :class:`IllegalTransitionError` and leaves the state unchanged.

::

    pending ──► starting ──► running ──► completing ──► completed
       │           │  ▲          │            │
       │           │  └─restart──┘            └──► failed
       └───────────┴──────────┴──► failed | timeout | dead | cancelled

``running → starting`` is a supervised restart: the crashed attempt was rolled back and a new
attempt is starting.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from .._exceptions import IllegalTransitionError


class RunState(enum.StrEnum):
    """The state of a run. The string values are the wire names."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETING = "completing"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True when no transition leaves this state."""
        return not TRANSITIONS[self]

    @property
    def is_live(self) -> bool:
        """True while the run may still do work (the opposite of terminal)."""
        return bool(TRANSITIONS[self])


_S = RunState
_ENDINGS = frozenset({_S.FAILED, _S.TIMEOUT, _S.DEAD, _S.CANCELLED})

#: Every legal transition: ``TRANSITIONS[current]`` is the set of states it may move to.
TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    _S.PENDING: frozenset({_S.STARTING}) | _ENDINGS,
    _S.STARTING: frozenset({_S.RUNNING}) | _ENDINGS,
    _S.RUNNING: frozenset({_S.COMPLETING, _S.STARTING}) | _ENDINGS,
    _S.COMPLETING: frozenset({_S.COMPLETED, _S.FAILED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.TIMEOUT: frozenset(),
    _S.DEAD: frozenset(),
    _S.CANCELLED: frozenset(),
}

#: The states a run can be in at rest while it is still live.
LIVE_STATES = frozenset(s for s in RunState if s.is_live)
TERMINAL_STATES = frozenset(s for s in RunState if s.is_terminal)


def check_transition(current: RunState, target: RunState) -> None:
    """Raise :class:`IllegalTransitionError` unless ``current → target`` is in the table."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransitionError(current.value, target.value)


@attrs.frozen(kw_only=True)
class Transition:
    """One accepted transition."""

    previous: RunState | None
    """The state before (``None`` for the run's first state, ``pending``)."""
    state: RunState
    """The state after."""
    reason: str | None = None
    """Why, when the runtime knows (``restart``, ``crash``, ``cancelled`` …)."""


class ExecutionStateMachine:
    """The state of one run, moved only through :data:`TRANSITIONS`.

    The supervisor keeps one per run and applies a transition only once the unit of work that
    records it has committed, so this object always equals what the store says.
    """

    __slots__ = ("_state",)

    def __init__(self, state: RunState = RunState.PENDING) -> None:
        self._state = RunState(state)

    @property
    def state(self) -> RunState:
        """The current state."""
        return self._state

    def can(self, target: RunState) -> bool:
        """Whether ``target`` is a legal next state."""
        return target in TRANSITIONS[self._state]

    def plan(self, target: RunState, *, reason: str | None = None) -> Transition:
        """Check ``current → target`` and describe it, without applying it."""
        check_transition(self._state, target)
        return Transition(previous=self._state, state=target, reason=reason)

    def apply(self, transition: Transition) -> None:
        """Apply a planned transition. It must start from the current state."""
        if transition.previous != self._state:
            raise IllegalTransitionError(self._state.value, transition.state.value)
        check_transition(self._state, transition.state)
        self._state = transition.state

    def transition(self, target: RunState, *, reason: str | None = None) -> Transition:
        """Plan and apply in one step."""
        t = self.plan(target, reason=reason)
        self._state = target
        return t

    def __repr__(self) -> str:
        return f"ExecutionStateMachine({self._state.value})"


def initial_transition() -> Transition:
    """The first transition of every run: into ``pending`` from nothing."""
    return Transition(previous=None, state=RunState.PENDING)
