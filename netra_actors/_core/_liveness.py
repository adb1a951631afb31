"""Heartbeat and deadline policy of a run. Pure: ``now`` is always an argument.

* A run whose current attempt has not shown a sign of life for ``heartbeat_timeout`` seconds is
  ``dead``. Every operation an agent performs through its context counts as a heartbeat.
* A run still live ``run_timeout`` seconds after it started is ``timeout`` (the deadline spans all
  attempts: a restart does not buy more time).

When both apply at the same instant, ``timeout`` wins: it is the more specific diagnosis.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import attrs

from .._exceptions import ConfigError


def _positive_or_none(_inst: object, attr: attrs.Attribute[Any], v: float | None) -> None:
    if v is not None and not (v > 0 and math.isfinite(v)):
        raise ConfigError(f"{attr.name} must be a finite number > 0 or None, got {v!r}")


class Verdict(enum.StrEnum):
    """Why a run must end although its agent has not."""

    TIMEOUT = "timeout"
    DEAD = "dead"


@attrs.frozen(kw_only=True)
class LivenessPolicy:
    """Limits that apply to every run of an agent. ``None`` disables a limit."""

    heartbeat_timeout: float | None = attrs.field(default=30.0, validator=_positive_or_none)
    """Seconds without a heartbeat after which the run is ``dead``."""
    run_timeout: float | None = attrs.field(default=600.0, validator=_positive_or_none)
    """Seconds after the run started after which it is ``timeout``."""


@attrs.frozen(kw_only=True)
class Liveness:
    """What is known about a run's liveness, as an immutable value."""

    policy: LivenessPolicy
    started_at: float
    """When the run started (its first attempt)."""
    last_beat: float
    """The last sign of life of the current attempt."""

    @classmethod
    def start(cls, policy: LivenessPolicy, now: float) -> Liveness:
        """A run that starts now."""
        return cls(policy=policy, started_at=now, last_beat=now)

    def beat(self, now: float) -> Liveness:
        """A sign of life at ``now`` (a heartbeat or any context operation)."""
        if now <= self.last_beat:
            return self
        return attrs.evolve(self, last_beat=now)

    def restarted(self, now: float) -> Liveness:
        """A new attempt starts at ``now``: the heartbeat clock restarts, the deadline does not."""
        return attrs.evolve(self, last_beat=max(now, self.last_beat))

    @property
    def deadline(self) -> float | None:
        """When the run times out, or ``None``."""
        t = self.policy.run_timeout
        return None if t is None else self.started_at + t

    @property
    def heartbeat_deadline(self) -> float | None:
        """When the current attempt is declared dead without a further beat, or ``None``."""
        t = self.policy.heartbeat_timeout
        return None if t is None else self.last_beat + t

    def verdict(self, now: float) -> Verdict | None:
        """``timeout``, ``dead`` or ``None`` (still fine) at ``now``."""
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            return Verdict.TIMEOUT
        hb = self.heartbeat_deadline
        if hb is not None and now >= hb:
            return Verdict.DEAD
        return None

    def next_check(self) -> float | None:
        """The earliest time at which :meth:`verdict` can change without a further beat."""
        times = [t for t in (self.deadline, self.heartbeat_deadline) if t is not None]
        return min(times) if times else None
