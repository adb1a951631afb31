"""What the runtime needs from a store, as a protocol, and the values it returns."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple, Protocol

import attrs

from .._histogram import HistogramSnapshot
from .._uow import UnitOfWork
from .._values import JSON, Event, RunInfo


class ModelCall(NamedTuple):
    """A stored model call of a run (``netra_model_calls``), as recovery reads it back."""

    after_seq: int
    """The user's event it committed after: where it goes in the run's journal."""
    attempt: int
    step: int
    name: str
    request_sha256: str
    response: str


@attrs.frozen(kw_only=True)
class UserSnapshot:
    """What a supervisor loads on activation."""

    head_seq: int
    """The user's highest committed ``seq`` (0 for a new user)."""
    live_runs: tuple[RunInfo, ...]
    """Runs the store still has in a live state (left behind by a process that died)."""


@attrs.frozen(kw_only=True)
class ThreadInfo:
    """One thread of a user, as the ``threads`` page lists it."""

    thread: str
    title: str | None
    """The start of the thread's first user message (None: it has none yet)."""
    created_ts: float
    """When its first event committed (seconds since the epoch)."""
    last_seq: int
    """The ``seq`` of its last event."""
    last_ts: float
    """When its last event committed."""
    live_runs: int
    """Its runs that have not ended (queued ones included)."""

    def to_wire(self) -> dict[str, JSON]:
        """The element of a ``threads`` frame."""
        return {
            "thread": self.thread,
            "title": self.title,
            "created_ts": self.created_ts,
            "last_seq": self.last_seq,
            "last_ts": self.last_ts,
            "live_runs": self.live_runs,
        }


@attrs.frozen(kw_only=True)
class ThreadsPage:
    """A page of a user's threads, most recent activity first."""

    threads: tuple[ThreadInfo, ...]
    next: int | None
    """The cursor of the next page (pass it as ``before``); None: this is the last page."""


@attrs.frozen(kw_only=True)
class HistoryPage:
    """A page of committed events before a ``seq``, in ``seq`` order."""

    events: tuple[Event, ...]
    more: bool
    """Whether earlier events exist (ask again with ``before_seq`` = the first one's seq)."""

    @property
    def first_seq(self) -> int | None:
        """The seq of the page's first event (the next page's ``before_seq``), if any."""
        return self.events[0].seq if self.events else None


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """Counters of a store since it was opened."""

    batches: int
    """Group commits (transactions) attempted."""
    units_committed: int
    units_failed: int
    events_committed: int
    isolated_retries: int
    """Batches that failed whole and were retried unit by unit."""
    queued: int
    """Units waiting for the writer right now."""
    last_commit_seconds: float
    """Duration of the last group commit."""
    commit_seconds: HistogramSnapshot
    """Durations of every group commit (one transaction each)."""
    commits_failing: int = 0
    """Transactions failed in a row, with none committed since (0: the store commits). While
    it is not 0, ``/healthz`` answers 503."""
    last_commit_error: str | None = None
    """Why the last of those failed (None while the store commits)."""
    leases_held: int = 0
    """Users whose lease this node holds (acquired, not released, not found lost)."""
    leases_taken_over: int = 0
    """Acquisitions that took an expired, unreleased lease over from another node."""
    leases_lost: int = 0
    """Leases found lost (a fenced unit of work met another node or a newer epoch)."""
    lease_renewals: int = 0
    """Successful bulk renewals (one statement each, every ``lease_ttl / 3`` seconds)."""
    lease_renewals_failing: int = 0
    """Consecutive failed bulk renewals (0 once one succeeds)."""
    fenced_units: int = 0
    """Units of work refused because the lease row no longer said (this node, epoch)."""


@attrs.frozen(kw_only=True)
class InboxItem:
    """A command waiting in ``netra_inbox`` for the user's owner."""

    id: int
    """Its position: commands of a user are consumed in ``id`` order."""
    user_id: str
    request_id: str
    """Unique per command: the reply is keyed by it, and posting it twice is a no-op."""
    kind: str
    payload: str


EventHint = Callable[[str | None, int], None]
"""``on_event(user_id, seq)``: ``user_id`` committed up to ``seq``; ``(None, 0)``: catch up every
user (the listener (re)connected, hints may have been missed)."""
NameHint = Callable[[str], None]
"""``on_inbox(user_id)``: a command was posted; ``on_reply(request_id)``: it was answered.
(After a reconnect only ``on_event(None, 0)`` is called: catch up on everything.)"""


