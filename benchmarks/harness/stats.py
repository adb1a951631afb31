"""Statistics of a measurement: percentiles, medians of the repeats, rates, ratios, thinning.

:func:`median_rows` turns the repeats into the reported rows: the median of every numeric field,
booleans only true if true in every repeat.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    k = (len(data) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (k - lo))


def median_rows(runs: Sequence[Sequence[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """Merge the rows of several repeats by ``key``: numbers become their median.

    Booleans are true only if true in every repeat (a check must hold every time); other values
    are taken from the first repeat.
    """
    order: list[Any] = []
    groups: dict[Any, list[dict[str, Any]]] = {}
    for rows in runs:
        for row in rows:
            k = row[key]
            if k not in groups:
                order.append(k)
                groups[k] = []
            groups[k].append(row)
    merged = []
    for k in order:
        group = groups[k]
        out: dict[str, Any] = {}
        for field in group[0]:
            values = [r[field] for r in group if field in r]
            first = values[0]
            if isinstance(first, bool):
                out[field] = all(values)
            elif field == key:
                out[field] = first
            elif isinstance(first, int | float) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            ):
                med = statistics.median(values)
                out[field] = int(med) if all(isinstance(v, int) for v in values) else med
            else:
                out[field] = first
        merged.append(out)
    return merged


def rate(count: float, seconds: float) -> float:
    """``count / seconds`` (0 when no time passed)."""
    return count / seconds if seconds > 0 else 0.0


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``; None if either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def latency_ms(samples: Sequence[float]) -> dict[str, float]:
    """``p50_ms`` and ``p99_ms`` of latencies in seconds."""
    return {"p50_ms": percentile(samples, 50) * 1000, "p99_ms": percentile(samples, 99) * 1000}


def thin(samples: list[T], most: int) -> list[T]:
    """At most ``most`` of ``samples``, evenly strided (all of them if there are few enough)."""
    if len(samples) <= most:
        return samples
    step = len(samples) / most
    return [samples[int(i * step)] for i in range(most)]
