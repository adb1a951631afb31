"""The runtime's statistics: :class:`RuntimeStatistics`, a snapshot of its counters and gauges.

Read by ``Runtime.statistics()`` (``/healthz`` and ``/metrics`` export it): the gauges are counted
over the active users at the moment of the call, the counters come from the sessions' shared
:class:`~._deps.Counters`.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ._deps import SupervisorDeps
from ._follower import UserFollower
from ._histogram import HistogramSnapshot
from ._roles import ActiveUser
from ._store import StoreStatistics
from ._supervisor import UserSupervisor


@attrs.frozen(kw_only=True)
class RuntimeStatistics:
    """A snapshot of the runtime."""

    active_sessions: int
    """Users with an active supervisor."""
    live_runs: int
    subscriptions: int
    """Open socket mailboxes."""
    mailbox_depth_max: int
    """The fullest supervisor mailbox right now."""
    runs_started: int
    runs_ended: dict[str, int]
    restarts: int
    rollbacks: int
    events_delivered: int
    commit_to_mailbox: HistogramSnapshot
    """Delay from an event's commit to its hand-off to the user's socket mailboxes."""
    threads_live: int
    """Threads of threaded agents that have not ended (abandoned ones included)."""
    threads_abandoned: int
    """Threads still running code for an attempt that is over (cancellation ignored)."""
    threads_waiting: int
    """Threaded runs waiting for a free thread."""
    store: StoreStatistics
    node: str | None = None
    """This process's name in the cluster (None: a store without leases)."""
    owned_users: int = 0
    """Users whose lease this node holds (their supervisor runs here)."""
    followed_users: int = 0
    """Users with sockets here whose owner is another node."""
    forwarded_pending: int = 0
    """Commands posted to other nodes' inboxes, waiting for the answer."""
    hints_sent: int = 0
    """Hints this node sent the other nodes of a SQLite cluster (a command posted to their
    inbox, an answer written for them; one datagram per batch of names)."""
    relay_dropped: int = 0
    """Deltas of provisional text not relayed to the other nodes (the relay's backlog was full
    or a send failed): their sockets there stop that message until its committed text."""
    relay_refused: int = 0
    """Payloads from other nodes refused as garbled (relayed deltas or hints)."""
    fenced_units: int = 0
    """Units this node could not commit: another node had taken the user over."""
    follow_lag: HistogramSnapshot | None = None
    """From an event's commit (on another node) to its hand-off to this node's sockets."""
    attempts: int = 0
    """Attempts running now: a run waiting for an answer, a timer or its start holds none."""


def runtime_statistics(users: Sequence[ActiveUser], deps: SupervisorDeps) -> RuntimeStatistics:
    """The statistics of a runtime whose active users are ``users`` right now."""
    c = deps.counters
    return RuntimeStatistics(
        active_sessions=len(users),
        live_runs=sum(len(u.supervisor.runs) for u in users),
        subscriptions=sum(sum(1 for sub in u.supervisor.subs if not sub.closed) for u in users),
        mailbox_depth_max=max((u.send.statistics().current_buffer_used for u in users), default=0),
        runs_started=c.runs_started,
        runs_ended=dict(c.runs_ended),
        restarts=c.restarts,
        rollbacks=c.rollbacks,
        events_delivered=c.events_delivered,
        commit_to_mailbox=c.commit_to_mailbox.snapshot(),
        threads_live=c.threads.live,
        threads_abandoned=c.threads.abandoned,
        threads_waiting=deps.threads.statistics().tasks_waiting,
        store=deps.store.statistics(),
        node=getattr(deps.store, "node", None) if deps.leases is not None else None,
        owned_users=sum(1 for u in users if isinstance(u.supervisor, UserSupervisor)),
        followed_users=sum(1 for u in users if isinstance(u.supervisor, UserFollower)),
        forwarded_pending=deps.cluster.pending,
        hints_sent=deps.cluster.hints.sent if deps.cluster.hints is not None else 0,
        relay_dropped=deps.cluster.relay_dropped,
        relay_refused=deps.cluster.relay_refused
        + (deps.cluster.hints.refused if deps.cluster.hints is not None else 0),
        fenced_units=c.fenced,
        follow_lag=c.follow_lag.snapshot(),
        attempts=sum(
            u.supervisor.session.attempts()
            for u in users
            if isinstance(u.supervisor, UserSupervisor)
        ),
    )
