"""Retries and circuit breakers for the dependencies agents call (tools, model APIs). Pure.

One declaration per dependency (:class:`Dependency`) says how calls to it are retried
(:class:`RetryPolicy`) and whether a circuit breaker protects it (:class:`BreakerPolicy`). The
runtime owns the only copy (``RuntimeConfig.dependencies``; ``netra_actors._resilience`` runs
the calls), so there is exactly one configuration of each dependency in a process.

Nothing here reads a clock or a random source: ``now`` (seconds, any monotonic origin) and
``rand`` (a float in ``[0, 1)``) are arguments, so every decision is deterministic.

Backoff before retry *n* (1-based: retry 1 follows attempt 1) is
``min(backoff_max, backoff_initial * backoff_factor ** (n - 1))`` times a jitter factor
``1 - jitter + 2 * jitter * rand``, which lies in ``[1 - jitter, 1 + jitter)``. As in
:class:`~netra_actors._core.RestartPolicy`, the jitter applies after the cap, so a delay may reach
``backoff_max * (1 + jitter)``.

The breaker (:class:`Breaker`, an immutable value)::

    closed ──(failure_threshold failures within window)──► open
    open ──(an admit at least reset_timeout after opening)──► half_open (that call is a probe)
    half_open ──(a probe succeeds)──► closed        half_open ──(a probe fails)──► open

* ``closed`` admits every call. A failure at ``t`` counts at ``now`` while ``now - t < window``;
  successes do not reset the count (it is a rate over the window, not a streak).
* ``open`` admits nothing (callers fail fast) until ``reset_timeout`` has passed since it opened.
* ``half_open`` admits at most ``half_open_probes`` calls at once. The first probe to succeed
  closes the breaker (forgetting past failures), the first to fail re-opens it (the reset timer
  starts again). A probe that ends with no verdict (cancelled) frees its slot: :meth:`abandoned`.
* A result that arrives in a state that did not admit it (a call admitted while ``closed`` that
  ends after the breaker opened) changes nothing while ``open``; while ``half_open`` it counts
  like a probe's result (it is evidence of the dependency's health all the same).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._exceptions import ConfigError
from .._validate import positive, positive_int


def _non_negative(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not (
        isinstance(value, int | float) and value >= 0 and math.isfinite(value)
    ):
        raise ConfigError(f"{attr.name} must be a finite number >= 0, got {value!r}")


def _factor_ok(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not (
        isinstance(value, int | float) and value >= 1 and math.isfinite(value)
    ):
        raise ConfigError(f"{attr.name} must be a finite number >= 1, got {value!r}")


def _jitter_ok(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, int | float) and 0 <= value <= 1):
        raise ConfigError(f"{attr.name} must be a number in [0, 1], got {value!r}")


def _timeout_ok(inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None:
        positive(inst, attr, value)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How calls to one dependency are retried. Validated at construction."""

    attempts: int = attrs.field(default=1, validator=positive_int)
    """Total tries of one call, the first included: ``1`` means no retry."""
    backoff_initial: float = attrs.field(default=0.2, validator=_non_negative)
    """Delay before the first retry, in seconds."""
    backoff_factor: float = attrs.field(default=2.0, validator=_factor_ok)
    """Each further retry waits this many times longer."""
    backoff_max: float = attrs.field(default=5.0, validator=_non_negative)
    """Upper bound of the delay before jitter, in seconds."""
    jitter: float = attrs.field(default=0.2, validator=_jitter_ok)
    """The delay is multiplied by a factor in ``[1 - jitter, 1 + jitter)`` (``0``: none)."""
    timeout: float | None = attrs.field(default=None, validator=_timeout_ok)
    """Seconds one attempt may take (``None``: no limit). An attempt past it counts as a failure.
    Enforced for async calls only (see ``netra_actors._resilience``)."""

    def base_delay(self, retry_number: int) -> float:
        """The delay before retry ``retry_number`` (1-based) without jitter."""
        if retry_number < 1:
            raise ValueError("retry_number is 1-based")
        if not self.backoff_initial:
            return 0.0
        try:
            growth = float(self.backoff_factor) ** (retry_number - 1)
        except OverflowError:  # the number or the result is too large for a float
            growth = 1.0 if self.backoff_factor == 1 else math.inf
        return float(min(self.backoff_max, self.backoff_initial * growth))

    def delay(self, retry_number: int, *, rand: float) -> float:
        """The delay before retry ``retry_number`` (1-based), jittered by ``rand`` in [0, 1)."""
        if not 0 <= rand < 1:
            raise ValueError(f"rand must be in [0, 1), got {rand!r}")
        factor = 1.0 - self.jitter + 2.0 * self.jitter * rand
        return self.base_delay(retry_number) * factor


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """When a circuit breaker opens and how it tries the dependency again."""

    failure_threshold: int = attrs.field(default=5, validator=positive_int)
    """This many failures within ``window`` seconds open the breaker."""
    window: float = attrs.field(default=30.0, validator=positive)
    """The failure-counting window, in seconds."""
    reset_timeout: float = attrs.field(default=10.0, validator=_non_negative)
    """Seconds an open breaker fails fast before it lets a probe through (half-open)."""
    half_open_probes: int = attrs.field(default=1, validator=positive_int)
    """Calls admitted at once while half-open; one success closes, one failure re-opens."""


