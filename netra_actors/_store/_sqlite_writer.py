"""SQLite's group-commit writer: a thread owning one connection, one call per transaction.

Trio hands it units and ops with a ``queue.SimpleQueue.put``; it takes what has queued (up to
``commit_batch_max``), runs the whole group commit (:class:`~._group_commit.GroupCommit` over a
:class:`~._sqlite.SqliteDialect`) as one call in its thread, and hands the outcomes back to trio
with one ``run_sync_soon`` per batch. With nothing queued it still wakes when the bulk lease
renewal is due. A unit that finds the writer idle commits at once instead, in trio's thread, on
the same connection (:meth:`SqliteWriter.commit_now`; docs/store.md, "An idle SQLite writer").

It also keeps the write-ahead log small, so that a nearly full disk recovers: SQLite's automatic
checkpoints copy the WAL into the database but leave the file its size (up to
``journal_size_limit``), and a WAL that a failing writer keeps growing would eat whatever space
is freed. So after :data:`IDLE_CHECKPOINT` seconds without a write, and at most every
:data:`FAILED_CHECKPOINT_EVERY` seconds while commits fail, the writer runs
``PRAGMA wal_checkpoint(TRUNCATE)``: the WAL's pages go into the database and the file is cut to
zero bytes.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import trio
from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.pool import NullPool

from .._bridge import Bridge
from .._config import RuntimeConfig
from .._exceptions import StoreError
from .._logs import STORE_FAILURES, log_limited
from ._db_thread import DbThread
from ._group_commit import GroupCommit
from ._incarnation import FileIncarnation
from ._leases import Leases
from ._rows import HookOwner, log
from ._schema import migrate
from ._sqlite import FORGET_NODE, SqliteDialect, SqliteFile, drive
from ._statistics import Stats
from ._waiting import Pending, Waiter, short

IDLE_CHECKPOINT = 5.0
"""Seconds without a write after which the WAL is checkpointed and truncated."""
FAILED_CHECKPOINT_EVERY = 1.0
"""While commits fail: how often the WAL is checkpointed and truncated (freeing what it holds)."""
QUIET_BEFORE_NOW = 0.002
"""Seconds since the writer thread's last batch after which a unit may commit at once: a writer
that has just handed a batch back is likely to get the next one soon."""
CHECKPOINT_BUSY_MS = 200
"""How long a checkpoint waits for readers to move on (the writer's own busy timeout is longer:
a checkpoint that finds readers simply runs again later)."""


class SqliteWriter(DbThread):
    """The group-commit writer: one thread, one connection, one call per transaction."""

    role = "writer"

    def __init__(
        self,
        bridge: Bridge,
        config: RuntimeConfig,
        file: SqliteFile,
        extra: Sequence[MetaData],
        owner: HookOwner,
        stats: Stats,
        leases: Leases,
    ) -> None:
        super().__init__(bridge, config.commit_batch_max)
        self._leases = leases
        self._file = file
        self._extra = tuple(extra)
        self._owner = owner
        self._stats = stats
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._group: GroupCommit | None = None
        self._dialect: SqliteDialect | None = None
        self.committed_now = 0
        """Units committed at once, in trio's thread (:meth:`commit_now`)."""
        self._incarnation: FileIncarnation | None = None
        """This process's lock beside the database file (``_incarnation.py``)."""
        self.schema_versions = (0, 0)
        self._unchecked = False
        """Written since the last complete checkpoint."""
        self._last_write = 0.0
        self._last_checkpoint = -math.inf

    def setup(self) -> None:
        file = self._file
        engine = create_engine(
            file.sync_url, poolclass=NullPool, echo=file.echo, connect_args=file.connect_args()
        )
        file.listen(engine, "BEGIN IMMEDIATE")

        def on_execute(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
            hook = self._owner.statement_hook
            if hook is not None:
                hook(statement)

        event.listen(engine, "before_cursor_execute", on_execute)
        self._engine = engine
        try:
            conn = self._conn = engine.connect()
            with conn.begin():
                self.schema_versions = migrate(conn)
                for md in self._extra:
                    md.create_all(conn)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open the database: {short(exc)}") from exc
        self._incarnation = None
        if not file.in_memory:
            self._incarnation = FileIncarnation(file.target, self._leases.node)
            self._incarnation.hold()
        dialect = self._dialect = SqliteDialect(conn, self._owner, self._incarnation)
        self._group = GroupCommit(dialect, self._stats, self._leases)

    def cleanup(self) -> None:
        if self._conn is not None and self._group is not None:
            # Nothing of this node commits from now on: its row goes, and with it every lease
            # it still held (free at once, not after the TTL).
            raw: sqlite3.Connection = self._conn.connection.driver_connection  # type: ignore[assignment]
            try:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raw.execute(FORGET_NODE, (self._leases.node,))
            except sqlite3.Error as exc:
                log.warning("forgetting this node's row failed: %s", exc)
        if self._incarnation is not None:
            self._incarnation.release()
            self._incarnation = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()

    def idle_timeout(self) -> float | None:
        wait = self._leases.until_due()
        if self._stats.commits_failing:
            due = self._last_checkpoint + FAILED_CHECKPOINT_EVERY
        elif self._unchecked:
            due = self._last_write + IDLE_CHECKPOINT
        else:
            return wait
        return max(0.0, min(wait, due - time.monotonic()))

    def commit_now(self, pending: Pending) -> bool:
        """In trio: commit ``pending`` on this thread's connection at once, if the writer is
        idle; False (nothing done: submit it) otherwise.

        Idle: nothing submitted is in flight (nothing is overtaken), the thread's last batch came
        back at least :data:`QUIET_BEFORE_NOW` ago (under load units keep going to the thread,
        where they are committed together), no other trio task is ready,
        this node is alone on the file, commits do not fail, the unit has no developer's
        statements, ``synchronous`` is ``NORMAL``, and the write lock is free right now (a busy
        timeout of zero: trio never waits for another process). The outcome is on ``pending``.
        """
        if (
            self._in_flight
            or time.perf_counter() - self._back_at < QUIET_BEFORE_NOW
            or self.dead is not None
            or pending.unit.statements
            or self._leases.others is not False
            or self._stats.commits_failing
            or self._file.synchronous != "NORMAL"
            or trio.lowlevel.current_statistics().tasks_runnable
        ):
            return False
        if not self._busy.acquire(blocking=False):
            return False
        try:
            assert self._dialect is not None
            if not self._dialect.begin_now(self._file.busy_timeout):
                return False  # another process writes: the thread waits for it, not trio
            self.committed_now += 1
            self.handle_here(pending)
        finally:
            self._busy.release()
        return True

    def handle(self, batch: list[Any]) -> Sequence[Waiter]:
        group = self._group
        assert group is not None
        drive(group.commit(batch))
        now = time.monotonic()
        # Units are the writes that grow the WAL; the cluster's small periodic ops (the recovery
        # scan's reaping, lease renewals) must not keep an idle database from its checkpoint.
        if any(isinstance(w, Pending) for w in batch):
            self._unchecked, self._last_write = True, now
        if self._stats.commits_failing:
            if now - self._last_checkpoint >= FAILED_CHECKPOINT_EVERY:
                self.checkpoint(now)
        elif self._unchecked and now - self._last_write >= IDLE_CHECKPOINT:
            self.checkpoint(now)
        return batch

    def checkpoint(self, now: float) -> bool:
        """``PRAGMA wal_checkpoint(TRUNCATE)``; True if it completed (the WAL is empty)."""
        assert self._conn is not None
        raw: sqlite3.Connection = self._conn.connection.driver_connection  # type: ignore[assignment]
        self._last_checkpoint = now
        try:
            raw.execute(f"PRAGMA busy_timeout={CHECKPOINT_BUSY_MS}")
            try:
                busy, _frames, _copied = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                raw.execute(f"PRAGMA busy_timeout={int(self._file.busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            log_limited(
                log,
                logging.WARNING,
                "checkpoint",
                "checkpointing the SQLite WAL failed: %s",
                exc,
                limiter=STORE_FAILURES,
            )
            return False
        if busy:
            return False
        self._unchecked = False
        return True
