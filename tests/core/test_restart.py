"""Supervised restart (``netra_actors._core._restart``): invariant 5.

The decisions are compared with a small model written here from the module's documented contract:
OTP restart types; at most ``max_restarts`` restarts granted within the last ``window`` seconds
(a restart at ``t`` counts at ``now`` while ``now - t < window``); restart number ``n`` waits
``min(backoff_max, backoff_initial * backoff_factor ** (n - 1)) * jitter``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from netra_actors._core import (
    Decision,
    Escalate,
    Restart,
    RestartPolicy,
    RestartTracker,
    RestartType,
    Stop,
)
from netra_actors._exceptions import ConfigError

BAD_FLOATS = [-1.0, -1e-9, math.nan, math.inf, -math.inf]

# ----------------------------------------------------------------------------------- the model


def model_backoff(policy: RestartPolicy, n: int, jitter: float = 1.0) -> float:
    """Only for small ``n`` (no float overflow in the power)."""
    return (
        min(policy.backoff_max, policy.backoff_initial * policy.backoff_factor ** (n - 1)) * jitter
    )


class Model:
    """The restart history as a plain list of the times restarts were granted."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.granted: list[float] = []

    def decide(self, *, now: float, crashed: bool, jitter: float = 1.0) -> Decision:
        kind = self.policy.restart.value
        if kind == "temporary" or (kind == "transient" and not crashed):
            return Escalate(reason="crash") if crashed else Stop()
        recent = [t for t in self.granted if now - t < self.policy.window]
        if len(recent) >= self.policy.max_restarts:
            return Escalate(reason="intensity")
        self.granted.append(now)
        n = len(recent) + 1
        return Restart(delay=model_backoff(self.policy, n, jitter), number=n)


def assert_same(actual: Decision, expected: Decision) -> None:
    """Equal decisions; an escalation's reason is prose, so only its presence is compared."""
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(actual, Escalate):
        assert actual.reason
    else:
        assert actual == expected


policies = st.builds(
    RestartPolicy,
    restart=st.sampled_from(RestartType),
    max_restarts=st.integers(0, 5),
    window=st.sampled_from([0.0, 1.0, 5.0, 10.0]) | st.floats(0, 100),
    backoff_initial=st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0, 10),
    backoff_factor=st.sampled_from([1.0, 2.0]) | st.floats(1, 10),
    backoff_max=st.sampled_from([0.0, 5.0, 60.0]) | st.floats(0, 1000),
)

# ------------------------------------------------------------------------------- validation


def test_defaults() -> None:
    p = RestartPolicy()
    assert p.restart is RestartType.TRANSIENT
    assert p.max_restarts == 3
    assert p.window == 60.0
    assert (p.backoff_initial, p.backoff_factor, p.backoff_max) == (0.1, 2.0, 5.0)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("field", ["window", "backoff_initial", "backoff_max"])
@pytest.mark.parametrize("value", BAD_FLOATS, ids=repr)
def test_non_negative_fields_reject_bad_values(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ConfigError, match=field):
        RestartPolicy(**kwargs)


@pytest.mark.parametrize("field", ["window", "backoff_initial", "backoff_max"])
def test_non_negative_fields_accept_zero(field: str) -> None:
    kwargs: dict[str, Any] = {field: 0.0}
    p = RestartPolicy(**kwargs)
    assert getattr(p, field) == 0.0


@pytest.mark.parametrize("value", [-1, 1.0, 2.5, math.nan, True, False, "3", None], ids=repr)
def test_max_restarts_must_be_a_non_negative_int(value: Any) -> None:
    with pytest.raises(ConfigError, match="max_restarts"):
        RestartPolicy(max_restarts=value)


@pytest.mark.parametrize("value", [0, 1, 1000])
def test_max_restarts_accepts_non_negative_ints(value: int) -> None:
    assert RestartPolicy(max_restarts=value).max_restarts == value


@pytest.mark.parametrize("value", [0.999, 0.5, 0.0, -2.0, math.nan, math.inf], ids=repr)
def test_backoff_factor_must_be_at_least_one(value: float) -> None:
    with pytest.raises(ConfigError, match="backoff_factor"):
        RestartPolicy(backoff_factor=value)