def _name_ok(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ConfigError(
            f"a dependency name must be a non-empty string without surrounding space, got {value!r}"
        )


def _retry_ok(_inst: object, _attr: attrs.Attribute[Any], value: RetryPolicy) -> None:
    if not isinstance(value, RetryPolicy):
        raise ConfigError(f"retry must be a RetryPolicy, got {value!r}")


def _breaker_ok(_inst: object, _attr: attrs.Attribute[Any], value: BreakerPolicy | None) -> None:
    if value is not None and not isinstance(value, BreakerPolicy):
        raise ConfigError(f"breaker must be a BreakerPolicy or None, got {value!r}")


@attrs.frozen
class Dependency:
    """One dependency (a tool or a model API) and its policies. ``Dependency(name)``: one
    attempt, no breaker — what an undeclared name gets."""

    name: str = attrs.field(validator=_name_ok)
    """The name calls use: the tool name of ``ctx.tool(name, ...)``, or a model API's name."""
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, validator=_retry_ok, kw_only=True)
    """How a failed call is retried."""
    breaker: BreakerPolicy | None = attrs.field(default=None, validator=_breaker_ok, kw_only=True)
    """The circuit breaker shared by every caller of this dependency, or ``None``."""


class BreakerState(enum.StrEnum):
    """Where a circuit breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def _within(times: tuple[float, ...], now: float, window: float) -> tuple[float, ...]:
    return tuple(t for t in times if now - t < window)


@attrs.frozen(kw_only=True)
class Breaker:
    """A circuit breaker as an immutable value: every method returns the breaker to keep."""

    policy: BreakerPolicy
    state: BreakerState = BreakerState.CLOSED
    failures: tuple[float, ...] = ()
    """While closed: the times of the failures still within the window."""
    opened_at: float | None = None
    """While open or half-open: when it (last) opened."""
    opened_after: int = 0
    """While open or half-open: the failures since it was last closed (for messages)."""
    probes: int = 0
    """While half-open: probes admitted whose result has not arrived."""

    def admit(self, now: float) -> tuple[bool, Breaker]:
        """May a call start at ``now``? ``False`` means fail fast without calling."""
        if self.state is BreakerState.CLOSED:
            return True, self
        if self.state is BreakerState.OPEN:
            assert self.opened_at is not None
            if now - self.opened_at < self.policy.reset_timeout:
                return False, self
            return True, attrs.evolve(self, state=BreakerState.HALF_OPEN, probes=1)
        if self.probes < self.policy.half_open_probes:
            return True, attrs.evolve(self, probes=self.probes + 1)
        return False, self

    def succeeded(self, now: float) -> Breaker:
        """A call ended well at ``now`` (the dependency answered)."""
        if self.state is BreakerState.HALF_OPEN:
            return Breaker(policy=self.policy)
        return self

    def failed(self, now: float) -> Breaker:
        """A call failed at ``now`` (raised, or ran past its timeout)."""
        if self.state is BreakerState.OPEN:
            return self
        if self.state is BreakerState.HALF_OPEN:
            return attrs.evolve(
                self,
                state=BreakerState.OPEN,
                opened_at=now,
                opened_after=self.opened_after + 1,
                probes=0,
            )
        recent = (*_within(self.failures, now, self.policy.window), now)
        if len(recent) >= self.policy.failure_threshold:
            return attrs.evolve(
                self,
                state=BreakerState.OPEN,
                failures=(),
                opened_at=now,
                opened_after=len(recent),
            )
        return attrs.evolve(self, failures=recent)

    def abandoned(self, now: float) -> Breaker:
        """An admitted call ended with no verdict (it was cancelled): free its probe slot."""
        if self.state is BreakerState.HALF_OPEN and self.probes > 0:
            return attrs.evolve(self, probes=self.probes - 1)
        return self

    def retry_after(self, now: float) -> float | None:
        """``None`` if a call would be admitted at ``now``; else the seconds to wait.

        While half-open with every probe in flight the wait depends on the probes' results; the
        answer then is ``reset_timeout``, the wait if a probe failed right now.
        """
        if self.state is BreakerState.CLOSED:
            return None
        if self.state is BreakerState.OPEN:
            assert self.opened_at is not None
            remaining = self.opened_at + self.policy.reset_timeout - now
            return remaining if remaining > 0 else None
        if self.probes < self.policy.half_open_probes:
            return None
        return self.policy.reset_timeout


def dependency_map(
    dependencies: Mapping[str, Dependency] | Iterable[Dependency],
) -> dict[str, Dependency]:
    """``dependencies`` as a dict keyed by name (a mapping's keys must equal the names)."""
    value: object = dependencies  # checked at run time: config may come from anywhere
    items: list[tuple[object, object]] = []
    if isinstance(value, Mapping):
        items.extend(value.items())
    elif isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(
            f"dependencies must be a mapping of names to Dependency values (or a list of "
            f"them), got {value!r}"
        )
    else:
        for dep in value:
            if not isinstance(dep, Dependency):
                raise ConfigError(f"dependencies must be Dependency values, got {dep!r}")
            items.append((dep.name, dep))
    result: dict[str, Dependency] = {}
    for key, dep in items:
        if not isinstance(dep, Dependency):
            raise ConfigError(f"dependencies[{key!r}] must be a Dependency, got {dep!r}")
        if key != dep.name:
            raise ConfigError(f"dependencies[{key!r}] is named {dep.name!r}: key and name differ")
        if dep.name in result:
            raise ConfigError(f"dependency {dep.name!r} is declared twice")
        result[dep.name] = dep
    return result