class Store(Protocol):
    """The durable state of every user. All methods are called from trio tasks.

    Every method that reads or writes takes the ``user_id`` and touches only that user's rows.
    """

    async def load_user(self, user_id: str) -> UserSnapshot:
        """The head ``seq`` and the live runs of a user."""
        ...

    async def commit(self, user_id: str, base_seq: int, unit: UnitOfWork) -> list[Event]:
        """Commit a unit atomically. Its events get seqs ``base_seq+1 …`` in order.

        Raises :class:`~netra_actors.exceptions.StoreError` if it did not commit (nothing of it is
        visible). Not cancellable: once submitted, the caller waits for the outcome.
        """
        ...

    async def replay(self, user_id: str, after_seq: int, limit: int) -> list[Event]:
        """Up to ``limit`` committed events with ``seq > after_seq``, in order."""
        ...

    async def get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        """The run, if it exists *for this user*."""
        ...

    async def first_event(self, user_id: str, run_id: str) -> Event | None:
        """The run's first committed event (lowest ``seq``), if any (AG-UI resume reads it)."""
        ...

    async def list_runs(self, user_id: str, limit: int) -> list[RunInfo]:
        """The user's most recent runs, newest first."""
        ...

    async def history(
        self,
        user_id: str,
        *,
        thread: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
    ) -> HistoryPage:
        """Up to ``limit`` committed events with ``seq < before_seq`` (None: no bound), the
        last ones before it, in ``seq`` order; only ``thread``'s when given, only events named
        in ``kinds`` when given. ``more``: earlier ones exist."""
        ...

    async def threads(
        self, user_id: str, *, before: int | None = None, limit: int = 50
    ) -> ThreadsPage:
        """Up to ``limit`` threads of the user, most recent activity first; ``before``: the
        ``next`` cursor of the previous page."""
        ...

    async def message_ids(self, user_id: str, ids: Sequence[str]) -> dict[str, str]:
        """Those of the client-chosen message ``ids`` the user has already, with their thread."""
        ...

    async def run_history(self, user_id: str, run_id: str) -> tuple[list[Event], list[ModelCall]]:
        """The run's committed events in ``seq`` order, and its model calls (its journal)."""
        ...

    async def orphans(self, limit: int, lookahead: float) -> list[str]:
        """Up to ``limit`` users whose runs need an owner and have none: a live run that is not
        waiting as a row, or a timer or scheduled start due within ``lookahead`` seconds, while
        no node holds the user's lease (it expired, was released or never taken)."""
        ...

    async def check(self) -> None:
        """Raise :class:`~netra_actors.exceptions.StoreError` unless the store answers."""
        ...

    def statistics(self) -> StoreStatistics:
        """Counters since the store was opened."""
        ...

    async def aclose(self) -> None:
        """Finish pending commits and release connections."""
        ...


