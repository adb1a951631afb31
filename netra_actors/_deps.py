"""What every user's session shares with its runtime: dependencies, and the counters it adds to."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._agent import AgentRegistry
from ._cluster import Cluster
from ._config import RuntimeConfig
from ._core._session import SessionRules
from ._deadlines import Deadlines
from ._histogram import Histogram
from ._resilience import Resilience
from ._tracing import Tracing

if TYPE_CHECKING:
    from ._store import ClusterStore, Store


class ThreadCounters:
    """What the threaded children count (the runtime's statistics read it)."""

    __slots__ = ("abandoned", "abandoned_total", "live")

    def __init__(self) -> None:
        self.live = 0
        """Threads that have not ended yet (abandoned ones included)."""
        self.abandoned = 0
        """Threads still running code for an attempt that is over."""
        self.abandoned_total = 0


@attrs.define
class Counters:
    """Process-wide counters the sessions add to (read by metrics and statistics)."""

    runs_started: int = 0
    restarts: int = 0
    rollbacks: int = 0
    events_delivered: int = 0
    runs_ended: dict[str, int] = attrs.field(factory=dict)
    threads: ThreadCounters = attrs.field(factory=ThreadCounters)
    fenced: int = 0
    """Units this node could not commit because another node took the user over."""
    follow_lag: Histogram = attrs.field(factory=Histogram)
    """From a commit on another node to its hand-off to a follower's sockets here."""
    commit_to_mailbox: Histogram = attrs.field(factory=Histogram)
    """Delay from an event's commit to its hand-off to the socket mailboxes."""


def session_rules(config: RuntimeConfig) -> SessionRules:
    """The bounds and defaults of the session's rules, from the runtime's configuration."""
    return SessionRules(
        if_busy=config.if_busy,
        max_live_runs=config.max_live_runs_per_user,
        max_inputs=config.max_inputs_per_run,
        max_input_chars=config.max_event_bytes,
        max_waiters=config.max_waiters_per_run,
        idle_timeout=config.idle_timeout,
        store_retries=config.store_retries,
    )


@attrs.frozen(kw_only=True)
class SupervisorDeps:
    """What every session shares with the runtime."""

    config: RuntimeConfig
    store: Store
    agents: AgentRegistry
    counters: Counters
    threads: trio.CapacityLimiter
    """Caps the threads of threaded agents across all users."""
    deadlines: Deadlines
    """The timer wheel that wakes sessions at their deadline."""
    resilience: Resilience
    """Retry and circuit-breaker state of every dependency (one per runtime)."""
    cluster: Cluster
    """Requests to other nodes, the inbox and following (see ``_cluster.py``)."""
    leases: ClusterStore | None = None
    """The store, when it holds leases (the SQL store): then several nodes may share it."""
    tracer: Callable[[str, str, Any], None] | None = None
    """Test hook: called as ``tracer(user_id, what, detail)`` at key points."""
    tracing: Tracing | None = None
    """OpenTelemetry spans (``RuntimeConfig.tracing``; None: off)."""
    rules: SessionRules = attrs.field(
        default=attrs.Factory(lambda self: session_rules(self.config), takes_self=True)
    )
    """The session's rules, from ``config``."""
