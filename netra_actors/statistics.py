"""The snapshots the runtime reports: frozen values, read at one instant.

``runtime.statistics()`` returns a ``RuntimeStatistics``; its ``store`` field is the store's
``StoreStatistics``. ``subscription.statistics()``, ``runtime.resilience.statistics()`` (with a
``DependencyStatistics`` per declared dependency) and ``runtime.get_runs(user_id)`` (a
``RunsSnapshot``) report the rest. Latency distributions are ``HistogramSnapshot`` values with
fixed buckets; a circuit breaker's state is a ``BreakerState``. ``/metrics`` exports the same
numbers.
"""

from ._core._resilience import BreakerState as BreakerState
from ._histogram import HistogramSnapshot as HistogramSnapshot
from ._resilience import DependencyStatistics as DependencyStatistics
from ._resilience import ResilienceStatistics as ResilienceStatistics
from ._runs import RunsSnapshot as RunsSnapshot
from ._statistics import RuntimeStatistics as RuntimeStatistics
from ._store import StoreStatistics as StoreStatistics
from ._subscription import SubscriptionStatistics as SubscriptionStatistics

__all__ = [
    "BreakerState",
    "DependencyStatistics",
    "HistogramSnapshot",
    "ResilienceStatistics",
    "RunsSnapshot",
    "RuntimeStatistics",
    "StoreStatistics",
    "SubscriptionStatistics",
]