class ClusterStore(Store, Protocol):
    """A store shared by several processes ("nodes"): per-user leases with fencing epochs,
    delivery hints, and a command inbox. :class:`~netra_actors._store.SqlStore` implements it.

    **Leases.** A row per user (``netra_leases``: node, epoch; ``expires_at`` 0 once
    released) and a row per node incarnation (``netra_nodes``: ``expires_at`` on the
    database's clock): a lease is held while it is not released and its node's row has not
    expired. Epochs only grow; a release keeps the row. The writer renews this node's one row
    every ``lease_ttl / 3`` s (inside a group commit when one runs then), however many users it
    owns. The node keeps its own deadline on ``time.monotonic()``: the start of the last
    successful renewal (or acquisition) + ``lease_ttl`` - margin (``max(1, ttl / 5)``), always
    before the database lets another node take over.

    **Fencing.** ``commit(..., epoch=e)`` commits only if, in the same transaction, the lease
    row still says (this node, ``e``); otherwise that unit alone fails with
    :class:`~netra_actors.exceptions.LeaseLostError` and writes nothing.
    """

    node: str
    """This store's node identity, new for every process: ``{node_id or hostname}-{pid}-{hex}``."""

    async def commit(
        self, user_id: str, base_seq: int, unit: UnitOfWork, *, epoch: int | None = None
    ) -> list[Event]:
        """As :meth:`Store.commit`; with ``epoch``, fenced by the user's lease (see above)."""
        ...

    async def acquire(self, user_id: str) -> int | None:
        """Take the user's lease; return its new epoch, or None if another node holds it.

        Inserts the row, takes it over if it is free (released, or its node's row expired on
        the database's clock), or re-takes it if this node holds it; the epoch grows each
        time. Calls that wait ride the writer's next group transaction. After a takeover the
        previous owner's runs are still live in ``netra_runs``: recovering them is the caller's.
        """
        ...

    async def claim(self, user_id: str) -> int | None:
        """Activate the user without waiting for a lease write: read its lease row (and its
        ``load_user`` snapshot, which the next ``load_user`` of the user returns); None if
        another live node holds it. Otherwise return the epoch the acquisition will give — the
        acquisition itself rides the writer's next group transaction, ahead of any unit the
        caller commits. If it does not give exactly that epoch, or the user's head moved since
        the read, the lease is spoiled (its epoch moves on): every unit committed under the
        returned epoch fails with ``LeaseLostError``, so fencing still decides."""
        ...

    async def release(self, user_id: str, epoch: int) -> None:
        """Give the lease up (``expires_at = 0``) if this node still holds it at ``epoch``."""
        ...

    async def release_all(self) -> None:
        """Give up every lease of this node (a draining server)."""
        ...

    async def reap(self) -> list[str]:
        """Release the leases of every node that is proven gone, at once (not when they
        expire): the nodes whose incarnation lock this store can take (an ``flock`` beside the
        SQLite file, a PostgreSQL session advisory lock). A paused process still holds its lock:
        only a process that is gone can be proven so. Returns the nodes reaped."""
        ...

    def lease_deadline(self) -> float:
        """``time.monotonic()`` until which every lease renewed by the last successful bulk
        renewal is surely still ours (``-inf`` before the first one)."""
        ...

    def lease_valid_until(self, user_id: str) -> float:
        """``time.monotonic()`` until which this user's lease is surely ours: the later of its
        acquisition and the last bulk renewal, + ttl - margin (``-inf`` if not held)."""
        ...

    notifies: bool
    """True when :meth:`listen` delivers hints (PostgreSQL); False: poll (SQLite)."""

    async def listen(
        self,
        on_event: EventHint,
        *,
        on_inbox: NameHint | None = None,
        on_reply: NameHint | None = None,
        on_deltas: NameHint | None = None,
    ) -> None:
        """From now on, call these (plain functions, in trio) for every hint of a commit, a
        posted command, a reply, and every payload of provisional text another node relayed
        (``on_deltas``, PostgreSQL's ``netra_deltas``). Returns once the first connection
        attempt is over.

        PostgreSQL: one ``LISTEN`` connection per store, health-checked every 2 s, reconnected
        with backoff; after every (re)connect ``on_event(None, 0)``: catch up on everything.
        SQLite: never called (poll :meth:`heads`, :meth:`take_commands`, :meth:`take_replies`).
        A second call replaces the callbacks.
        """
        ...

    async def free_leases(self, user_ids: Sequence[str]) -> list[str]:
        """Those of ``user_ids`` whose lease expired or was never taken (the database's clock)."""
        ...

    async def heads(self, user_ids: Sequence[str]) -> dict[str, int]:
        """The head ``seq`` of every given user (0 for none), in one read."""
        ...

    async def post_command(self, user_id: str, request_id: str, kind: str, payload: str) -> None:
        """Append a command to the user's inbox (committed on return; a repeated
        ``request_id`` is ignored). PostgreSQL also notifies ``netra_inbox``."""
        ...

    async def take_commands(self, user_ids: Collection[str] | None, limit: int) -> list[InboxItem]:
        """Up to ``limit`` waiting commands of these users (None: every user), in ``id`` order.
        Does not delete them: the owner puts their ids in ``unit.inbox_done`` of the unit that
        carries the command's effects, so a command is consumed exactly when they commit."""
        ...

    async def take_replies(self, request_ids: Collection[str]) -> dict[str, tuple[bool, str]]:
        """The replies that exist among ``request_ids`` as ``{request_id: (ok, payload)}``;
        each is returned once (they are deleted in the same transaction)."""
        ...
