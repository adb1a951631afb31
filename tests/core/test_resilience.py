"""Retry backoff and the circuit breaker (``netra_actors._core._resilience``), as pure values.

The breaker is driven by a hypothesis state machine through random admissions, results and
abandoned calls at advancing times, and compared after every step with :class:`Model`, written
here from the module's documented contract:

* ``closed`` admits everything; a failure at ``t`` counts while ``now - t < window``;
  ``failure_threshold`` counted failures open it. Successes do not reset the count.
* ``open`` refuses until ``now - opened_at >= reset_timeout``; the first admit after that is a
  probe and the breaker is ``half_open``.
* ``half_open`` admits at most ``half_open_probes`` calls in flight; a success closes it (failures
  forgotten), a failure re-opens it at that time. An abandoned call frees its probe slot.
* ``retry_after``: ``None`` exactly when ``admit`` would succeed; otherwise the remaining reset
  time (``open``) or ``reset_timeout`` (``half_open`` with every probe in flight).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from netra_actors._core._resilience import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    Dependency,
    RetryPolicy,
    dependency_map,
)
from netra_actors._exceptions import ConfigError

DERANDOMIZED = settings(derandomize=True, database=None, deadline=None, max_examples=300)
BAD_FLOATS = [-1.0, -1e-9, math.nan, math.inf, -math.inf]

# ------------------------------------------------------------------------------ validation


def test_defaults() -> None:
    r = RetryPolicy()
    assert (r.attempts, r.backoff_initial, r.backoff_factor, r.backoff_max) == (1, 0.2, 2.0, 5.0)
    assert (r.jitter, r.timeout) == (0.2, None)
    b = BreakerPolicy()
    assert (b.failure_threshold, b.window, b.reset_timeout, b.half_open_probes) == (5, 30, 10, 1)
    d = Dependency("search")
    assert d.retry == RetryPolicy()
    assert d.breaker is None


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2", None], ids=repr)
def test_attempts_must_be_a_positive_int(value: Any) -> None:
    with pytest.raises(ConfigError, match="attempts"):
        RetryPolicy(attempts=value)


@pytest.mark.parametrize("field", ["backoff_initial", "backoff_max"])
@pytest.mark.parametrize("value", [*BAD_FLOATS, True, "1"], ids=repr)
def test_non_negative_retry_fields(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        RetryPolicy(**{field: value})
    assert getattr(RetryPolicy(**{field: 0}), field) == 0


@pytest.mark.parametrize("value", [0.99, 0.0, -2.0, math.nan, math.inf], ids=repr)
def test_backoff_factor_at_least_one(value: float) -> None:
    with pytest.raises(ConfigError, match="backoff_factor"):
        RetryPolicy(backoff_factor=value)


@pytest.mark.parametrize("value", [-0.1, 1.01, math.nan, math.inf, True], ids=repr)
def test_jitter_in_unit_interval(value: Any) -> None:
    with pytest.raises(ConfigError, match="jitter"):
        RetryPolicy(jitter=value)
    assert RetryPolicy(jitter=1).jitter == 1
    assert RetryPolicy(jitter=0).jitter == 0


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, True], ids=repr)
def test_timeout_is_positive_or_none(value: Any) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        RetryPolicy(timeout=value)
    assert RetryPolicy(timeout=0.5).timeout == 0.5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("failure_threshold", 2.0),
        ("window", 0.0),
        ("window", math.inf),
        ("reset_timeout", -1.0),
        ("reset_timeout", math.nan),
        ("half_open_probes", 0),
        ("half_open_probes", True),
    ],
)
def test_breaker_policy_validation(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        BreakerPolicy(**{field: value})


def test_reset_timeout_zero_is_allowed() -> None:
    assert BreakerPolicy(reset_timeout=0).reset_timeout == 0


@pytest.mark.parametrize("name", ["", " x", "x ", 3, None], ids=repr)
def test_dependency_name(name: Any) -> None:
    with pytest.raises(ConfigError, match="name"):
        Dependency(name)


def test_dependency_policies_are_typed() -> None:
    with pytest.raises(ConfigError, match="retry"):
        Dependency("x", retry={"attempts": 3})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="breaker"):
        Dependency("x", breaker=5)  # type: ignore[arg-type]


def test_evolve_validates() -> None:
    with pytest.raises(ConfigError):
        attrs.evolve(RetryPolicy(), attempts=0)
    with pytest.raises(ConfigError):
        attrs.evolve(BreakerPolicy(), window=-1.0)


def test_dependency_map() -> None:
    a, b = Dependency("a"), Dependency("b", retry=RetryPolicy(attempts=2))
    assert dependency_map([a, b]) == {"a": a, "b": b}
    assert dependency_map({"a": a}) == {"a": a}
    assert dependency_map(()) == {}
    with pytest.raises(ConfigError, match="differ"):
        dependency_map({"x": a})
    with pytest.raises(ConfigError, match="twice"):
        dependency_map([a, a])
    with pytest.raises(ConfigError, match="Dependency"):
        dependency_map({"a": RetryPolicy()})  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        dependency_map("a")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        dependency_map(5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- backoff


def test_backoff_exact_values_without_jitter() -> None:
    p = RetryPolicy(attempts=10, jitter=0)
    assert [p.delay(n, rand=0.5) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    q = RetryPolicy(backoff_initial=1.0, backoff_factor=3.0, backoff_max=20.0, jitter=0)
    assert [q.delay(n, rand=0.0) for n in range(1, 5)] == [1.0, 3.0, 9.0, 20.0]
    assert RetryPolicy(backoff_initial=0, jitter=1).delay(3, rand=0.9) == 0.0


def test_jitter_scales_the_delay_linearly_in_rand() -> None:
    p = RetryPolicy(backoff_initial=1.0, jitter=0.5)
    assert p.delay(1, rand=0.0) == 0.5
    assert p.delay(1, rand=0.5) == 1.0
    assert p.delay(1, rand=0.75) == 1.25
    assert p.delay(100, rand=0.5) == 5.0  # capped, then jittered
    assert p.delay(100, rand=0.0) == 2.5


@pytest.mark.parametrize("rand", [-0.1, 1.0, 1.5, math.nan], ids=repr)
def test_rand_must_be_in_the_unit_interval(rand: float) -> None:
    with pytest.raises(ValueError, match="rand"):
        RetryPolicy().delay(1, rand=rand)


@pytest.mark.parametrize("n", [0, -1])
def test_retry_number_is_one_based(n: int) -> None:
    with pytest.raises(ValueError):
        RetryPolicy().delay(n, rand=0.5)


@pytest.mark.parametrize("n", [1075, 10**6, 10**400], ids=["1075", "1e6", "1e400"])
def test_huge_retry_numbers_do_not_overflow(n: int) -> None:
    assert RetryPolicy(backoff_factor=1e300).delay(n, rand=0.5) == 5.0
    assert RetryPolicy(backoff_factor=1).delay(n, rand=0.5) == 0.2


retry_policies = st.builds(
    RetryPolicy,
    attempts=st.integers(1, 10),
    backoff_initial=st.sampled_from([0.0, 0.2, 1.0]) | st.floats(0, 100),
    backoff_factor=st.sampled_from([1.0, 2.0]) | st.floats(1, 100),
    backoff_max=st.sampled_from([0.0, 5.0]) | st.floats(0, 1000),
    jitter=st.sampled_from([0.0, 0.2, 1.0]) | st.floats(0, 1),
)
unit = st.floats(0, 1, exclude_max=True)


@DERANDOMIZED
@given(policy=retry_policies, n=st.integers(1, 2000), rand=unit)
def test_delay_bounds(policy: RetryPolicy, n: int, rand: float) -> None:
    """Within [base * (1 - jitter), base * (1 + jitter)], base never above the cap or below 0."""
    base = policy.base_delay(n)
    assert 0 <= base <= policy.backoff_max
    assert base >= min(policy.backoff_initial, policy.backoff_max)
    d = policy.delay(n, rand=rand)
    assert math.isfinite(d)
    assert base * (1 - policy.jitter) - 1e-9 <= d <= base * (1 + policy.jitter) + 1e-9
    assert d <= policy.backoff_max * (1 + policy.jitter) + 1e-9


@DERANDOMIZED
@given(policy=retry_policies, n=st.integers(1, 200), rand=unit)
def test_base_delay_is_monotonic(policy: RetryPolicy, n: int, rand: float) -> None:
    assert policy.base_delay(n) <= policy.base_delay(n + 1)
    if n <= 30:
        expected = min(
            policy.backoff_max, policy.backoff_initial * policy.backoff_factor ** (n - 1)
        )
        assert policy.base_delay(n) == pytest.approx(expected)


@DERANDOMIZED
@given(policy=retry_policies, n=st.integers(1, 50), a=unit, b=unit)
def test_delay_is_monotonic_in_rand(policy: RetryPolicy, n: int, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert policy.delay(n, rand=lo) <= policy.delay(n, rand=hi)


# ------------------------------------------------------------------- breaker: examples


def test_breaker_opens_at_the_threshold_within_the_window() -> None:
    b = Breaker(policy=BreakerPolicy(failure_threshold=3, window=10, reset_timeout=5))
    b = b.failed(0.0).failed(1.0)
    assert b.state is BreakerState.CLOSED
    b = b.failed(10.5)  # the failure at 0.0 has left the window
    assert b.state is BreakerState.CLOSED
    b = b.succeeded(10.6).failed(10.7)  # successes do not reset the count
    assert b.state is BreakerState.OPEN
    assert b.opened_after == 3
    assert b.retry_after(11.7) == pytest.approx(4.0)
    assert b.admit(15.69) == (False, b)
    ok, half = b.admit(15.7)
    assert ok
    assert half.state is BreakerState.HALF_OPEN
    assert half.admit(15.8) == (False, half)  # one probe in flight
    assert half.retry_after(15.8) == 5
    assert half.succeeded(16.0) == Breaker(policy=b.policy)
    reopened = half.failed(16.0)
    assert reopened.state is BreakerState.OPEN
    assert reopened.opened_at == 16.0
    assert reopened.opened_after == 4
    assert reopened.retry_after(16.0) == 5


def test_abandoned_probe_frees_its_slot() -> None:
    b = Breaker(policy=BreakerPolicy(failure_threshold=1, reset_timeout=1)).failed(0)
    _, half = b.admit(1)
    assert half.admit(1)[0] is False
    freed = half.abandoned(1)
    assert freed.state is BreakerState.HALF_OPEN
    assert freed.admit(1)[0] is True
    assert Breaker(policy=BreakerPolicy()).abandoned(0) == Breaker(policy=BreakerPolicy())


def test_late_results_while_open_change_nothing() -> None:
    b = Breaker(policy=BreakerPolicy(failure_threshold=1)).failed(0)
    assert b.succeeded(1) == b
    assert b.failed(2) == b


def test_several_probes() -> None:
    b = Breaker(policy=BreakerPolicy(failure_threshold=1, reset_timeout=0, half_open_probes=2))
    b = b.failed(0)
    ok1, b = b.admit(0)
    ok2, b = b.admit(0)
    ok3, b = b.admit(0)
    assert (ok1, ok2, ok3) == (True, True, False)
    assert b.probes == 2
    closed = b.succeeded(0)
    assert closed.state is BreakerState.CLOSED
    # the other probe's failure now counts as a closed-state failure: threshold 1 re-opens
    assert closed.failed(0).state is BreakerState.OPEN


# -------------------------------------------------------------------- breaker: the model


class Model:
    """The breaker's contract as plain mutable state."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.p = policy
        self.state = "closed"
        self.failures: list[float] = []
        self.opened_at = 0.0
        self.in_flight = 0

    def admit(self, now: float) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open":
            if now - self.opened_at >= self.p.reset_timeout:
                self.state, self.in_flight = "half_open", 1
                return True
            return False
        if self.in_flight < self.p.half_open_probes:
            self.in_flight += 1
            return True
        return False

    def result(self, now: float, ok: bool) -> None:
        if self.state == "open":
            return
        if self.state == "half_open":
            if ok:
                self.state, self.failures, self.in_flight = "closed", [], 0
            else:
                self.state, self.opened_at, self.in_flight = "open", now, 0
            return
        if ok:
            return
        self.failures = [t for t in self.failures if now - t < self.p.window] + [now]
        if len(self.failures) >= self.p.failure_threshold:
            self.state, self.opened_at, self.failures = "open", now, []

    def abandon(self) -> None:
        if self.state == "half_open" and self.in_flight:
            self.in_flight -= 1

    def retry_after(self, now: float) -> float | None:
        if self.state == "closed":
            return None
        if self.state == "open":
            left = self.opened_at + self.p.reset_timeout - now
            return left if left > 0 else None
        return None if self.in_flight < self.p.half_open_probes else self.p.reset_timeout


