"""The execution state machine of a run (``netra_actors._core._execution``): invariant 6.

The legal transitions are written out again below, by wire name, independently of the module's
``TRANSITIONS``: a wrong edit to the table makes these tests fail. Like h11's tests, every test
asserts the machine's state after every event, refused events included.
"""

from __future__ import annotations

import itertools
from collections import deque

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from netra_actors._core import (
    LIVE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    ExecutionStateMachine,
    RunState,
    Transition,
    check_transition,
    initial_transition,
)
from netra_actors._exceptions import IllegalTransitionError, NetraError

# ----------------------------------------------------------------------------------- the model

WIRE_NAMES = (
    "pending",
    "starting",
    "running",
    "completing",
    "completed",
    "failed",
    "timeout",
    "dead",
    "cancelled",
)
ENDINGS = frozenset({"failed", "timeout", "dead", "cancelled"})
MODEL_LIVE = frozenset({"pending", "starting", "running", "completing"})
MODEL_TERMINAL = frozenset({"completed"}) | ENDINGS

#: The architecture brief's state diagram, by wire name. Not derived from the module.
MODEL: dict[str, frozenset[str]] = {
    "pending": frozenset({"starting"}) | ENDINGS,
    "starting": frozenset({"running"}) | ENDINGS,
    "running": frozenset({"completing", "starting"}) | ENDINGS,
    "completing": frozenset({"completed", "failed"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "timeout": frozenset(),
    "dead": frozenset(),
    "cancelled": frozenset(),
}

ALL_PAIRS = list(itertools.product(RunState, RunState))
LEGAL_PAIRS = [(c, t) for c, t in ALL_PAIRS if t.value in MODEL[c.value]]
ILLEGAL_PAIRS = [(c, t) for c, t in ALL_PAIRS if t.value not in MODEL[c.value]]


def pair_id(pair: tuple[RunState, RunState]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def state_of(m: ExecutionStateMachine) -> RunState:
    """The machine's state, read afresh (mypy would keep an ``assert m.state is X`` narrowing)."""
    return m.state


def legal(current: RunState, target: RunState) -> bool:
    return target.value in MODEL[current.value]


# ------------------------------------------------------------------------------ the enum itself


def test_wire_names_are_exact() -> None:
    assert [s.value for s in RunState] == list(WIRE_NAMES)
    for name in WIRE_NAMES:
        state = RunState(name)
        assert state.value == name
        assert str(state) == name
        assert state == name


def test_unknown_wire_name_is_rejected() -> None:
    with pytest.raises(ValueError):
        RunState("finished")


def test_model_is_consistent() -> None:
    # A sanity check of the test's own table, so a typo here cannot hide a bug there.
    assert set(MODEL) == set(WIRE_NAMES)
    assert set(WIRE_NAMES) == MODEL_LIVE | MODEL_TERMINAL
    assert not MODEL_LIVE & MODEL_TERMINAL
    for targets in MODEL.values():
        assert targets <= set(WIRE_NAMES)


def test_table_equals_model() -> None:
    assert set(TRANSITIONS) == set(RunState)
    assert {s.value: {t.value for t in TRANSITIONS[s]} for s in RunState} == MODEL


@pytest.mark.parametrize("state", list(RunState), ids=str)
def test_is_live_and_is_terminal(state: RunState) -> None:
    assert state.is_live == (state.value in MODEL_LIVE)
    assert state.is_terminal == (state.value in MODEL_TERMINAL)
    assert state.is_live != state.is_terminal


def test_live_and_terminal_states_partition_the_enum() -> None:
    assert {s.value for s in LIVE_STATES} == MODEL_LIVE
    assert {s.value for s in TERMINAL_STATES} == MODEL_TERMINAL
    assert frozenset(RunState) == LIVE_STATES | TERMINAL_STATES
    assert not LIVE_STATES & TERMINAL_STATES
    assert all(isinstance(s, RunState) for s in LIVE_STATES | TERMINAL_STATES)


# -------------------------------------------------------------------------------- the table


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_check_transition_raises_exactly_on_illegal_pairs(pair: tuple[RunState, RunState]) -> None:
    current, target = pair
    if legal(current, target):
        check_transition(current, target)
    else:
        with pytest.raises(IllegalTransitionError) as info:
            check_transition(current, target)
        assert info.value.current == current.value
        assert info.value.target == target.value
        assert f"{current.value} -> {target.value}" in str(info.value)


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_machine_on_every_pair(pair: tuple[RunState, RunState]) -> None:
    current, target = pair
    m = ExecutionStateMachine(current)
    assert m.state is current
    assert m.can(target) == legal(current, target)
    assert m.state is current

    if not legal(current, target):
        with pytest.raises(IllegalTransitionError):
            m.plan(target)
        assert m.state is current
        with pytest.raises(IllegalTransitionError):
            m.apply(Transition(previous=current, state=target))
        assert m.state is current
        with pytest.raises(IllegalTransitionError):
            m.transition(target, reason="nope")
        assert m.state is current
        return

    planned = m.plan(target, reason="why")
    assert planned == Transition(previous=current, state=target, reason="why")
    assert m.state is current  # planning does not apply

    m.apply(planned)
    assert m.state is target

    # The same planned transition is now stale: applying it again is refused.
    with pytest.raises(IllegalTransitionError):
        m.apply(planned)
    assert m.state is target

    other = ExecutionStateMachine(current)
    done = other.transition(target)
    assert done == Transition(previous=current, state=target, reason=None)
    assert other.state is target


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_apply_with_wrong_previous_is_refused(pair: tuple[RunState, RunState]) -> None:
    current, target = pair
    for previous in [None, *RunState]:
        if previous is current:
            continue
        m = ExecutionStateMachine(current)
        with pytest.raises(IllegalTransitionError):
            m.apply(Transition(previous=previous, state=target))
        assert m.state is current


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES), ids=str)
def test_terminal_states_have_no_exits(state: RunState) -> None:
    assert TRANSITIONS[state] == frozenset()
    m = ExecutionStateMachine(state)
    for target in RunState:
        assert not m.can(target)
        with pytest.raises(IllegalTransitionError):
            m.transition(target)
        assert m.state is state


def test_machine_starts_pending() -> None:
    m = ExecutionStateMachine()
    assert m.state is RunState.PENDING
    assert repr(m) == "ExecutionStateMachine(pending)"


def test_machine_state_is_always_a_run_state() -> None:
    m = ExecutionStateMachine("running")  # type: ignore[arg-type]  # a wire name from a row
    assert m.state is RunState.RUNNING
    with pytest.raises(ValueError):
        ExecutionStateMachine("finished")  # type: ignore[arg-type]


def test_happy_path() -> None:
    m = ExecutionStateMachine()
    assert m.state is RunState.PENDING
    path = [RunState.STARTING, RunState.RUNNING, RunState.COMPLETING, RunState.COMPLETED]
    previous = RunState.PENDING
    for target in path:
        t = m.transition(target)
        assert t.previous is previous
        assert t.state is target
        assert m.state is target
        previous = target
    assert m.state.is_terminal


def test_restart_edge() -> None:
    m = ExecutionStateMachine()
    m.transition(RunState.STARTING)
    assert state_of(m) is RunState.STARTING
    m.transition(RunState.RUNNING)
    assert state_of(m) is RunState.RUNNING
    for _ in range(3):
        t = m.transition(RunState.STARTING, reason="restart")
        assert t == Transition(previous=RunState.RUNNING, state=RunState.STARTING, reason="restart")
        assert state_of(m) is RunState.STARTING
        m.transition(RunState.RUNNING)
        assert state_of(m) is RunState.RUNNING
    # ``starting`` is entered only from ``pending`` (first attempt) or ``running`` (restart).
    into_starting = {s for s in RunState if ExecutionStateMachine(s).can(RunState.STARTING)}
    assert into_starting == {RunState.PENDING, RunState.RUNNING}


@pytest.mark.parametrize("state", [s for s in RunState if s.value in MODEL_LIVE], ids=str)
def test_every_live_state_reaches_the_endings(state: RunState) -> None:
    direct = {t.value for t in TRANSITIONS[state]}
    if state is RunState.COMPLETING:
        assert direct & (ENDINGS | {"completed"}) == {"completed", "failed"}
    else:
        assert direct >= ENDINGS
        assert "completed" not in direct
    for ending in ENDINGS | {"completed"}:
        m = ExecutionStateMachine(state)
        if ending in direct:
            m.transition(RunState(ending))
            assert m.state.value == ending
            assert m.state.is_terminal


def reachable(start: RunState) -> set[RunState]:
    seen = {start}
    todo = deque([start])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("state", sorted(LIVE_STATES), ids=str)
def test_every_live_state_can_finish(state: RunState) -> None:
    # From anywhere live, ``completed`` and ``failed`` are reachable: no live dead ends.
    assert {RunState.COMPLETED, RunState.FAILED} <= reachable(state)


def test_pending_reaches_every_state() -> None:
    assert reachable(RunState.PENDING) == set(RunState)


# -------------------------------------------------------------------------------- Transition


def test_transition_value() -> None:
    t = Transition(previous=RunState.PENDING, state=RunState.STARTING)
    assert t.reason is None
    assert t == Transition(previous=RunState.PENDING, state=RunState.STARTING, reason=None)
    assert t != Transition(previous=RunState.PENDING, state=RunState.STARTING, reason="x")
    assert hash(t) == hash(Transition(previous=RunState.PENDING, state=RunState.STARTING))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        t.state = RunState.RUNNING  # type: ignore[misc]
    with pytest.raises(TypeError):
        Transition(RunState.PENDING, RunState.STARTING)  # type: ignore[call-arg]


def test_initial_transition() -> None:
    t = initial_transition()
    assert t.previous is None
    assert t.state is RunState.PENDING
    assert t.reason is None
    assert t == initial_transition()
    # It describes how a run comes into being; no existing machine can apply it.
    for state in RunState:
        m = ExecutionStateMachine(state)
        with pytest.raises(IllegalTransitionError):
            m.apply(t)
        assert m.state is state


def test_illegal_transition_error_is_a_netra_error() -> None:
    err = IllegalTransitionError("completed", "running")
    assert isinstance(err, NetraError)
    assert str(err) == "illegal run transition completed -> running"


# ------------------------------------------------------------------- properties and stateful


@given(st.lists(st.sampled_from(RunState) | st.integers(0, 5), max_size=40))
def test_random_walk_follows_the_model(steps: list[RunState | int]) -> None:
    # A step is a target state, or an index into the model's legal targets (a likely-legal move).
    m = ExecutionStateMachine()
    model = "pending"
    for step in steps:
        if isinstance(step, int):
            options = sorted(MODEL[model]) or ["pending"]
            target = RunState(options[step % len(options)])
        else:
            target = step
        if target.value in MODEL[model]:
            t = m.transition(target)
            assert t.previous is not None
            assert t.previous.value == model
            model = target.value
        else:
            with pytest.raises(IllegalTransitionError):
                m.transition(target)
        assert m.state.value == model


class ExecutionMachineVsModel(RuleBasedStateMachine):
    """Drive one machine with random targets and compare it with :data:`MODEL`."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = ExecutionStateMachine()
        self.model = "pending"
        self.terminal_since: str | None = None
        self.accepted: list[Transition] = []

    def _accept(self, t: Transition, target: RunState) -> None:
        assert t.previous is not None
        assert t.previous.value == self.model
        assert t.state is target
        self.model = target.value
        self.accepted.append(t)

    @rule(to=st.sampled_from(RunState), reason=st.none() | st.sampled_from(["crash", "restart"]))
    def transition(self, to: RunState, reason: str | None) -> None:
        ok = to.value in MODEL[self.model]
        assert self.machine.can(to) == ok
        if ok:
            t = self.machine.transition(to, reason=reason)
            assert t.reason == reason
            self._accept(t, to)
        else:
            with pytest.raises(IllegalTransitionError):
                self.machine.transition(to, reason=reason)

    @precondition(lambda self: self.model in MODEL_LIVE)
    @rule(data=st.data())
    def legal_move(self, data: st.DataObject) -> None:
        to = RunState(data.draw(st.sampled_from(sorted(MODEL[self.model]))))
        assert self.machine.can(to)
        self._accept(self.machine.transition(to), to)

    @precondition(lambda self: bool(MODEL[self.model] & MODEL_LIVE))
    @rule(data=st.data())
    def progress(self, data: st.DataObject) -> None:
        # Random targets end most runs within a few steps; this keeps some alive and deep.
        to = RunState(data.draw(st.sampled_from(sorted(MODEL[self.model] & MODEL_LIVE))))
        assert self.machine.can(to)
        self._accept(self.machine.transition(to), to)

    @precondition(lambda self: self.model in MODEL_TERMINAL)
    @rule()
    def new_run(self) -> None:
        self.machine = ExecutionStateMachine()
        self.model = "pending"
        self.terminal_since = None
        self.accepted = []

    @rule(to=st.sampled_from(RunState))
    def plan_then_apply(self, to: RunState) -> None:
        if to.value in MODEL[self.model]:
            t = self.machine.plan(to)
            assert self.machine.state.value == self.model
            self.machine.apply(t)
            self._accept(t, to)
        else:
            with pytest.raises(IllegalTransitionError):
                self.machine.plan(to)

    @rule(previous=st.sampled_from([None, *RunState]), to=st.sampled_from(RunState))
    def apply_arbitrary(self, previous: RunState | None, to: RunState) -> None:
        t = Transition(previous=previous, state=to)
        ok = previous is not None and previous.value == self.model and to.value in MODEL[self.model]
        if ok:
            self.machine.apply(t)
            self._accept(t, to)
        else:
            with pytest.raises(IllegalTransitionError):
                self.machine.apply(t)

    @rule(data=st.data())
    def replay_an_old_transition(self, data: st.DataObject) -> None:
        # A transition accepted earlier is stale now (the state moved on since), unless the
        # run went round the restart loop back to the same state and the edge is still legal.
        if not self.accepted:
            return
        t = data.draw(st.sampled_from(self.accepted))
        assert t.previous is not None
        if t.previous.value == self.model and t.state.value in MODEL[self.model]:
            self.machine.apply(t)
            self._accept(t, t.state)
        else:
            with pytest.raises(IllegalTransitionError):
                self.machine.apply(t)

    @invariant()
    def state_matches_model(self) -> None:
        assert type(self.machine.state) is RunState
        assert self.machine.state.value == self.model

    @invariant()
    def terminal_stays_terminal(self) -> None:
        if self.terminal_since is not None:
            assert self.model == self.terminal_since
            assert self.machine.state.is_terminal
        elif self.model in MODEL_TERMINAL:
            self.terminal_since = self.model
        assert (self.model in MODEL_TERMINAL) == self.machine.state.is_terminal

    @invariant()
    def history_is_a_chain(self) -> None:
        previous: str = "pending"
        for t in self.accepted:
            assert t.previous is not None
            assert t.previous.value == previous
            assert t.state.value in MODEL[previous]
            previous = t.state.value
        assert previous == self.model


TestExecutionMachineVsModel = ExecutionMachineVsModel.TestCase
