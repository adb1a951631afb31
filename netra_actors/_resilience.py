"""Retries and circuit breakers of the runtime's dependencies: the runtime-owned side.

One :class:`Resilience` exists per runtime, built from ``RuntimeConfig.dependencies`` and shared by
every user: a circuit breaker protects a dependency for everyone, so one user's failing calls
make every user's calls to it fail fast while it is open. The policies themselves are pure values
in :mod:`netra_actors._core._resilience`; this module runs calls under them.

A call (:meth:`Resilience.call` from trio, :meth:`Resilience.call_sync` from a thread):

1. asks the breaker for admission before *each* attempt; a refusal raises
   :class:`~netra_actors.exceptions.CircuitOpenError` at once (no call, no sleep);
2. runs ``fn(**kwargs)`` (awaiting the result if it is awaitable); in :meth:`~Resilience.call`
   under ``RetryPolicy.timeout`` (an attempt past it raises
   :class:`~netra_actors.exceptions.DependencyTimeoutError` inside, and counts as a failure);
3. on a failure, if attempts remain and the error is retryable, sleeps
   ``RetryPolicy.delay(n, rand=rand())`` and tries again — unless the breaker is open for longer
   than that sleep, in which case it fails fast now instead of sleeping first.

**How a call ends.** Success returns ``(result, attempts_made)``. Failure always raises a
:class:`~netra_actors.exceptions.DependencyError` that carries the attempt count, so that the caller can
record it (``tool_completed.attempts``) without inspecting foreign exceptions:

* :class:`~netra_actors.exceptions.DependencyFailedError` — the last attempt failed and no retry is left, or
  its error was not retryable; ``attempts`` and ``last_error`` (also ``__cause__``: the tool's own
  exception, or a ``DependencyTimeoutError``);
* :class:`~netra_actors.exceptions.CircuitOpenError` — the breaker refused an attempt; ``attempts`` made
  before it (``0`` when the first was refused), ``last_error`` (``None`` then), ``retry_after``.

Undeclared names behave as ``Dependency(name)`` (one attempt, no breaker: what ``ctx.tool`` did
before), and their failures are wrapped the same way, with ``attempts == 1``. They are not counted
in :meth:`~Resilience.statistics` (metric labels stay bounded by configuration).

**Never retried, never counted**: ``BaseException`` that is not an ``Exception``
(``trio.Cancelled``, ``KeyboardInterrupt``, a ``BaseExceptionGroup`` holding them) and
:class:`~netra_actors.exceptions.RunFencedError` (also inside an ``ExceptionGroup``) propagate unchanged; an
admitted half-open probe that ends this way frees its slot. **Not retried, but the dependency
answered**: :class:`~netra_actors.exceptions.RunFailedError`, and any exception for which the caller's
``retryable`` predicate returns False (e.g. an HTTP 400 from a model API): the call ends at once
with ``DependencyFailedError``, and for the breaker the attempt is a success.

**Threads and timeouts.** :meth:`~Resilience.call_sync` is for threaded agents: it blocks,
sleeps with ``time.sleep`` and calls ``check`` (the threaded context's fence check) before every
attempt. ``RetryPolicy.timeout`` is **not enforced** there: Python cannot stop a thread, and
running the attempt in a helper thread that is abandoned on timeout would leave the tool's side
effects running while its retry starts (a second charge, a second e-mail) and let hung threads
pile up without bound. Give a blocking client its own timeout (every HTTP SDK has one); the run's
deadline and heartbeat still bound the run. In :meth:`~Resilience.call` a sync ``fn`` runs on the
event loop, so the timeout can only interrupt what it awaits.

**One time base.** The breakers' times come from the ``clock`` given to :class:`Resilience`
(default ``time.monotonic``), whichever thread calls: mixing ``trio.current_time`` (which has a
random offset) with ``time.monotonic`` in one breaker would corrupt its windows. Tests of async
calls under ``trio.testing.MockClock`` pass ``clock=trio.current_time``. Backoff sleeps and
timeouts are durations and use the caller's own sleep (``trio.sleep``/``time.sleep``).

Breaker state and the counters are guarded by one ``threading.Lock``, held only for the
bookkeeping (never across a call or a sleep), so trio tasks and threads share breakers safely.
"""

from __future__ import annotations

import inspect
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

from ._core._resilience import Breaker, BreakerState, Dependency, RetryPolicy, dependency_map
from ._exceptions import (
    CircuitOpenError,
    DependencyFailedError,
    DependencyTimeoutError,
    RunFailedError,
    RunFencedError,
)

__all__ = [
    "DependencyStatistics",
    "Resilience",
    "ResilienceStatistics",
]


