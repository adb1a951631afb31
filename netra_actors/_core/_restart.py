"""Supervised restart, OTP style: restart types, intensity (max restarts in a window), backoff.

Pure: every decision takes ``now`` (seconds, any monotonic origin) as an argument.

A child's exit is either *normal* (it returned) or *abnormal* (it crashed). The restart type says
what follows (as in Erlang/OTP supervisors):

* ``permanent`` — always restarted, even after a normal exit;
* ``transient`` — restarted only after an abnormal exit (the default for agent runs);
* ``temporary`` — never restarted.

Intensity: more than ``max_restarts`` restarts within ``window`` seconds means the child is
beyond saving, and the supervisor *escalates* (for a run: it ends ``failed``).

Backoff before restart *n* (1-based) is ``min(backoff_max, backoff_initial * factor ** (n-1))``,
optionally scaled by a jitter factor that the caller supplies (so tests stay deterministic).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import attrs

from .._exceptions import ConfigError


class RestartType(enum.StrEnum):
    """When a child is restarted."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


def _restart_type(value: str) -> RestartType:
    try:
        return RestartType(value)
    except ValueError:
        names = ", ".join(t.value for t in RestartType)
        raise ConfigError(f"restart must be one of {names}, got {value!r}") from None


def _non_negative(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"{attr.name} must be a finite number >= 0, got {value!r}")


def _max_restarts_ok(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"max_restarts must be an integer >= 0, got {value!r}")


def _factor_ok(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if not (value >= 1 and math.isfinite(value)):
        raise ConfigError(f"backoff_factor must be a finite number >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class RestartPolicy:
    """How a supervisor restarts a child. Validated at construction."""

    restart: RestartType = attrs.field(default=RestartType.TRANSIENT, converter=_restart_type)
    """permanent / transient / temporary."""
    max_restarts: int = attrs.field(default=3, validator=_max_restarts_ok)
    """At most this many restarts within ``window`` seconds; one more escalates."""
    window: float = attrs.field(default=60.0, validator=_non_negative)
    """The intensity window, in seconds."""
    backoff_initial: float = attrs.field(default=0.1, validator=_non_negative)
    """Delay before the first restart, in seconds."""
    backoff_factor: float = attrs.field(default=2.0, validator=_factor_ok)
    """Each further restart waits this many times longer."""
    backoff_max: float = attrs.field(default=5.0, validator=_non_negative)
    """Upper bound of the delay, in seconds."""

    def backoff(self, restart_number: int, *, jitter: float = 1.0) -> float:
        """The delay before restart ``restart_number`` (1-based), times ``jitter``."""
        if restart_number < 1:
            raise ValueError("restart_number is 1-based")
        try:
            growth = float(self.backoff_factor) ** (restart_number - 1)
        except OverflowError:  # the number or the result is too large for a float
            growth = 1.0 if self.backoff_factor == 1 else math.inf
        delay = self.backoff_initial * growth if self.backoff_initial else 0.0
        return min(self.backoff_max, delay) * jitter


@attrs.frozen(kw_only=True)
class Restart:
    """Decision: restart the child after ``delay`` seconds; it is restart number ``number``."""

    delay: float
    number: int


@attrs.frozen(kw_only=True)
class Stop:
    """Decision: do not restart; the child's exit was final and expected by its type."""


@attrs.frozen(kw_only=True)
class Escalate:
    """Decision: restart intensity exceeded (or the type forbids a restart after a crash)."""

    reason: str


Decision = Restart | Stop | Escalate


@attrs.frozen(kw_only=True)
class RestartTracker:
    """The restart history of one child, as an immutable value.

    ``decide`` returns the decision and the tracker to keep for next time.
    """

    policy: RestartPolicy
    restarts: tuple[float, ...] = ()
    """The times of the restarts granted so far."""

    def decide(
        self, *, now: float, crashed: bool, jitter: float = 1.0
    ) -> tuple[Decision, RestartTracker]:
        """Decide what follows an exit at ``now``. ``crashed`` is False for a normal exit."""
        policy = self.policy
        if policy.restart is RestartType.TEMPORARY or (
            policy.restart is RestartType.TRANSIENT and not crashed
        ):
            if crashed:
                return Escalate(reason="temporary child crashed"), self
            return Stop(), self
        recent = _within(self.restarts, now, policy.window)
        if len(recent) >= policy.max_restarts:
            return (
                Escalate(reason=f"more than {policy.max_restarts} restarts in {policy.window:g}s"),
                attrs.evolve(self, restarts=recent),
            )
        number = len(recent) + 1
        return (
            Restart(delay=policy.backoff(number, jitter=jitter), number=number),
            attrs.evolve(self, restarts=(*recent, now)),
        )


def _within(times: Sequence[float], now: float, window: float) -> tuple[float, ...]:
    return tuple(t for t in times if now - t < window)