def test_backoff_factor_one_is_allowed() -> None:
    assert RestartPolicy(backoff_factor=1.0).backoff_factor == 1.0


def test_restart_type_from_wire_name() -> None:
    assert [t.value for t in RestartType] == ["permanent", "transient", "temporary"]
    p = RestartPolicy(restart="permanent")
    assert p.restart is RestartType.PERMANENT


def test_unknown_restart_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="restart"):
        RestartPolicy(restart="sometimes")


def test_evolve_validates_too() -> None:
    with pytest.raises(ConfigError):
        attrs.evolve(RestartPolicy(), window=-1.0)


# ---------------------------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RestartPolicy(), [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]),
        (
            RestartPolicy(backoff_initial=1.0, backoff_factor=3.0, backoff_max=100.0),
            [1.0, 3.0, 9.0, 27.0, 81.0, 100.0, 100.0],
        ),
        (RestartPolicy(backoff_initial=0.5, backoff_factor=1.0), [0.5] * 6),
        (RestartPolicy(backoff_initial=0.0), [0.0] * 6),
        (RestartPolicy(backoff_initial=10.0, backoff_max=2.0), [2.0] * 6),
        (RestartPolicy(backoff_max=0.0), [0.0] * 6),
    ],
)
def test_backoff_exact_values(policy: RestartPolicy, expected: list[float]) -> None:
    assert [policy.backoff(n) for n in range(1, len(expected) + 1)] == expected


def test_backoff_small_factor_still_reaches_the_cap() -> None:
    # 1.01 ** 499 ≈ 144: restart 500 must wait the full cap, however slowly the delay grows.
    p = RestartPolicy(backoff_initial=1.0, backoff_factor=1.01, backoff_max=100.0)
    assert p.backoff(100) == pytest.approx(1.01**99)
    assert p.backoff(500) == 100.0


def test_backoff_jitter_multiplies() -> None:
    p = RestartPolicy()
    assert p.backoff(1, jitter=0.5) == 0.05
    assert p.backoff(3, jitter=1.5) == pytest.approx(0.6)
    assert p.backoff(100, jitter=1.5) == 7.5  # jitter applies after the cap
    assert p.backoff(4, jitter=0.0) == 0.0


@pytest.mark.parametrize("n", [0, -1, -100])
def test_backoff_is_one_based(n: int) -> None:
    with pytest.raises(ValueError):
        RestartPolicy().backoff(n)


@pytest.mark.parametrize("factor", [1.0, 1.0001, 2.0, 1e300])
@pytest.mark.parametrize("n", [66, 10**6, 10**18, 10**400], ids=["66", "1e6", "1e18", "1e400"])
def test_backoff_huge_n_does_not_overflow(factor: float, n: int) -> None:
    p = RestartPolicy(backoff_initial=0.25, backoff_factor=factor, backoff_max=30.0)
    expected = 0.25 if factor == 1.0 else 30.0
    if factor == 1.0001 and n == 66:
        expected = 0.25 * 1.0001**65
    assert p.backoff(n) == pytest.approx(expected)
    assert p.backoff(n, jitter=2.0) == pytest.approx(2 * expected)


def test_backoff_huge_n_with_int_factor_is_fast() -> None:
    # An int factor must not turn the power into a bigint computation.
    p = RestartPolicy(backoff_initial=1, backoff_factor=2, backoff_max=10)
    assert p.backoff(10**18) == 10.0


@given(policies, st.integers(1, 100))
def test_backoff_matches_formula(policy: RestartPolicy, n: int) -> None:
    expected = model_backoff(policy, n)
    assert policy.backoff(n) == pytest.approx(expected, rel=1e-12, abs=0.0)
    assert 0.0 <= policy.backoff(n) <= policy.backoff_max


@given(policies, st.integers(1, 10**6), st.integers(0, 300))
def test_backoff_is_monotone_and_capped(policy: RestartPolicy, n: int, step: int) -> None:
    a, b = policy.backoff(n), policy.backoff(n + step)
    assert a <= b <= policy.backoff_max
    assert math.isfinite(b)


# ----------------------------------------------------------------------------- restart types


