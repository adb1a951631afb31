"""Prometheus metrics of the gateway and its runtime, on a private registry.

Gateway metrics are updated where things happen (sockets, frames, errors, closes, the
commit→socket latency of each live event). Runtime figures are read from
:meth:`Runtime.statistics` at scrape time by :class:`_RuntimeCollector`, so they cost nothing
between scrapes.

Every histogram is a :class:`netra_actors._histogram.Histogram` (one implementation, no lock),
exported at scrape time by a collector. What is counted per frame or per event (frames in and
out, events out, the commit→socket latency) is a plain ``int`` or that histogram on
:class:`GatewayMetrics`, exported by :class:`_GatewayCollector`: ``prometheus_client``'s
``Counter`` and ``Histogram`` take a lock on every update, and the gateway updates these only
from its trio thread (the scrape too), so no lock is needed. Per-socket and per-request figures
(opened, closes, errors, HTTP requests) stay ``prometheus_client`` counters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .._core._resilience import BreakerState
from .._histogram import Histogram, HistogramSnapshot
from .._resilience import ResilienceStatistics
from .._runtime import Runtime

CONTENT_TYPE = CONTENT_TYPE_LATEST


def fullest_mailbox(connections: Iterable[object]) -> int:
    """Events waiting in the fullest socket mailbox of ``connections`` (each may have a
    ``subscription``): the ``netra_socket_mailbox_depth`` gauge."""
    depth = 0
    for conn in connections:
        sub = getattr(conn, "subscription", None)
        if sub is not None:
            depth = max(depth, sub.statistics().buffered)
    return depth


class _RuntimeCollector:
    """Reads the runtime's statistics at scrape time."""

    def __init__(self, runtime: Runtime, socket_depth: Callable[[], int]) -> None:
        self._runtime = runtime
        self._socket_depth = socket_depth

    def collect(self) -> Iterable[Metric]:
        s = self._runtime.statistics()
        store = s.store

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield gauge("netra_sessions_active", "Users with an active supervisor.", s.active_sessions)
        yield gauge(
            "netra_subscriptions", "Open socket mailboxes (subscriptions).", s.subscriptions
        )
        runs = GaugeMetricFamily(
            "netra_runs", "Runs by state: live now, or ended so far.", labels=["state"]
        )
        runs.add_metric(["live"], s.live_runs)
        for state, count in sorted(s.runs_ended.items()):
            runs.add_metric([state], count)
        yield runs
        yield counter("netra_runs_started", "Runs started.", s.runs_started)
        ended = CounterMetricFamily(
            "netra_runs_ended", "Runs ended, by final state.", labels=["state"]
        )
        for state, count in sorted(s.runs_ended.items()):
            ended.add_metric([state], count)
        yield ended
        yield counter("netra_restarts", "Supervised restarts of runs.", s.restarts)
        yield counter("netra_rollbacks", "Units of work rolled back.", s.rollbacks)
        yield counter(
            "netra_events_committed", "Events committed to the store.", store.events_committed
        )
        yield counter(
            "netra_events_delivered", "Events handed to socket mailboxes.", s.events_delivered
        )
        yield counter("netra_store_batches", "Group commits attempted.", store.batches)
        yield counter(
            "netra_store_units_committed", "Units of work committed.", store.units_committed
        )
        yield counter(
            "netra_store_units_failed", "Units of work that failed to commit.", store.units_failed
        )
        yield gauge("netra_store_queue_depth", "Units waiting for the store writer.", store.queued)
        yield gauge(
            "netra_store_last_commit_seconds",
            "Duration of the last group commit.",
            store.last_commit_seconds,
        )
        yield histogram(
            "netra_store_commit_seconds",
            "Duration of each group commit (one transaction) — the commit latency.",
            store.commit_seconds,
        )
        yield gauge(
            "netra_mailbox_depth_max",
            "The fullest supervisor mailbox right now.",
            s.mailbox_depth_max,
        )
        yield gauge(
            "netra_socket_mailbox_depth_max",
            "The fullest socket mailbox (events waiting for a socket) right now.",
            self._socket_depth(),
        )
        yield histogram(
            "netra_commit_to_mailbox_seconds",
            "From a unit's commit to the hand-off of its events to the socket mailboxes.",
            s.commit_to_mailbox,
        )
        if s.node is not None:
            yield gauge(
                "netra_leases_held", "Users whose lease this node holds.", store.leases_held
            )
            yield counter(
                "netra_leases_taken_over",
                "Leases this node took over from a node whose lease had expired.",
                store.leases_taken_over,
            )
            yield counter(
                "netra_leases_lost",
                "Leases this node found taken over by another node.",
                store.leases_lost,
            )
            yield gauge(
                "netra_lease_renewals_failing",
                "Consecutive failed bulk lease renewals (0 when healthy).",
                store.lease_renewals_failing,
            )
            yield counter(
                "netra_fenced_units",
                "Units refused because another node owns the user now (fencing).",
                store.fenced_units,
            )
            yield gauge(
                "netra_users_followed", "Users with sockets here owned elsewhere.", s.followed_users
            )
            yield gauge(
                "netra_inbox_pending",
                "Commands posted to other nodes' inboxes, waiting for their answer.",
                s.forwarded_pending,
            )
            yield counter(
                "netra_cluster_hints_sent",
                "Hints sent to the other nodes of a SQLite cluster (inbox posts, answers).",
                s.hints_sent,
            )
            yield counter(
                "netra_relay_deltas_dropped",
                "Deltas of provisional text not relayed to the other nodes (backlog full, send "
                "failed).",
                s.relay_dropped,
            )
            yield counter(
                "netra_relay_payloads_refused",
                "Payloads from other nodes refused as garbled (relayed deltas or hints).",
                s.relay_refused,
            )
            if s.follow_lag is not None:
                yield histogram(
                    "netra_cross_node_delivery_seconds",
                    "From an event's commit on another node to its hand-off to sockets here.",
                    s.follow_lag,
                )