@attrs.frozen(kw_only=True)
class DependencyStatistics:
    """Counters of one declared dependency since the runtime started."""

    state: BreakerState
    """The breaker's state (``closed`` when it has no breaker). An open breaker whose reset
    timeout has passed still reads ``open`` until the next call is admitted as a probe."""
    has_breaker: bool
    calls: int
    """Calls started (one call may make several attempts)."""
    successes: int
    """Calls that returned a result."""
    failures: int
    """Attempts that failed (raised or timed out)."""
    retries: int
    """Attempts after the first one of their call."""
    fast_failures: int
    """Attempts refused by an open (or fully probed half-open) breaker."""
    opened_total: int
    """How often the breaker opened (including re-opening after a failed probe)."""


@attrs.frozen(kw_only=True)
class ResilienceStatistics:
    """A snapshot of every declared dependency's counters."""

    dependencies: Mapping[str, DependencyStatistics]


class _Entry:
    """One declared dependency's breaker and counters (guarded by ``Resilience._lock``)."""

    __slots__ = (
        "breaker",
        "calls",
        "dependency",
        "failures",
        "fast_failures",
        "opened_total",
        "retries",
        "successes",
    )

    def __init__(self, dependency: Dependency) -> None:
        self.dependency = dependency
        self.breaker = Breaker(policy=dependency.breaker) if dependency.breaker else None
        self.calls = 0
        self.successes = 0
        self.failures = 0
        self.retries = 0
        self.fast_failures = 0
        self.opened_total = 0


def _passes_through(exc: BaseException) -> bool:
    """Errors that end the call unchanged: cancellation, interpreter exit, a fenced attempt."""
    if not isinstance(exc, Exception) or isinstance(exc, RunFencedError):
        return True
    if isinstance(exc, ExceptionGroup):
        return exc.subgroup(RunFencedError) is not None
    return False


def _retryable_default(exc: Exception) -> bool:
    return not isinstance(exc, RunFailedError)