def tracker(restart: RestartType, **kw: Any) -> RestartTracker:
    return RestartTracker(policy=RestartPolicy(restart=restart, **kw))


@pytest.mark.parametrize("crashed", [False, True])
def test_permanent_restarts_after_any_exit(crashed: bool) -> None:
    t = tracker(RestartType.PERMANENT)
    decision, after = t.decide(now=5.0, crashed=crashed)
    assert decision == Restart(delay=0.1, number=1)
    assert after.restarts == (5.0,)
    assert t.restarts == ()  # a value: the old tracker is unchanged


def test_permanent_normal_exits_count_towards_intensity() -> None:
    t = tracker(RestartType.PERMANENT, max_restarts=2)
    d1, t = t.decide(now=0.0, crashed=False)
    d2, t = t.decide(now=1.0, crashed=False)
    d3, t = t.decide(now=2.0, crashed=False)
    assert d1 == Restart(delay=0.1, number=1)
    assert d2 == Restart(delay=0.2, number=2)
    assert isinstance(d3, Escalate)


def test_transient_restarts_after_a_crash_only() -> None:
    t = tracker(RestartType.TRANSIENT)
    decision, after = t.decide(now=1.0, crashed=True)
    assert decision == Restart(delay=0.1, number=1)
    assert after.restarts == (1.0,)

    decision, same = t.decide(now=1.0, crashed=False)
    assert decision == Stop()
    assert same == t


def test_transient_normal_exits_do_not_count() -> None:
    t = tracker(RestartType.TRANSIENT, max_restarts=1)
    for now in range(5):
        decision, t = t.decide(now=float(now), crashed=False)
        assert decision == Stop()
    decision, t = t.decide(now=5.0, crashed=True)
    assert decision == Restart(delay=0.1, number=1)


def test_temporary_never_restarts() -> None:
    t = tracker(RestartType.TEMPORARY)
    decision, same = t.decide(now=1.0, crashed=False)
    assert decision == Stop()
    assert same == t
    decision, same = t.decide(now=1.0, crashed=True)
    assert isinstance(decision, Escalate)
    assert "temporary" in decision.reason
    assert same == t


def test_jitter_reaches_the_delay() -> None:
    decision, _ = tracker(RestartType.TRANSIENT).decide(now=0.0, crashed=True, jitter=0.5)
    assert decision == Restart(delay=0.05, number=1)


# --------------------------------------------------------------------------------- intensity


@pytest.mark.parametrize("restart", [RestartType.PERMANENT, RestartType.TRANSIENT], ids=str)
@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
def test_k_crashes_restart_then_escalate(restart: RestartType, k: int) -> None:
    policy = RestartPolicy(restart=restart, max_restarts=k, window=60.0)
    t = RestartTracker(policy=policy)
    for i in range(1, k + 1):
        decision, t = t.decide(now=float(i), crashed=True)
        assert decision == Restart(delay=policy.backoff(i), number=i)
        assert decision.delay == model_backoff(policy, i)
    decision, t = t.decide(now=float(k + 1), crashed=True)
    assert isinstance(decision, Escalate)
    assert decision.reason == f"more than {k} restarts in 60s"
    # Still beyond saving a moment later.
    decision, t = t.decide(now=float(k + 2), crashed=True)
    assert isinstance(decision, Escalate)


@pytest.mark.parametrize("spacing", [10.0, 10.5, 100.0])
def test_crashes_spaced_beyond_the_window_never_escalate(spacing: float) -> None:
    t = tracker(RestartType.TRANSIENT, max_restarts=1, window=10.0)
    for i in range(50):
        decision, t = t.decide(now=i * spacing, crashed=True)
        assert decision == Restart(delay=0.1, number=1)
        assert len(t.restarts) == 1


def test_window_boundary_is_strict() -> None:
    t = tracker(RestartType.TRANSIENT, max_restarts=1, window=10.0)
    d, t = t.decide(now=0.0, crashed=True)
    assert d == Restart(delay=0.1, number=1)
    d, _ = t.decide(now=math.nextafter(10.0, 0.0), crashed=True)
    assert isinstance(d, Escalate)  # still inside the window
    d, _ = t.decide(now=10.0, crashed=True)
    assert d == Restart(delay=0.1, number=1)  # the first restart has left the window