COVERAGE: Counter[str] = Counter()

breaker_policies = st.builds(
    BreakerPolicy,
    failure_threshold=st.integers(1, 4),
    window=st.sampled_from([1.0, 5.0, 30.0]),
    reset_timeout=st.sampled_from([0.0, 1.0, 3.0]),
    half_open_probes=st.integers(1, 3),
)


class BreakerVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._breaker: Breaker | None = None
        self._model: Model | None = None
        self.pending = 0  # admitted calls whose result has not been reported

    @property
    def breaker(self) -> Breaker:
        assert self._breaker is not None
        return self._breaker

    @property
    def model(self) -> Model:
        assert self._model is not None
        return self._model

    @initialize(policy=breaker_policies)
    def start(self, policy: BreakerPolicy) -> None:
        self._breaker = Breaker(policy=policy)
        self._model = Model(policy)

    @rule(dt=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.5, 10.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def admit(self) -> None:
        before = self.breaker.state
        ok, self._breaker = self.breaker.admit(self.now)
        assert ok == self.model.admit(self.now)
        if ok:
            self.pending += 1
        COVERAGE[f"admit {before.value}: {ok}"] += 1

    @precondition(lambda self: self.pending > 0)
    @rule(ok=st.booleans())
    def result(self, ok: bool) -> None:
        before = self.breaker.state
        self.pending -= 1
        b = self.breaker
        self._breaker = b.succeeded(self.now) if ok else b.failed(self.now)
        self.model.result(self.now, ok)
        COVERAGE[f"{'success' if ok else 'failure'} {before.value} -> {self.breaker.state}"] += 1

    @precondition(lambda self: self.pending > 0)
    @rule()
    def abandon(self) -> None:
        self.pending -= 1
        self._breaker = self.breaker.abandoned(self.now)
        self.model.abandon()

    @invariant()
    def agrees(self) -> None:
        if self._breaker is None:
            return
        b, m = self.breaker, self.model
        assert b.state.value == m.state
        assert b.retry_after(self.now) == m.retry_after(self.now)
        # retry_after is None exactly when a call would be admitted (admit is pure: no commit)
        assert (b.retry_after(self.now) is None) == b.admit(self.now)[0]
        if b.state is BreakerState.HALF_OPEN:
            assert 0 <= b.probes <= b.policy.half_open_probes
            assert b.probes == m.in_flight
        if b.state is BreakerState.CLOSED:
            assert len(b.failures) < b.policy.failure_threshold
            assert b.opened_at is None


def test_breaker_vs_model() -> None:
    COVERAGE.clear()
    run_state_machine_as_test(
        BreakerVsModel,
        settings=settings(
            max_examples=200,
            stateful_step_count=40,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    for needed in [
        "admit closed: True",
        "admit open: False",
        "admit open: True",
        "admit half_open: True",
        "admit half_open: False",
        "failure closed -> open",
        "failure half_open -> open",
        "success half_open -> closed",
        "failure open -> open",
        "success open -> open",
    ]:
        assert COVERAGE[needed] > 0, (needed, dict(COVERAGE))
