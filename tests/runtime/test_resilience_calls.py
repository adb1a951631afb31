"""Calls under retry and circuit-breaker policies (``netra_actors._resilience``).

Async calls run on trio's virtual clock (pytest-trio's ``autojump_clock``:
``MockClock(autojump_threshold=0)``) with the breakers on the same clock
(``Resilience(..., clock=trio.current_time)``), so every assertion names exact virtual times.
``call_sync`` runs in real threads with an injected ``sleep`` that records the backoff.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from netra_actors._core._resilience import BreakerPolicy, BreakerState, Dependency, RetryPolicy
from netra_actors._exceptions import (
    AgentError,
    CircuitOpenError,
    DependencyError,
    DependencyFailedError,
    DependencyTimeoutError,
    RunFailedError,
    RunFencedError,
)
from netra_actors._resilience import Resilience
from netra_actors.gateway._metrics import _ResilienceCollector


def retry(attempts: int, **kw: Any) -> RetryPolicy:
    kw.setdefault("backoff_initial", 1.0)
    kw.setdefault("jitter", 0.0)
    return RetryPolicy(attempts=attempts, **kw)


def resilience(*deps: Dependency) -> Resilience:
    return Resilience(deps, clock=trio.current_time)


class Flaky:
    """Fails ``failures`` times, then returns ``"ok"``; records the (virtual) time of each call."""

    def __init__(self, failures: int, exc: Callable[[], Exception] = lambda: ValueError("boom")):
        self.failures = failures
        self.exc = exc
        self.times: list[float] = []

    async def __call__(self, **kwargs: Any) -> str:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(self.times) <= self.failures:
            raise self.exc()
        return "ok"


def stats(r: Resilience, name: str) -> dict[str, Any]:
    s = r.statistics().dependencies[name]
    return {
        "state": s.state,
        "calls": s.calls,
        "successes": s.successes,
        "failures": s.failures,
        "retries": s.retries,
        "fast_failures": s.fast_failures,
        "opened_total": s.opened_total,
    }


def test_exception_tree() -> None:
    for cls in (DependencyFailedError, CircuitOpenError, DependencyTimeoutError):
        assert issubclass(cls, DependencyError)
    assert issubclass(DependencyError, AgentError)


# ------------------------------------------------------------------------------- retries


async def test_retries_at_exact_backoff_times(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("search", retry=retry(4)))
    fn = Flaky(3)
    t0 = trio.current_time()
    result, attempts = await r.call("search", fn, {"q": "x"})
    assert (result, attempts) == ("ok", 4)
    assert [t - t0 for t in fn.times] == [0.0, 1.0, 3.0, 7.0]
    assert stats(r, "search") == {
        "state": BreakerState.CLOSED,
        "calls": 1,
        "successes": 1,
        "failures": 3,
        "retries": 3,
        "fast_failures": 0,
        "opened_total": 0,
    }


async def test_jitter_comes_from_rand(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("m", retry=retry(3, jitter=0.5)))
    fn = Flaky(2)
    t0 = trio.current_time()
    assert await r.call("m", fn, {}, rand=lambda: 0.75) == ("ok", 3)
    assert [t - t0 for t in fn.times] == [0.0, 1.25, 1.25 + 2.5]


async def test_kwargs_reach_a_sync_fn(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("add", retry=retry(2)))
    assert await r.call("add", lambda a, b: a + b, {"a": 1, "b": 2}) == (3, 1)


async def test_exhausted_raises_the_last_error_with_the_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors = iter([ValueError("first"), KeyError("second"), OSError("third")])
    r = resilience(Dependency("db", retry=retry(3)))
    fn = Flaky(10, exc=lambda: next(errors))
    t0 = trio.current_time()
    with pytest.raises(DependencyFailedError) as info:
        await r.call("db", fn, {})
    assert trio.current_time() - t0 == 3.0  # slept 1 + 2; no sleep after the last attempt
    err = info.value
    assert err.attempts == 3
    assert err.dependency == "db"
    assert isinstance(err.last_error, OSError)
    assert err.__cause__ is err.last_error
    assert str(err) == "'db' failed after 3 attempts: OSError: third"
    assert stats(r, "db")["failures"] == 3
    assert stats(r, "db")["successes"] == 0


async def test_undeclared_name_is_one_attempt(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience()
    fn = Flaky(1)
    with pytest.raises(DependencyFailedError) as info:
        await r.call("anything", fn, {})
    assert info.value.attempts == 1
    assert str(info.value) == "'anything' failed after 1 attempt: ValueError: boom"
    assert await r.call("anything", fn, {}) == ("ok", 1)
    assert r.statistics().dependencies == {}  # undeclared names are not tracked
    assert r.dependency("anything") == Dependency("anything")


async def test_not_retryable_errors_end_the_call_and_do_not_trip_the_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dep = Dependency("llm", retry=retry(5), breaker=BreakerPolicy(failure_threshold=1))
    r = resilience(dep)
    with pytest.raises(DependencyFailedError) as info:
        await r.call("llm", Flaky(5), {}, retryable=lambda e: not isinstance(e, ValueError))
    assert info.value.attempts == 1
    with pytest.raises(DependencyFailedError) as info:
        await r.call("llm", Flaky(5, exc=lambda: RunFailedError("refused")), {})
    assert info.value.attempts == 1
    assert stats(r, "llm")["state"] is BreakerState.CLOSED
    assert stats(r, "llm")["failures"] == 2
    # a retryable error does trip it (threshold 1), and the call then fails fast
    with pytest.raises(CircuitOpenError):
        await r.call("llm", Flaky(5, exc=lambda: OSError("503")), {})
    assert stats(r, "llm")["state"] is BreakerState.OPEN


# ------------------------------------------------------------------------------ timeouts


async def test_per_attempt_timeout(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("slow", retry=retry(2, timeout=2.0)))
    times: list[float] = []

    async def hang() -> None:
        times.append(trio.current_time())
        await trio.sleep_forever()

    t0 = trio.current_time()
    with pytest.raises(DependencyFailedError) as info:
        await r.call("slow", hang, {})
    assert [t - t0 for t in times] == [0.0, 3.0]  # 2 s timeout, 1 s backoff
    assert trio.current_time() - t0 == 5.0
    assert info.value.attempts == 2
    timeout = info.value.last_error
    assert isinstance(timeout, DependencyTimeoutError)
    assert timeout.timeout == 2.0
    assert str(timeout) == "'slow' did not answer within 2 s"


async def test_timeout_then_success(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("slow", retry=retry(3, timeout=2.0)))
    durations = iter([5.0, 1.5])

    async def answer() -> str:
        await trio.sleep(next(durations))
        return "late but fine"

    t0 = trio.current_time()
    assert await r.call("slow", answer, {}) == ("late but fine", 2)
    assert trio.current_time() - t0 == 2.0 + 1.0 + 1.5


async def test_a_timeout_counts_against_the_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = resilience(
        Dependency("x", retry=retry(1, timeout=1.0), breaker=BreakerPolicy(failure_threshold=1))
    )
    with pytest.raises(DependencyFailedError):
        await r.call("x", trio.sleep_forever, {})
    assert stats(r, "x")["state"] is BreakerState.OPEN


async def test_the_tools_own_too_slow_error_is_not_our_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = resilience(Dependency("x", retry=retry(1, timeout=10.0)))

    async def inner_timeout() -> None:
        with trio.fail_after(1):
            await trio.sleep_forever()

    with pytest.raises(DependencyFailedError) as info:
        await r.call("x", inner_timeout, {})
    assert isinstance(info.value.last_error, trio.TooSlowError)


# ------------------------------------------------------------------------------- breaker


BREAKER = BreakerPolicy(failure_threshold=2, window=30.0, reset_timeout=10.0)


async def open_it(r: Resilience, name: str) -> None:
    for _ in range(2):
        with pytest.raises(DependencyFailedError):
            await r.call(name, Flaky(1), {})


async def test_fail_fast_while_open(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("api", breaker=BREAKER))
    await open_it(r, "api")
    assert stats(r, "api")["state"] is BreakerState.OPEN
    await trio.sleep(4.0)
    fn = Flaky(0)
    t0 = trio.current_time()
    with pytest.raises(CircuitOpenError) as info:
        await r.call("api", fn, {})
    assert trio.current_time() == t0  # no call, no sleep
    assert fn.times == []
    err = info.value
    assert (err.retry_after, err.failures, err.attempts, err.last_error) == (6.0, 2, 0, None)
    assert str(err) == "the circuit breaker for 'api' is open after 2 failures; retry in 6.0 s"
    assert stats(r, "api") == {
        "state": BreakerState.OPEN,
        "calls": 3,
        "successes": 0,
        "failures": 2,
        "retries": 0,
        "fast_failures": 1,
        "opened_total": 1,
    }


async def test_half_open_probe_success_closes(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("api", breaker=BREAKER))
    await open_it(r, "api")
    await trio.sleep(10.0)
    assert await r.call("api", Flaky(0), {}) == ("ok", 1)
    assert stats(r, "api")["state"] is BreakerState.CLOSED
    # the failures before are forgotten: one more failure does not re-open it
    with pytest.raises(DependencyFailedError):
        await r.call("api", Flaky(1), {})
    assert stats(r, "api")["state"] is BreakerState.CLOSED


async def test_half_open_probe_failure_reopens(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("api", breaker=BREAKER))
    await open_it(r, "api")
    await trio.sleep(10.0)
    with pytest.raises(DependencyFailedError):
        await r.call("api", Flaky(1), {})
    assert stats(r, "api")["state"] is BreakerState.OPEN
    assert stats(r, "api")["opened_total"] == 2
    await trio.sleep(9.5)
    with pytest.raises(CircuitOpenError) as info:
        await r.call("api", Flaky(0), {})
    assert info.value.retry_after == 0.5
    assert info.value.failures == 3
    await trio.sleep(0.5)
    assert await r.call("api", Flaky(0), {}) == ("ok", 1)


async def test_only_one_probe_while_half_open(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("api", breaker=BREAKER))
    await open_it(r, "api")
    await trio.sleep(10.0)
    results: list[Any] = []

    async def probe() -> None:
        async def slow() -> str:
            await trio.sleep(5)
            return "probe ok"

        results.append(await r.call("api", slow, {}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.sleep(1)
        with pytest.raises(CircuitOpenError) as info:
            await r.call("api", Flaky(0), {})
        assert info.value.retry_after == 10.0  # the wait if the probe failed now
        assert stats(r, "api")["state"] is BreakerState.HALF_OPEN
    assert results == [("probe ok", 1)]
    assert stats(r, "api")["state"] is BreakerState.CLOSED


async def test_breaker_opening_during_retries_fails_fast(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = resilience(Dependency("api", retry=retry(5), breaker=BREAKER))
    fn = Flaky(10)
    t0 = trio.current_time()
    with pytest.raises(CircuitOpenError) as info:
        await r.call("api", fn, {})
    # attempt 1 at 0, attempt 2 at 1 opens the breaker: its 10 s exceed the 2 s backoff, so the
    # call ends now instead of sleeping into a refusal
    assert [t - t0 for t in fn.times] == [0.0, 1.0]
    assert trio.current_time() - t0 == 1.0
    err = info.value
    assert (err.attempts, err.retry_after, err.failures) == (2, 10.0, 2)
    assert isinstance(err.last_error, ValueError)
    assert err.__cause__ is err.last_error
    assert stats(r, "api")["retries"] == 1
    assert stats(r, "api")["fast_failures"] == 1


async def test_breaker_is_shared_by_every_caller(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("api", breaker=BREAKER))

    async def user(failing: bool) -> None:
        with pytest.raises(DependencyFailedError):
            await r.call("api", Flaky(1 if failing else 0), {})

    await user(True)
    await user(True)
    with pytest.raises(CircuitOpenError):  # another user, another call: same breaker
        await r.call("api", Flaky(0), {"user": "someone else"})


# -------------------------------------------------------------------------- cancellation


async def test_cancellation_is_never_retried_or_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = resilience(Dependency("api", retry=retry(5), breaker=BREAKER))
    calls: list[float] = []

    async def hang() -> None:
        calls.append(trio.current_time())
        await trio.sleep_forever()

    with trio.move_on_after(3):
        await r.call("api", hang, {})
    assert len(calls) == 1
    s = stats(r, "api")
    assert (s["failures"], s["retries"], s["successes"], s["calls"]) == (0, 0, 0, 1)


async def test_cancelled_backoff_sleep(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("api", retry=retry(5, backoff_initial=10.0)))
    fn = Flaky(10)
    with trio.move_on_after(5) as scope:
        await r.call("api", fn, {})
    assert scope.cancelled_caught
    assert len(fn.times) == 1


async def test_cancelled_probe_frees_the_slot(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("api", breaker=BREAKER))
    await open_it(r, "api")
    await trio.sleep(10.0)
    with trio.move_on_after(1):
        await r.call("api", trio.sleep_forever, {})
    assert stats(r, "api")["state"] is BreakerState.HALF_OPEN
    assert await r.call("api", Flaky(0), {}) == ("ok", 1)  # a new probe was admitted
    assert stats(r, "api")["state"] is BreakerState.CLOSED


async def test_run_fenced_passes_through(autojump_clock: trio.testing.MockClock) -> None:
    r = resilience(Dependency("api", retry=retry(5)))
    fn = Flaky(10, exc=lambda: RunFencedError("over"))
    with pytest.raises(RunFencedError):
        await r.call("api", fn, {})
    assert len(fn.times) == 1
    assert stats(r, "api")["failures"] == 0

    async def grouped() -> None:
        raise ExceptionGroup("g", [RunFencedError("over")])

    with pytest.raises(ExceptionGroup):
        await r.call("api", grouped, {})
    with pytest.raises(RunFencedError):
        await resilience().call("undeclared", fn, {})


# ------------------------------------------------------------------------------- threads


def test_call_sync_from_a_real_thread() -> None:
    r = Resilience([Dependency("sdk", retry=retry(4, jitter=0.5))])
    slept: list[float] = []
    calls: list[str] = []
    out: list[Any] = []

    def blocking(x: int) -> int:
        calls.append(threading.current_thread().name)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return x * 2

    def worker() -> None:
        out.append(r.call_sync("sdk", blocking, {"x": 21}, sleep=slept.append, rand=lambda: 0.0))

    t = threading.Thread(target=worker, name="agent-thread")
    t.start()
    t.join(10)
    assert out == [(42, 3)]
    assert calls == ["agent-thread"] * 3
    assert slept == [0.5, 1.0]
    assert stats(r, "sdk")["retries"] == 2


def test_call_sync_real_sleep_and_breaker() -> None:
    r = Resilience(
        [
            Dependency(
                "sdk",
                retry=RetryPolicy(attempts=2, backoff_initial=0.01, jitter=0),
                breaker=BreakerPolicy(failure_threshold=2, reset_timeout=0.05),
            )
        ]
    )

    def fail() -> None:
        raise OSError("down")

    t0 = time.monotonic()
    with pytest.raises(DependencyFailedError) as info:
        r.call_sync("sdk", fail, {})
    assert time.monotonic() - t0 >= 0.01
    assert info.value.attempts == 2
    with pytest.raises(CircuitOpenError) as refused:
        r.call_sync("sdk", fail, {})
    assert refused.value.attempts == 0
    time.sleep(0.06)
    assert r.call_sync("sdk", lambda: "back", {}) == ("back", 1)
    assert stats(r, "sdk")["state"] is BreakerState.CLOSED


def test_call_sync_check_stops_retrying() -> None:
    r = Resilience([Dependency("sdk", retry=retry(5))])
    fenced = threading.Event()
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        fenced.set()
        raise OSError("down")

    def check() -> None:
        if fenced.is_set():
            raise RunFencedError("over")

    with pytest.raises(RunFencedError):
        r.call_sync("sdk", fn, {}, sleep=lambda _: None, check=check)
    assert calls == 1


def test_call_sync_undeclared_wraps_and_passes_fence() -> None:
    r = Resilience()
    assert r.call_sync("x", lambda: 1, {}) == (1, 1)
    with pytest.raises(DependencyFailedError):
        r.call_sync("x", lambda: 1 / 0, {})

    def fenced() -> None:
        raise RunFencedError("over")

    with pytest.raises(RunFencedError):
        r.call_sync("x", fenced, {})


def test_threads_share_a_breaker_consistently() -> None:
    r = Resilience([Dependency("sdk", breaker=BreakerPolicy(failure_threshold=50))])
    barrier = threading.Barrier(8)

    def fail() -> None:
        raise OSError("down")

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            with contextlib.suppress(DependencyFailedError, CircuitOpenError):
                r.call_sync("sdk", fail, {})

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    s = stats(r, "sdk")
    assert s["calls"] == 400
    # at least the threshold got through (calls admitted before the 50th failure was recorded
    # may fail later), every other call failed fast, and the breaker opened once
    assert s["failures"] >= 50
    assert s["failures"] + s["fast_failures"] == 400
    assert s["state"] is BreakerState.OPEN
    assert s["opened_total"] == 1


# ------------------------------------------------------------------------------- metrics


def test_metrics_collector() -> None:
    class FakeRuntime:
        resilience = Resilience(
            [Dependency("a", breaker=BreakerPolicy(failure_threshold=1)), Dependency("b")]
        )

    rt = FakeRuntime()
    with pytest.raises(DependencyFailedError):
        rt.resilience.call_sync("a", lambda: 1 / 0, {})
    with pytest.raises(CircuitOpenError):
        rt.resilience.call_sync("a", lambda: 1, {})
    rt.resilience.call_sync("b", lambda: 1, {})
    samples = {
        (s.name, s.labels["dependency"]): s.value
        for family in _ResilienceCollector(rt).collect()  # type: ignore[arg-type]
        for s in family.samples
    }
    assert samples[("netra_dependency_breaker_state", "a")] == 2
    assert samples[("netra_dependency_breaker_state", "b")] == 0
    assert samples[("netra_dependency_calls_total", "a")] == 2
    assert samples[("netra_dependency_calls_total", "b")] == 1
    assert samples[("netra_dependency_failures_total", "a")] == 1
    assert samples[("netra_dependency_rejected_total", "a")] == 1
    assert samples[("netra_dependency_retries_total", "a")] == 0
    assert samples[("netra_dependency_breaker_opened_total", "a")] == 1
    assert list(_ResilienceCollector(object()).collect()) == []  # type: ignore[arg-type]