async def _invoke(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


class Resilience:
    """Runs calls to dependencies under their retry and breaker policies. One per runtime."""

    def __init__(
        self,
        dependencies: Mapping[str, Dependency] | Iterable[Dependency] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries = {name: _Entry(dep) for name, dep in dependency_map(dependencies).items()}
        self._clock = clock
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ queries

    def dependency(self, name: str) -> Dependency:
        """The declaration of ``name``, or ``Dependency(name)`` if it is not declared."""
        entry = self._entries.get(name)
        return entry.dependency if entry is not None else Dependency(name)

    def breaker(self, name: str) -> Breaker | None:
        """The current breaker value of ``name`` (``None``: undeclared, or no breaker)."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        with self._lock:
            return entry.breaker

    def statistics(self) -> ResilienceStatistics:
        """Every declared dependency's breaker state and counters, taken atomically."""
        with self._lock:
            stats = {
                name: DependencyStatistics(
                    state=e.breaker.state if e.breaker is not None else BreakerState.CLOSED,
                    has_breaker=e.breaker is not None,
                    calls=e.calls,
                    successes=e.successes,
                    failures=e.failures,
                    retries=e.retries,
                    fast_failures=e.fast_failures,
                    opened_total=e.opened_total,
                )
                for name, e in self._entries.items()
            }
        return ResilienceStatistics(dependencies=stats)

    # -------------------------------------------------------------------------------- calls

    async def call(
        self,
        name: str,
        fn: Callable[..., Any],
        kwargs: Mapping[str, Any],
        *,
        retryable: Callable[[Exception], bool] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> tuple[Any, int]:
        """Run ``fn(**kwargs)`` (sync or async) as a call to dependency ``name`` from trio.

        Returns ``(result, attempts_made)``; raises ``DependencyFailedError`` or
        ``CircuitOpenError`` (see the module docstring). ``retryable(exc)`` False ends the call
        at the first such error; ``rand`` supplies the jitter (tests make it constant).
        """
        entry = self._entries.get(name)
        if entry is None:
            try:
                return await _invoke(fn, kwargs), 1
            except Exception as exc:
                if _passes_through(exc):
                    raise
                raise DependencyFailedError(name, 1, exc) from exc
        policy = entry.dependency.retry
        timeout = policy.timeout
        self._started(entry)
        attempt = 0
        last: BaseException | None = None
        while True:
            attempt += 1
            self._admit(entry, attempt, last)
            try:
                if timeout is None:
                    result = await _invoke(fn, kwargs)
                else:
                    with trio.move_on_after(timeout) as scope:
                        result = await _invoke(fn, kwargs)
                    if scope.cancelled_caught:
                        raise DependencyTimeoutError(name, timeout)
            except BaseException as exc:
                delay = self._failed(entry, exc, attempt, policy, retryable, rand)
                last = exc
                await trio.sleep(delay)
                continue
            self._succeeded(entry)
            return result, attempt

    def call_sync(
        self,
        name: str,
        fn: Callable[..., Any],
        kwargs: Mapping[str, Any],
        *,
        retryable: Callable[[Exception], bool] | None = None,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
        check: Callable[[], None] | None = None,
    ) -> tuple[Any, int]:
        """:meth:`call` for a thread (a threaded agent): blocks, and never enforces
        ``RetryPolicy.timeout`` (see the module docstring). ``check()`` runs before every
        attempt; it raises to stop (the threaded context's ``RunFencedError``)."""
        entry = self._entries.get(name)
        if entry is None:
            if check is not None:
                check()
            try:
                return fn(**kwargs), 1
            except Exception as exc:
                if _passes_through(exc):
                    raise
                raise DependencyFailedError(name, 1, exc) from exc
        policy = entry.dependency.retry
        self._started(entry)
        attempt = 0
        last: BaseException | None = None
        while True:
            attempt += 1
            if check is not None:
                check()
            self._admit(entry, attempt, last)
            try:
                result = fn(**kwargs)
            except BaseException as exc:
                delay = self._failed(entry, exc, attempt, policy, retryable, rand)
                last = exc
                sleep(delay)
                continue
            self._succeeded(entry)
            return result, attempt

    # ------------------------------------------------------------------------- bookkeeping

    def _started(self, entry: _Entry) -> None:
        with self._lock:
            entry.calls += 1

    def _admit(self, entry: _Entry, attempt: int, last: BaseException | None) -> None:
        """Count the attempt, or raise ``CircuitOpenError`` if the breaker refuses it."""
        with self._lock:
            breaker = entry.breaker
            if breaker is not None:
                now = self._clock()
                admitted, entry.breaker = breaker.admit(now)
                if not admitted:
                    entry.fast_failures += 1
                    error = self._open_error(entry, breaker, now, attempt - 1, last)
                else:
                    error = None
            else:
                error = None
            if error is None and attempt > 1:
                entry.retries += 1
        if error is not None:
            raise error from last

    def _succeeded(self, entry: _Entry) -> None:
        with self._lock:
            entry.successes += 1
            if entry.breaker is not None:
                entry.breaker = entry.breaker.succeeded(self._clock())

    def _failed(
        self,
        entry: _Entry,
        exc: BaseException,
        attempt: int,
        policy: RetryPolicy,
        retryable: Callable[[Exception], bool] | None,
        rand: Callable[[], float],
    ) -> float:
        """Record a failed attempt; return the delay before the next, or raise how it ends."""
        name = entry.dependency.name
        if _passes_through(exc):
            with self._lock:
                if entry.breaker is not None:
                    entry.breaker = entry.breaker.abandoned(self._clock())
            raise exc
        assert isinstance(exc, Exception)
        if isinstance(exc, DependencyTimeoutError) and exc.dependency == name:
            can_retry = True
        else:
            can_retry = (retryable or _retryable_default)(exc)
        retrying = can_retry and attempt < policy.attempts
        delay = policy.delay(attempt, rand=rand()) if retrying else 0.0
        with self._lock:
            entry.failures += 1
            breaker = entry.breaker
            error: BaseException | None = None
            if breaker is not None:
                now = self._clock()
                was_open = breaker.state is BreakerState.OPEN
                breaker = breaker.failed(now) if can_retry else breaker.succeeded(now)
                entry.breaker = breaker
                if breaker.state is BreakerState.OPEN and not was_open:
                    entry.opened_total += 1
                if retrying and breaker.state is BreakerState.OPEN:
                    wait = breaker.retry_after(now)
                    if wait is not None and wait > delay:
                        # the next attempt would be refused after the sleep: fail fast now
                        entry.fast_failures += 1
                        error = self._open_error(entry, breaker, now, attempt, exc)
        if error is not None:
            raise error from exc
        if not retrying:
            raise DependencyFailedError(name, attempt, exc) from exc
        return delay

    @staticmethod
    def _open_error(
        entry: _Entry, breaker: Breaker, now: float, attempts: int, last: BaseException | None
    ) -> CircuitOpenError:
        wait = breaker.retry_after(now)
        return CircuitOpenError(
            entry.dependency.name,
            wait if wait is not None else 0.0,
            failures=breaker.opened_after,
            attempts=attempts,
            last_error=last,
        )