def test_window_slides() -> None:
    t = tracker(RestartType.TRANSIENT, max_restarts=2, window=10.0)
    d, t = t.decide(now=0.0, crashed=True)
    assert d == Restart(delay=0.1, number=1)
    d, t = t.decide(now=1.0, crashed=True)
    assert d == Restart(delay=0.2, number=2)
    d, t = t.decide(now=5.0, crashed=True)
    assert isinstance(d, Escalate)
    d, t = t.decide(now=10.5, crashed=True)  # the restart at 0 has left the window
    assert d == Restart(delay=0.2, number=2)
    assert t.restarts == (1.0, 10.5)


def test_zero_window_never_escalates() -> None:
    t = tracker(RestartType.TRANSIENT, max_restarts=1, window=0.0)
    for _ in range(10):
        d, t = t.decide(now=3.0, crashed=True)
        assert d == Restart(delay=0.1, number=1)


def test_zero_max_restarts_escalates_at_once() -> None:
    d, _ = tracker(RestartType.PERMANENT, max_restarts=0).decide(now=0.0, crashed=False)
    assert isinstance(d, Escalate)


@given(
    policies,
    st.lists(
        st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0]) | st.floats(0, 20),
        max_size=40,
    ),
    st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_tracker_matches_model_on_random_exits(
    policy: RestartPolicy, gaps: list[float], crashes: list[bool]
) -> None:
    model = Model(policy)
    t = RestartTracker(policy=policy)
    now = 0.0
    for gap, crashed in zip(gaps, crashes, strict=False):
        now += gap
        decision, t = t.decide(now=now, crashed=crashed)
        assert_same(decision, model.decide(now=now, crashed=crashed))
        assert len(t.restarts) <= policy.max_restarts


@given(
    policies,
    st.lists(st.floats(0, 1000), max_size=40).map(sorted),
)
def test_tracker_matches_model_on_sorted_crash_times(
    policy: RestartPolicy, times: list[float]
) -> None:
    model = Model(policy)
    t = RestartTracker(policy=policy)
    for now in times:
        decision, t = t.decide(now=now, crashed=True)
        assert_same(decision, model.decide(now=now, crashed=True))
        assert len(t.restarts) <= policy.max_restarts


class TrackerVsModel(RuleBasedStateMachine):
    """Crashes and normal exits at advancing times, compared with :class:`Model`."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = RestartPolicy()
        self.tracker = RestartTracker(policy=self.policy)
        self.model = Model(self.policy)
        self.now = 0.0

    @initialize(policy=policies, start=st.floats(-1e6, 1e6))
    def setup(self, policy: RestartPolicy, start: float) -> None:
        self.policy = policy
        self.tracker = RestartTracker(policy=policy)
        self.model = Model(policy)
        self.now = start

    def _exit(self, dt: float, crashed: bool, jitter: float) -> None:
        self.now += dt
        decision, self.tracker = self.tracker.decide(now=self.now, crashed=crashed, jitter=jitter)
        assert_same(decision, self.model.decide(now=self.now, crashed=crashed, jitter=jitter))

    @rule(
        dt=st.sampled_from([0.0, 1.0, 5.0, 10.0]) | st.floats(0, 15),
        jitter=st.sampled_from([1.0]) | st.floats(0.5, 1.5),
    )
    def crash(self, dt: float, jitter: float) -> None:
        self._exit(dt, True, jitter)

    @rule(dt=st.sampled_from([0.0, 1.0, 5.0, 10.0]) | st.floats(0, 15))
    def normal_exit(self, dt: float) -> None:
        self._exit(dt, False, 1.0)

    @invariant()
    def tracker_is_bounded_and_consistent(self) -> None:
        assert self.tracker.policy is self.policy
        assert len(self.tracker.restarts) <= self.policy.max_restarts
        assert list(self.tracker.restarts) == sorted(self.tracker.restarts)
        # Every restart the tracker remembers was granted by the model too.
        assert set(self.tracker.restarts) <= set(self.model.granted)


TestTrackerVsModel = TrackerVsModel.TestCase
