"""A fixed-bucket latency histogram: bounded memory, cheap to observe, Prometheus-shaped."""

from __future__ import annotations

import bisect

import attrs

#: Upper bounds (seconds) from 0.1 ms to 10 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@attrs.frozen(kw_only=True)
class HistogramSnapshot:
    """Counts per bucket (cumulative, as Prometheus exposes them), sum and count."""

    buckets: tuple[tuple[float, int], ...]
    """``(upper bound, observations <= bound)``; the last bound is ``inf``."""
    sum: float
    count: int

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` (None when empty)."""
        if not self.count:
            return None
        rank = q * self.count
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                return bound
        return self.buckets[-1][0]


class Histogram:
    """Observations counted into fixed buckets (``LATENCY_BUCKETS`` by default)."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        """The cumulative counts so far."""
        cumulative = []
        running = 0
        for bound, n in zip((*self._bounds, float("inf")), self._counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return HistogramSnapshot(buckets=tuple(cumulative), sum=self._sum, count=running)