BREAKER_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
"""``netra_dependency_breaker_state``: 0 closed, 1 half-open, 2 open."""


class _ResilienceCollector:
    """Per-dependency breaker state and call counters from ``runtime.resilience.statistics()``
    at scrape time (nothing is exported before the runtime has a ``resilience``)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterable[Metric]:
        resilience = getattr(self._runtime, "resilience", None)
        if resilience is None:
            return
        stats: ResilienceStatistics = resilience.statistics()
        state = GaugeMetricFamily(
            "netra_dependency_breaker_state",
            "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.",
            labels=["dependency"],
        )
        families = {
            "calls": CounterMetricFamily(
                "netra_dependency_calls",
                "Calls to a dependency (one call may make several attempts).",
                labels=["dependency"],
            ),
            "retries": CounterMetricFamily(
                "netra_dependency_retries",
                "Attempts after the first of their call (retries).",
                labels=["dependency"],
            ),
            "failures": CounterMetricFamily(
                "netra_dependency_failures",
                "Attempts that failed (raised or timed out).",
                labels=["dependency"],
            ),
            "fast_failures": CounterMetricFamily(
                "netra_dependency_rejected",
                "Attempts refused by an open circuit breaker (failed fast).",
                labels=["dependency"],
            ),
            "opened_total": CounterMetricFamily(
                "netra_dependency_breaker_opened",
                "Times the circuit breaker opened.",
                labels=["dependency"],
            ),
        }
        for name, dep in sorted(stats.dependencies.items()):
            state.add_metric([name], BREAKER_STATE_VALUE[dep.state])
            for field, family in families.items():
                family.add_metric([name], getattr(dep, field))
        yield state
        yield from families.values()


class _GatewayCollector:
    """Exports the gateway's per-frame and per-event figures at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        yield CounterMetricFamily(
            "netra_frames_received", "Client frames received.", value=m.frames_in
        )
        yield CounterMetricFamily("netra_frames_sent", "Server frames sent.", value=m.frames_out)
        yield CounterMetricFamily(
            "netra_events_sent", "Events sent to sockets.", value=m.events_out
        )
        yield histogram(
            "netra_commit_to_socket_seconds",
            "From an event's commit to its frame being written to a socket (live events).",
            m.commit_to_socket.snapshot(),
        )


def histogram(name: str, documentation: str, snap: HistogramSnapshot) -> Metric:
    """A :class:`~netra_actors._histogram.Histogram` snapshot as a Prometheus histogram family."""
    family = HistogramMetricFamily(name, documentation)
    family.add_metric(
        [],
        buckets=[("+Inf" if math.isinf(b) else repr(b), n) for b, n in snap.buckets],
        sum_value=snap.sum,
    )
    return family


class GatewayMetrics:
    """The gateway's collectors on a private :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sockets_open = Gauge("netra_sockets_open", "Open WebSocket connections.", registry=r)
        self.sockets_opened = Counter(
            "netra_sockets_opened", "WebSocket connections accepted.", registry=r
        )
        self.sessions_started = Counter(
            "netra_socket_sessions", "Sockets that completed hello/welcome.", registry=r
        )
        self.closes = Counter(
            "netra_socket_closes", "Sockets closed, by close code.", ["code"], registry=r
        )
        self.errors = Counter(
            "netra_command_errors", "Error frames sent, by code.", ["code"], registry=r
        )
        self.http_requests = Counter(
            "netra_http_requests",
            "HTTP requests, by route and status.",
            ["route", "status"],
            registry=r,
        )
        # Per frame / per event: plain values (trio thread only), exported by _GatewayCollector.
        self.frames_in = 0
        """Client frames received (``netra_frames_received_total``)."""
        self.frames_out = 0
        """Server frames sent (``netra_frames_sent_total``)."""
        self.events_out = 0
        """Events sent to sockets (``netra_events_sent_total``)."""
        self.commit_to_socket = Histogram()
        """From an event's commit to its frame on a socket (``netra_commit_to_socket_seconds``)."""
        r.register(_GatewayCollector(self))

    def attach_runtime(self, runtime: Runtime, socket_depth: Callable[[], int]) -> None:
        """Export the runtime's statistics too."""
        self.registry.register(_RuntimeCollector(runtime, socket_depth))
        self.registry.register(_ResilienceCollector(runtime))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
