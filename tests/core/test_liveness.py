"""Heartbeats and deadlines of a run (``netra_actors._core._liveness``).

A run is ``dead`` at ``last_beat + heartbeat_timeout`` and ``timeout`` at
``started_at + run_timeout``; the deadline spans all attempts and ``timeout`` wins ties.
"""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from netra_actors._core import Liveness, LivenessPolicy, Verdict
from netra_actors._exceptions import ConfigError

POLICY = LivenessPolicy(heartbeat_timeout=10.0, run_timeout=100.0)
T0 = 1000.0

# ------------------------------------------------------------------------------- validation


def test_defaults() -> None:
    p = LivenessPolicy()
    assert p.heartbeat_timeout == 30.0
    assert p.run_timeout == 600.0


def test_verdict_wire_names() -> None:
    assert [v.value for v in Verdict] == ["timeout", "dead"]


@pytest.mark.parametrize("field", ["heartbeat_timeout", "run_timeout"])
@pytest.mark.parametrize(
    "value", [0, 0.0, -0.0, -1.0, -1e-9, math.nan, math.inf, -math.inf], ids=repr
)
def test_policy_rejects_bad_values(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        LivenessPolicy(**{field: value})


@pytest.mark.parametrize("field", ["heartbeat_timeout", "run_timeout"])
@pytest.mark.parametrize("value", [None, 1e-9, 0.5, 1, 1e9], ids=repr)
def test_policy_accepts_positive_or_none(field: str, value: float | None) -> None:
    assert getattr(LivenessPolicy(**{field: value}), field) == value


def test_policy_evolve_validates() -> None:
    with pytest.raises(ConfigError):
        attrs.evolve(POLICY, heartbeat_timeout=0.0)


# ---------------------------------------------------------------------------------- verdict


def test_start() -> None:
    live = Liveness.start(POLICY, T0)
    assert live == Liveness(policy=POLICY, started_at=T0, last_beat=T0)
    assert live.deadline == T0 + 100.0
    assert live.heartbeat_deadline == T0 + 10.0
    assert live.next_check() == T0 + 10.0


def test_none_before_the_limits() -> None:
    live = Liveness.start(POLICY, T0)
    for now in [T0 - 50.0, T0, T0 + 5.0, math.nextafter(T0 + 10.0, 0.0)]:
        assert live.verdict(now) is None


def test_dead_at_exactly_last_beat_plus_heartbeat_timeout() -> None:
    live = Liveness.start(POLICY, T0)
    assert live.verdict(math.nextafter(T0 + 10.0, 0.0)) is None
    assert live.verdict(T0 + 10.0) is Verdict.DEAD
    assert live.verdict(T0 + 50.0) is Verdict.DEAD


def test_timeout_at_started_at_plus_run_timeout() -> None:
    live = Liveness.start(LivenessPolicy(heartbeat_timeout=None, run_timeout=100.0), T0)
    assert live.verdict(math.nextafter(T0 + 100.0, 0.0)) is None
    assert live.verdict(T0 + 100.0) is Verdict.TIMEOUT
    assert live.verdict(T0 + 1e6) is Verdict.TIMEOUT


def test_timeout_wins_ties() -> None:
    live = Liveness.start(LivenessPolicy(heartbeat_timeout=10.0, run_timeout=10.0), T0)
    assert live.verdict(math.nextafter(T0 + 10.0, 0.0)) is None
    assert live.verdict(T0 + 10.0) is Verdict.TIMEOUT
    # And past both limits, whichever came first.
    assert Liveness.start(POLICY, T0).verdict(T0 + 500.0) is Verdict.TIMEOUT


def test_beats_push_the_heartbeat_deadline_but_not_the_run_deadline() -> None:
    live = Liveness.start(POLICY, T0)
    live = live.beat(T0 + 5.0)
    assert live.heartbeat_deadline == T0 + 15.0
    assert live.deadline == T0 + 100.0
    assert live.verdict(T0 + 10.0) is None
    assert live.verdict(T0 + 15.0) is Verdict.DEAD

    live = Liveness.start(POLICY, T0)
    for k in range(1, 40):
        live = live.beat(T0 + 5.0 * k)  # a steady heartbeat, past the run deadline
        assert live.deadline == T0 + 100.0
    assert live.verdict(T0 + 99.0) is None
    assert live.verdict(T0 + 100.0) is Verdict.TIMEOUT


def test_beat_returns_a_new_value() -> None:
    live = Liveness.start(POLICY, T0)
    later = live.beat(T0 + 1.0)
    assert live.last_beat == T0
    assert later.last_beat == T0 + 1.0
    assert later.started_at == T0


@pytest.mark.parametrize("offset", [0.0, -1.0, -1e6])
def test_beat_with_an_older_or_equal_time_is_a_no_op(offset: float) -> None:
    live = Liveness.start(POLICY, T0).beat(T0 + 5.0)
    assert live.beat(T0 + 5.0 + offset) == live
    assert live.beat(T0 + 5.0 + offset).heartbeat_deadline == T0 + 15.0


def test_restarted_resets_the_heartbeat_clock_not_the_deadline() -> None:
    live = Liveness.start(POLICY, T0)
    assert live.verdict(T0 + 50.0) is Verdict.DEAD
    again = live.restarted(T0 + 50.0)
    assert again.started_at == T0
    assert again.last_beat == T0 + 50.0
    assert again.deadline == T0 + 100.0
    assert again.heartbeat_deadline == T0 + 60.0
    assert again.verdict(T0 + 55.0) is None
    assert again.verdict(T0 + 60.0) is Verdict.DEAD
    # A restart does not buy more time.
    assert again.restarted(T0 + 95.0).verdict(T0 + 100.0) is Verdict.TIMEOUT


def test_restarted_never_moves_the_beat_back() -> None:
    live = Liveness.start(POLICY, T0).beat(T0 + 8.0)
    assert live.restarted(T0 + 3.0).last_beat == T0 + 8.0


def test_disabled_limits() -> None:
    no_hb = Liveness.start(LivenessPolicy(heartbeat_timeout=None, run_timeout=100.0), T0)
    assert no_hb.heartbeat_deadline is None
    assert no_hb.verdict(T0 + 99.0) is None
    assert no_hb.next_check() == T0 + 100.0

    no_run = Liveness.start(LivenessPolicy(heartbeat_timeout=10.0, run_timeout=None), T0)
    assert no_run.deadline is None
    assert no_run.verdict(T0 + 1e9) is Verdict.DEAD
    assert no_run.next_check() == T0 + 10.0

    neither = Liveness.start(LivenessPolicy(heartbeat_timeout=None, run_timeout=None), T0)
    assert neither.next_check() is None
    assert neither.verdict(T0 + 1e12) is None
    assert neither.verdict(math.inf) is None


def test_next_check_is_the_earlier_deadline() -> None:
    live = Liveness.start(POLICY, T0)
    assert live.next_check() == T0 + 10.0
    live = live.beat(T0 + 95.0)
    assert live.next_check() == T0 + 100.0  # the run deadline is now the nearer one


# ------------------------------------------------------------------------------- properties

timeouts = st.none() | st.sampled_from([1.0, 10.0, 30.0]) | st.floats(1e-3, 1e4)
# A step is ("beat", dt) or ("restart", dt); dt may be negative (an out-of-order beat).
steps = st.lists(
    st.tuples(st.sampled_from(["beat", "restart"]), st.floats(-50.0, 50.0)),
    max_size=30,
)


@given(
    heartbeat_timeout=timeouts,
    run_timeout=timeouts,
    start=st.floats(-1e6, 1e6),
    steps=steps,
    fractions=st.lists(st.floats(0.0, 1.0, exclude_max=True), max_size=10),
)
def test_verdict_is_none_before_next_check_and_set_at_it(
    heartbeat_timeout: float | None,
    run_timeout: float | None,
    start: float,
    steps: list[tuple[str, float]],
    fractions: list[float],
) -> None:
    policy = LivenessPolicy(heartbeat_timeout=heartbeat_timeout, run_timeout=run_timeout)
    live = Liveness.start(policy, start)
    now = start
    for kind, dt in steps:
        now += dt
        before = live
        live = live.beat(now) if kind == "beat" else live.restarted(now)
        # The run deadline never moves; the heartbeat deadline never moves back.
        assert live.started_at == start
        assert live.deadline == before.deadline
        assert live.last_beat == max(before.last_beat, now)
        if kind == "beat" and now <= before.last_beat:
            assert live == before

    check = live.next_check()
    if check is None:
        assert heartbeat_timeout is None
        assert run_timeout is None
        for t in [now, now + 1e9, math.inf]:
            assert live.verdict(t) is None
        return

    expected = Verdict.TIMEOUT if check == live.deadline else Verdict.DEAD
    assert live.verdict(check) is expected
    assert live.verdict(math.nextafter(check, math.inf)) is not None
    assert live.verdict(math.nextafter(check, -math.inf)) is None
    for f in fractions:
        t = start - 1e6 + f * (check - (start - 1e6))
        if t < check:
            assert live.verdict(t) is None
