"""The SQL store: group commit with one hand-off per transaction, on SQLite or PostgreSQL.

What runs where (see ``docs/store.md``):

* **SQLite** — a writer thread owns one ``sqlite3`` connection (through a sync SQLAlchemy
  ``Connection``, pysqlite) and runs each whole group commit as one call; a reader thread owns
  another connection (WAL: readers never block the writer) and answers reads, batching the
  ``load_user`` calls that arrive together into one pair of queries (``_sqlite_writer.py``,
  ``_sqlite_reader.py``). A unit that finds the writer idle commits at once on the writer's
  connection, in trio's thread (``SqliteWriter.commit_now``).
* **PostgreSQL** — the writer is a task on the asyncio host loop holding one asyncpg connection
  (a batch's rows, lease check and hints in one statement); reads use an asyncpg pool, hints
  a ``LISTEN`` connection (``_pg_writer.py``, ``_pg_reader.py``, ``_pg_listener.py``).
* **Both** — :attr:`SqlStore.engine`, a SQLAlchemy asyncio engine (aiosqlite / asyncpg) on the
  same database, for developers' own models and reads.

Both writers run the same group commit (``_group_commit.py``); the SQL of its driver calls is the
dialect's (``_sqlite.py``, ``_postgres.py``). Trio waits with ``wait_task_rescheduled`` (no trio
object per unit); the database side stores an outcome on each waiter and resumes the whole batch
with one ``run_sync_soon`` (:meth:`Bridge.resume_soon`). If a batch's transaction fails and it
held several units, it is retried unit by unit inside SAVEPOINTs, so a bad unit fails alone.

Several processes may share the database (a cluster, ``docs/store.md``): per-user leases with
fencing epochs ride the writer's transactions (acquired in batches, renewed in bulk, checked in
the same transaction as every fenced unit), PostgreSQL sends ``NOTIFY`` hints from inside the
commit to every store's listener, and commands reach a user's owner through ``netra_inbox``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import trio
from sqlalchemy import MetaData, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .._bridge import Bridge, tick
from .._config import RuntimeConfig
from .._exceptions import StoreError
from .._tracing import tracing_of
from .._uow import UnitOfWork
from .._values import Event, RunInfo
from . import _erase, _inspect
from ._base import (
    EventHint,
    HistoryPage,
    InboxItem,
    ModelCall,
    NameHint,
    StoreStatistics,
    ThreadsPage,
    UserSnapshot,
)
from ._leases import Leases, node_name
from ._rows import StatementHook, log
from ._sqlite import SqliteFile
from ._sqlite_reader import SqliteReader
from ._sqlite_writer import SqliteWriter
from ._statistics import Stats
from ._waiting import Op, Pending, Read, short, wait_outcome

__all__ = ["SqlStore"]

CLAIM_DELAY = 0.005
"""Seconds a lone node's claim may wait before its acquisition goes to the writer, so that the
acquisitions of activations that come one after the other share a transaction. Anything the
node then submits for the store (a unit, a lease or inbox request) takes them along first."""


class SqlStore:
    """The durable store. Create with :meth:`open` from a trio task running as a guest."""

    statement_hook: StatementHook | None
    """If set, called with the text of every SQL statement the store itself runs (writer, reader,
    migrations; from the writer's or reader's thread). For tests and tracing."""

    engine: AsyncEngine
    """A SQLAlchemy asyncio engine on the same database (aiosqlite / asyncpg), for developers'
    own models and reads. The store's own writes and reads do not use it."""

    def __init__(self, config: RuntimeConfig, bridge: Bridge) -> None:
        self._config = config
        self._bridge = bridge
        self.statement_hook = None
        self._stats = Stats()
        tracing = tracing_of(config.tracing)
        if tracing is not None:
            self._stats.on_batch = tracing.group_commit
        self._closing = False
        self._closed = False
        self._loads: list[Read] | None = None
        self._claimed: dict[str, UserSnapshot] = {}
        """Snapshots read by :meth:`claim`, for the ``load_user`` that follows it."""
        self._deferred: list[Op] = []
        """Claims' acquisitions not handed to the writer yet (see :data:`CLAIM_DELAY`)."""
        self._writer: Any = None
        self._commit_now: Callable[[Pending], bool] | None = None
        """SQLite: the writer's commit at once (``SqliteWriter.commit_now``)."""
        self._reader: Any = None
        self._read_now: Callable[[Read], bool] | None = None
        """SQLite: the reader's read at once (``SqliteReader.read_now``)."""
        self._read_tick = -1
        """The batch of trio's run loop (:func:`~.._bridge.tick`) of the last read that tried to
        go at once before any other could join it."""
        self._listener: Any = None
        self._deltas: Any = None
        self.node = node_name(config.node_id)
        """This process's node identity (new at every start: a restart never reuses an epoch)."""
        self._leases = Leases(self.node, config.lease_ttl)
        self.dialect = (
            "sqlite" if config.is_sqlite else make_url(config.database_url).get_backend_name()
        )

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    async def open(
        cls, config: RuntimeConfig, *, extra_metadata: Iterable[MetaData] = ()
    ) -> SqlStore:
        """Connect, migrate the schema, create ``extra_metadata`` tables, start the writer."""
        bridge = Bridge.current()
        store = cls(config, bridge)
        extra = tuple(extra_metadata)
        if config.is_sqlite:
            await store._open_sqlite(extra)
        else:
            await store._open_postgres(extra)
        before, after = store._writer.schema_versions
        if before != after:
            log.info("store schema migrated from version %d to %d", before, after)
        return store

    async def _open_sqlite(self, extra: tuple[MetaData, ...]) -> None:
        try:
            file = SqliteFile(self._config)
        except OSError as exc:
            raise StoreError(f"cannot open the database: {short(exc)}") from exc
        self._writer = SqliteWriter(
            self._bridge, self._config, file, extra, self, self._stats, self._leases
        )
        await self._writer.start()
        self._commit_now = self._writer.commit_now
        self._reader = SqliteReader(self._bridge, file, self)
        try:
            await self._reader.start()
        except BaseException:
            await self._writer.stop()
            raise
        self._read_now = self._reader.read_now
        self.engine = create_async_engine(
            file.async_url, echo=self._config.echo_sql, connect_args=file.connect_args()
        )
        file.listen(self.engine.sync_engine, "BEGIN")
        self._hook_engine(self.engine)

    async def _open_postgres(self, extra: tuple[MetaData, ...]) -> None:
        from ._pg_reader import PgReader
        from ._pg_writer import PgWriter

        url = self._config.database_url
        try:
            dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            writer_engine = create_async_engine(url, pool_size=1, max_overflow=0)
        except Exception as exc:
            raise StoreError(f"cannot create the database engine: {exc}") from exc
        self._writer_sa = writer_engine
        self._dsn = dsn
        writer = PgWriter(
            self._bridge, self._config, dsn, writer_engine, extra, self, self._stats, self._leases
        )
        reader = PgReader(self._bridge, dsn, self)
        try:
            await writer.start()
            self._writer = writer
            await reader.start()
            self._reader = reader
        except BaseException:
            if self._writer is not None:
                await writer.stop()
            await reader.stop()
            await self._bridge.run_on_host(writer_engine.dispose(), shield=True)
            raise
        self.engine = create_async_engine(url, echo=self._config.echo_sql, pool_pre_ping=True)
        self._hook_engine(self.engine)

    def _hook_engine(self, engine: AsyncEngine) -> None:
        def on_execute(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
            hook = self.statement_hook
            if hook is not None:
                hook(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", on_execute)

    async def aclose(self) -> None:
        """Commit what is queued, stop the writer and the reader, close every connection."""
        if self._closed:
            return
        self._closed = self._closing = True
        self._flush_claims()
        with trio.CancelScope(shield=True):
            if self._listener is not None:
                await self._listener.stop()
            if self._deltas is not None:
                await self._deltas.stop()
            await self._writer.stop()
            await self._reader.stop()
            await self._bridge.run_on_host(self.engine.dispose())
            sa = getattr(self, "_writer_sa", None)
            if sa is not None:
                await self._bridge.run_on_host(sa.dispose())

    # -- writing ---------------------------------------------------------------------------

    async def commit(
        self, user_id: str, base_seq: int, unit: UnitOfWork, *, epoch: int | None = None
    ) -> list[Event]:
        """See :meth:`ClusterStore.commit`. Not cancellable: the outcome is always observed.

        With ``epoch``, the unit commits only if the user's lease row still says (this node,
        ``epoch``) inside the same transaction; otherwise it alone fails with
        :class:`~netra_actors.exceptions.LeaseLostError`.
        """
        if self._closing:
            raise StoreError("the store is closed")
        if self._claimed:
            self._claimed.pop(user_id, None)  # the user changes: that snapshot is history
        if self._deferred:
            self._flush_claims()  # claims go first: the fence checks the leases they take
        pending = Pending(user_id, base_seq, unit, epoch)
        if self._commit_now is not None and self._commit_now(pending):
            await trio.lowlevel.cancel_shielded_checkpoint()
            assert pending.result is not None
            done: list[Event] = pending.result.unwrap()
            return done
        self._writer.submit(pending)
        events: list[Event] = await wait_outcome(pending)
        return events

    async def _op(self, kind: str, *args: Any) -> Any:
        if self._closing:
            raise StoreError("the store is closed")
        if self._deferred:
            self._flush_claims()
        op = Op(kind, args)
        self._writer.submit(op)
        return await wait_outcome(op)

    # -- leases ----------------------------------------------------------------------------

    async def acquire(self, user_id: str) -> int | None:
        """See :meth:`ClusterStore.acquire`. Rides the writer's next group transaction."""
        self._claimed.pop(user_id, None)
        epoch: int | None = await self._op("acquire", user_id)
        return epoch

    async def claim(self, user_id: str) -> int | None:
        """See :meth:`ClusterStore.claim`. While this node is the only one alive: one read (the
        user's lease row and its ``load_user`` snapshot, shared with the reads that arrive
        together), and the acquisition rides the writer's next group transaction without anyone
        waiting for it. While other nodes are alive it waits for the acquisition, as
        :meth:`acquire` (two nodes activating the same user at once must not both act as its
        owner until their first commit); so it does while commits fail (a session that cannot
        write its lease does not start: the caller hears of the store's failure now)."""
        if self._closing:
            raise StoreError("the store is closed")
        self._claimed.pop(user_id, None)
        leases = self._leases
        if leases.others or self._stats.commits_failing:
            # Other nodes were alive at the last look (None: not known yet), or the database
            # refuses writes now: the session must not start on a lease that cannot be written.
            return await self.acquire(user_id)
        found: tuple[UserSnapshot, Any, bool] = await self._grouped(Read("claim", user_id))
        snap, lease, others = found
        leases.others = others
        if others:  # another node is alive: an acquisition of our own, waited for
            return await self.acquire(user_id)
        if lease is None:
            expect = 1
        else:
            node, epoch, held = lease
            if held and node != self.node:  # (a node alive a moment ago): follow it
                return None
            expect = int(epoch) + 1
        op = Op("claim", (user_id, expect, snap.head_seq))
        op.task = None  # nobody waits: its outcome is the lease bookkeeping's (and the fence's)
        if not self._deferred:
            self._bridge.loop.call_later(CLAIM_DELAY, self._flush_claims)
        self._deferred.append(op)
        self._claimed[user_id] = snap
        return expect

    def _flush_claims(self) -> None:
        """Hand the deferred claims to the writer (before anything else that follows them)."""
        deferred, self._deferred = self._deferred, []
        for op in deferred:
            self._writer.submit(op)

    async def release(self, user_id: str, epoch: int) -> None:
        """See :meth:`ClusterStore.release`."""
        await self._op("release", user_id, epoch)

    async def release_all(self) -> None:
        """See :meth:`ClusterStore.release_all`."""
        await self._op("release_all")

    async def reap(self) -> list[str]:
        """See :meth:`ClusterStore.reap`. Rides the writer's next group transaction."""
        reaped: list[str] = await self._op("reap")
        return reaped

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts after its last renewal, on the database's clock."""
        return self._leases.ttl

    def lease_deadline(self) -> float:
        """See :meth:`ClusterStore.lease_deadline` (a ``time.monotonic()`` value)."""
        return self._leases.deadline()

    def lease_valid_until(self, user_id: str) -> float:
        """See :meth:`ClusterStore.lease_valid_until` (a ``time.monotonic()`` value)."""
        return self._leases.valid_until(user_id)

    def lease_remaining(self, user_id: str) -> float:
        """Seconds this node may still act as the user's owner (negative: past its deadline).
        Add it to ``trio.current_time()`` for a trio deadline."""
        return self._leases.valid_until(user_id) - time.monotonic()

    def held_leases(self) -> dict[str, int]:
        """A copy of ``{user_id: epoch}`` of every lease this node holds."""
        return dict(self._leases.held)

    # -- delivery hints and the inbox ------------------------------------------------------

    @property
    def notifies(self) -> bool:
        """True on PostgreSQL (:meth:`listen` delivers hints); False on SQLite (poll)."""
        return not self._config.is_sqlite

    async def listen(
        self,
        on_event: EventHint,
        *,
        on_inbox: NameHint | None = None,
        on_reply: NameHint | None = None,
        on_deltas: NameHint | None = None,
    ) -> None:
        """See :meth:`ClusterStore.listen`. A second call replaces the callbacks.

        ``on_deltas`` gets the payloads other nodes relay with :meth:`publish_deltas`.
        SQLite has no notifications: the callbacks are never called; poll :meth:`heads`.
        """
        if self._closing:
            raise StoreError("the store is closed")
        if self._config.is_sqlite:
            return
        from ._pg_listener import PgListener

        if self._listener is None:
            self._listener = PgListener(self._bridge, self._dsn, self)
            self._listener.set_callbacks(on_event, on_inbox, on_reply, on_deltas)
            tried = trio.Event()
            self._listener.start(lambda: self._bridge.to_trio(tried.set))
            await tried.wait()
        else:
            self._listener.set_callbacks(on_event, on_inbox, on_reply, on_deltas)

    async def publish_deltas(self, payloads: list[str]) -> None:
        """PostgreSQL: ``NOTIFY netra_deltas`` each payload, in order, on a connection of its
        own (``_pg_deltas.py``); every store's :meth:`listen` gets them (``on_deltas``)."""
        if self._closing:
            raise StoreError("the store is closed")
        if self._deltas is None:
            from ._pg_deltas import PgDeltas

            self._deltas = PgDeltas(self._bridge, self._dsn, self)
        await self._deltas.send(payloads)

    @property
    def relay_directory(self) -> str | None:
        """SQLite on a file: the directory beside it where the nodes of a cluster on that file
        announce their relay's local port (``_relay.py``); None otherwise."""
        if not self._config.is_sqlite:
            return None
        path = make_url(self._config.database_url).database or ""
        if path in ("", ":memory:") or path.startswith("file:"):
            return None
        return os.path.abspath(path) + ".relay"

    @property
    def listener_connects(self) -> int:
        """How often the PostgreSQL listener has (re)connected (0 on SQLite)."""
        return 0 if self._listener is None else int(self._listener.connects)

    async def heads(self, user_ids: Sequence[str]) -> dict[str, int]:
        """See :meth:`ClusterStore.heads`."""
        result: dict[str, int] = await self._read("heads", list(user_ids))
        return result

    async def free_leases(self, user_ids: Sequence[str]) -> list[str]:
        """Those of ``user_ids`` whose lease has expired (by the database's clock) or was never
        taken: a node may take them over now. One query for all of them."""
        result: list[str] = await self._read("free_leases", list(user_ids))
        return result

    async def post_command(self, user_id: str, request_id: str, kind: str, payload: str) -> None:
        """See :meth:`ClusterStore.post_command`. Rides the writer's next group transaction."""
        await self._op("post", user_id, request_id, kind, payload, time.time())

    async def take_commands(self, user_ids: Collection[str] | None, limit: int) -> list[InboxItem]:
        """See :meth:`ClusterStore.take_commands`."""
        users = None if user_ids is None else list(user_ids)
        result: list[InboxItem] = await self._read("take_commands", users, limit)
        return result

    async def take_replies(self, request_ids: Collection[str]) -> dict[str, tuple[bool, str]]:
        """See :meth:`ClusterStore.take_replies` (the delete rides the writer's next group
        transaction)."""
        ids = list(request_ids)
        if not ids:
            return {}
        result: dict[str, tuple[bool, str]] = await self._op("take_replies", ids)
        return result

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, kind: str, *args: Any) -> Any:
        if self._closing:
            raise StoreError("the store is closed")
        read = Read(kind, args)
        self._reader.submit(read)
        return await wait_outcome(read, cancellable=True)

    async def load_user(self, user_id: str) -> UserSnapshot:
        """See :meth:`Store.load_user`. Calls that arrive together share one pair of queries."""
        if self._closing:
            raise StoreError("the store is closed")
        claimed = self._claimed.pop(user_id, None) if self._claimed else None
        if claimed is not None:
            return claimed  # read with the lease this node has just claimed (see claim)
        snapshot: UserSnapshot = await self._grouped(Read("load_user", user_id))
        return snapshot

    async def _grouped(self, read: Read) -> Any:
        """A ``load_user`` or ``claim`` read, in one request with those that arrive together."""
        group = self._loads
        if group is not None:
            group.append(read)
            return await wait_outcome(read, cancellable=True)
        # SQLite, an idle reader: the first read of a batch of trio's run loop runs at once
        # (SqliteReader.read_now). A later one in the same batch may have company (trio does not
        # say which tasks the batch still holds): it leads a group, lets every other runnable
        # task join, and submits the group as one request (a group of one, on an idle reader,
        # runs at once after all).
        read_now = self._read_now
        done = False
        if read_now is not None and self._read_tick != tick():
            self._read_tick = tick()
            done = read_now(read)
        if not done:
            group = self._loads = [read]
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._loads = None
            done = len(group) == 1 and read_now is not None and read_now(read)
            if not done:
                self._reader.submit(group)
                return await wait_outcome(read, cancellable=True)
        await trio.lowlevel.checkpoint_if_cancelled()
        assert read.result is not None
        return read.result.unwrap()

    @property
    def load_calls(self) -> int:
        """How many batched ``load_user`` queries the reader ran (for tests and benchmarks)."""
        calls: int = self._reader.load_calls
        return calls

    async def replay(self, user_id: str, after_seq: int, limit: int) -> list[Event]:
        """See :meth:`Store.replay`."""
        result: list[Event] = await self._read("replay", user_id, after_seq, limit)
        return result

    async def first_event(self, user_id: str, run_id: str) -> Event | None:
        """See :meth:`Store.first_event`."""
        result: Event | None = await self._read("first_event", user_id, run_id)
        return result

    async def history(
        self,
        user_id: str,
        *,
        thread: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
    ) -> HistoryPage:
        """See :meth:`Store.history`."""
        kinds = None if kinds is None else tuple(kinds)
        result: HistoryPage = await self._read("history", user_id, thread, before_seq, limit, kinds)
        return result

    async def threads(
        self, user_id: str, *, before: int | None = None, limit: int = 50
    ) -> ThreadsPage:
        """See :meth:`Store.threads`."""
        result: ThreadsPage = await self._read("threads", user_id, before, limit)
        return result

    async def message_ids(self, user_id: str, ids: Sequence[str]) -> dict[str, str]:
        """See :meth:`Store.message_ids`."""
        if not ids:
            return {}
        result: dict[str, str] = await self._read("message_ids", user_id, list(ids))
        return result

    async def get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        """See :meth:`Store.get_run`."""
        result: RunInfo | None = await self._read("get_run", user_id, run_id)
        return result

    async def list_runs(self, user_id: str, limit: int) -> list[RunInfo]:
        """See :meth:`Store.list_runs`."""
        result: list[RunInfo] = await self._read("list_runs", user_id, limit)
        return result

    async def run_history(self, user_id: str, run_id: str) -> tuple[list[Event], list[ModelCall]]:
        """See :meth:`Store.run_history`."""
        result: tuple[list[Event], list[ModelCall]] = await self._read(
            "run_history", user_id, run_id
        )
        return result

    async def orphans(self, limit: int, lookahead: float) -> list[str]:
        """See :meth:`Store.orphans` (two indexed reads, on the database's clock)."""
        result: list[str] = await self._read("orphans", limit, lookahead)
        return result

    # -- the inspector's reads (across users; docs/inspector.md) ----------------------------

    async def admin_users(self, prefix: str, limit: int) -> list[_inspect.UserSummary]:
        """See :meth:`~._inspect.AdminReads.admin_users` (on :attr:`engine`)."""
        return await self._bridge.run_on_host(_inspect.users(self.engine, prefix, limit))

    async def admin_cluster(self, limit: int) -> _inspect.ClusterView:
        """See :meth:`~._inspect.AdminReads.admin_cluster` (on :attr:`engine`)."""
        return await self._bridge.run_on_host(_inspect.cluster(self.engine, limit))

    async def admin_run_events(self, user_id: str, run_id: str, limit: int) -> list[Event]:
        """See :meth:`~._inspect.AdminReads.admin_run_events` (on :attr:`engine`)."""
        coro = _inspect.run_events(self.engine, user_id, run_id, limit)
        return await self._bridge.run_on_host(coro)

    async def stale_threads(self, before_ts: float, limit: int) -> list[tuple[str, str, int]]:
        """``(user_id, thread, last_seq)`` of up to ``limit`` threads idle since before
        ``before_ts``, oldest first: the retention sweep's read, across users (on
        :attr:`engine`, like the inspector's)."""
        return await self._bridge.run_on_host(_erase.stale_threads(self.engine, before_ts, limit))

    async def check(self) -> None:
        """See :meth:`Store.check`. Also fails once the writer has stopped."""
        if self._writer.dead is not None and not self._closing:
            raise self._writer.stopped_error()
        await self._read("check")

    async def run_in_reader(self, fn: Any) -> Any:
        """SQLite only (tests, diagnostics): ``fn(connection)`` in the reader thread, on its
        plain ``sqlite3`` connection (set up exactly like the writer's); returns its result."""
        if not self._config.is_sqlite:
            raise NotImplementedError("run_in_reader is for SQLite")
        return await self._read("call", fn)

    def statistics(self) -> StoreStatistics:
        """See :meth:`Store.statistics`."""
        return self._stats.snapshot(queued=self._writer.queued(), leases=self._leases)
