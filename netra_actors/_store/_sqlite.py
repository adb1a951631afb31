"""SQLite: a writer thread and a reader thread, each owning one plain ``sqlite3`` connection.

The writer runs a whole group commit — ``BEGIN IMMEDIATE``, one ``executemany`` of every event
row, one ``executemany`` upserting every run row, the developers' statements, ``COMMIT`` — as one
call in its own thread, and hands the outcomes back to trio with one ``run_sync_soon`` per batch.
Trio hands work to it with a ``queue.SimpleQueue.put``. The reader does the same for reads;
``load_user`` requests that arrive together are answered by one pair of queries.
"""

from __future__ import annotations

import operator
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import outcome
from sqlalchemy import Connection, MetaData, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from .._bridge import Bridge
from .._config import RuntimeConfig
from .._exceptions import StoreError
from ._base import UserSnapshot
from ._common import (
    EVENT_COLUMNS,
    EVENT_SELECT,
    LIVE_STATE_VALUES,
    RUN_COLUMNS,
    RUN_SELECT,
    UPSERT_SET,
    Pending,
    Read,
    StatementHook,
    Stats,
    Waiter,
    apply_statements,
    as_store_error,
    committed,
    event_rows,
    log,
    make_orm_transient,
    resume_now,
    run_info,
    run_rows,
    short,
    wait_outcome,
)
from ._schema import migrate

INSERT_EVENTS = (
    f"INSERT INTO netra_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * 6)})"
)
UPSERT_RUNS = (
    f"INSERT INTO netra_runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * 10)}) "
    f"ON CONFLICT (user_id, run_id) DO UPDATE SET {UPSERT_SET}"
)
#: Users per ``IN (…)`` list of a batched ``load_user`` (well under SQLite's variable limit).
LOAD_CHUNK = 500


class HookOwner(Protocol):
    statement_hook: StatementHook | None


class SqliteFile:
    """Where the database is and how every connection to it is set up."""

    def __init__(self, config: RuntimeConfig) -> None:
        from sqlalchemy import make_url

        url = make_url(config.database_url)
        path = url.database or ""
        if path in ("", ":memory:"):
            # One private in-memory database shared by the writer, the reader and the engine.
            self.target = f"file:netra_mem_{id(self):x}?mode=memory&cache=shared"
            self.uri = True
        else:
            self.target = path
            self.uri = path.startswith("file:")
            if not self.uri:
                import os

                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.synchronous = config.sqlite_synchronous
        self.busy_timeout = config.busy_timeout
        self.echo = config.echo_sql
        self.async_url = url.set(drivername="sqlite+aiosqlite", database=self.target)
        self.sync_url = url.set(drivername="sqlite+pysqlite", database=self.target)

    def setup(self, dbapi_conn: Any) -> None:
        """Pragmas for every connection; transactions are started explicitly."""
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={self.synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    def connect_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"timeout": self.busy_timeout, "check_same_thread": False}
        if self.uri:
            args["uri"] = True
        return args

    def listen(self, sync_engine: Any, begin: str) -> None:
        def on_connect(dbapi_conn: DBAPIConnection, _rec: ConnectionPoolEntry) -> None:
            self.setup(dbapi_conn)

        def on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)

        event.listen(sync_engine, "connect", on_connect)
        event.listen(sync_engine, "begin", on_begin)


_STOP: Any = object()


class DbThread:
    """A thread that owns one connection and serves a queue of waiters, batch by batch.

    Trio side: :meth:`start`, :meth:`submit`, :meth:`stop`. Thread side: :meth:`setup`,
    :meth:`handle` (one call per batch; returns the waiters to resume), :meth:`cleanup`.
    If the thread dies, every waiter in flight and queued, and every later submission, fails
    with ``StoreError("the store <role> stopped: …")``.
    """

    role = "thread"

    def __init__(self, bridge: Bridge, batch_max: int) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._bridge = bridge
        self._batch_max = batch_max
        self._opener: Waiter | None = None
        self._exit_waiter: Waiter | None = None
        self.dead: str | None = None
        self.exited = False
        self._thread = threading.Thread(target=self._main, name=f"netra-{self.role}", daemon=True)

    # -- trio side ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the thread; return once its connection is open (or raise why not)."""
        self._opener = Waiter()
        self._thread.start()
        try:
            await wait_outcome(self._opener)
        except BaseException:
            self._thread.join()
            raise

    def stopped_error(self) -> StoreError:
        return StoreError(f"the store {self.role} stopped: {self.dead}")

    def submit(self, item: Any) -> None:
        """Queue a waiter (or a list of waiters, handled together). Never blocks."""
        if self.dead is None:
            self._q.put(item)
            return
        items = item if isinstance(item, list) else [item]
        for w in items:
            w.fail(self.stopped_error())
        self._bridge.resume_soon(items)

    def queued(self) -> int:
        return self._q.qsize()

    async def stop(self) -> None:
        """Let the thread finish what is queued, close its connection and end; wait for it."""
        if not self.exited:
            self._exit_waiter = Waiter()
            self._q.put(_STOP)
            await wait_outcome(self._exit_waiter)
        self._thread.join()

    def _on_exit(self, batch: list[Any], exc: BaseException | None) -> None:
        """In trio, once the thread has ended: fail whatever is left, wake :meth:`stop`."""
        self.exited = True
        if exc is not None:
            self.dead = short(exc)
        elif self.dead is None:
            self.dead = "it was closed"
        left: list[Waiter] = []
        for item in batch:
            left.extend(item if isinstance(item, list) else [item])
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                left.extend(item if isinstance(item, list) else [item])
        for w in left:
            if w.result is None:
                w.fail(self.stopped_error())
        if self._exit_waiter is not None:
            self._exit_waiter.result = outcome.Value(None)
            left.append(self._exit_waiter)
        resume_now(left)

    # -- thread side -------------------------------------------------------------------------

    def setup(self) -> None:
        raise NotImplementedError

    def handle(self, batch: list[Any]) -> Sequence[Waiter]:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        opener = self._opener
        assert opener is not None
        try:
            self.setup()
        except BaseException as exc:
            opener.fail(exc)
            self._cleanup()
            self.exited = True
            self.dead = short(exc)
            self._bridge.resume_soon([opener])
            return
        opener.result = outcome.Value(None)
        self._bridge.resume_soon([opener])
        batch: list[Any] = []
        error: BaseException | None = None
        get, get_nowait, batch_max = self._q.get, self._q.get_nowait, self._batch_max
        try:
            while True:
                batch = [get()]
                while len(batch) < batch_max:
                    try:
                        batch.append(get_nowait())
                    except queue.Empty:
                        break
                stop = batch[-1] is _STOP
                if stop:
                    batch.pop()
                if batch:
                    waiters = self.handle(batch)
                    self._bridge.resume_soon(waiters)
                    batch = []
                if stop:
                    break
        except BaseException as exc:
            log.critical("the store %s stopped", self.role, exc_info=True)
            error = exc
        self._cleanup()
        self._bridge.to_trio(self._on_exit, batch, error)

    def _cleanup(self) -> None:
        try:
            self.cleanup()
        except Exception:
            log.exception("closing the store %s's connection failed", self.role)


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
    ) -> None:
        super().__init__(bridge, config.commit_batch_max)
        self._file = file
        self._extra = tuple(extra)
        self._owner = owner
        self._stats = stats
        self._conn: Connection | None = None
        self._raw: sqlite3.Connection | None = None
        self.schema_versions = (0, 0)

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
        self._raw = conn.connection.driver_connection

    def cleanup(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if getattr(self, "_engine", None) is not None:
            self._engine.dispose()

    def _exec(self, sql: str, rows: Any = None) -> None:
        raw = self._raw
        assert raw is not None
        hook = self._owner.statement_hook
        if hook is not None:
            hook(sql)
        if rows is None:
            raw.execute(sql)
        else:
            raw.executemany(sql, rows)

    def _write_rows(self, batch: Sequence[Pending]) -> None:
        rows = event_rows(batch)
        if rows:
            self._exec(INSERT_EVENTS, rows)
        runs = run_rows(batch)
        if runs:
            self._exec(UPSERT_RUNS, runs)

    def handle(self, batch: list[Pending]) -> Sequence[Waiter]:
        stats = self._stats
        started = time.perf_counter()
        stats.batches += 1
        # In key order, the rows land in the primary-key B-tree as one sweep instead of at
        # random pages (units arrive in trio's scheduling order). Stable: a user's units keep
        # their order.
        batch.sort(key=_by_user)
        try:
            if any(p.unit.statements for p in batch):
                self._commit_with_statements(batch)
            else:
                self._commit_raw(batch)
        except Exception as exc:  # SQLite errors, OSError, or a developer's listener raising
            if len(batch) == 1:
                batch[0].fail(as_store_error(exc))
            else:
                log.warning(
                    "group commit of %d units failed (%s); retrying unit by unit",
                    len(batch),
                    short(exc),
                )
                stats.isolated_retries += 1
                self._commit_isolated(batch)
        else:
            for p in batch:
                p.result = committed(p)
        stats.record(batch, started)
        return batch

    def _commit_raw(self, batch: Sequence[Pending]) -> None:
        raw = self._raw
        assert raw is not None
        self._exec("BEGIN IMMEDIATE")
        try:
            self._write_rows(batch)
            self._exec("COMMIT")
        except BaseException:
            if raw.in_transaction:
                try:
                    raw.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("ROLLBACK failed")
            raise

    def _commit_with_statements(self, batch: Sequence[Pending]) -> None:
        conn = self._conn
        assert conn is not None
        with conn.begin():
            self._write_rows(batch)
            for p in batch:
                if p.unit.statements:
                    apply_statements(conn, p.unit)

    def _commit_isolated(self, batch: Sequence[Pending]) -> None:
        conn = self._conn
        assert conn is not None
        make_orm_transient(batch)
        errors: dict[int, BaseException] = {}
        try:
            with conn.begin():
                for p in batch:
                    try:
                        with conn.begin_nested():
                            self._write_rows((p,))
                            apply_statements(conn, p.unit)
                    except Exception as exc:
                        log.warning("unit of work of user %r failed: %s", p.user_id, short(exc))
                        errors[id(p)] = exc
        except Exception as exc:
            for p in batch:
                p.fail(as_store_error(errors.get(id(p), exc)))
            return
        for p in batch:
            err = errors.get(id(p))
            p.result = committed(p) if err is None else outcome.Error(as_store_error(err))


_by_user = operator.attrgetter("user_id")


class SqliteReader(DbThread):
    """Reads on their own connection (WAL: they never wait for the writer)."""

    role = "reader"

    def __init__(self, bridge: Bridge, file: SqliteFile, owner: HookOwner) -> None:
        super().__init__(bridge, 1024)
        self._file = file
        self._owner = owner
        self._raw: sqlite3.Connection | None = None
        self.load_calls = 0
        """Batched ``load_user`` calls made (each is one pair of queries for many users)."""

    def setup(self) -> None:
        file = self._file
        try:
            raw = sqlite3.connect(file.target, **file.connect_args())
            file.setup(raw)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database: {short(exc)}") from exc
        self._raw = raw

    def cleanup(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        raw = self._raw
        assert raw is not None
        hook = self._owner.statement_hook
        if hook is not None:
            hook(sql)
        return raw.execute(sql, tuple(params)).fetchall()

    def handle(self, batch: list[Any]) -> Sequence[Waiter]:
        flat: list[Read] = []
        for item in batch:
            if isinstance(item, list):
                flat.extend(item)
            else:
                flat.append(item)
        loads = [r for r in flat if r.kind == "load_user"]
        if loads:
            self._load_users(loads)
        for r in flat:
            if r.kind != "load_user":
                try:
                    r.result = outcome.Value(getattr(self, "_" + r.kind)(*r.args))
                except Exception as exc:
                    r.fail(as_store_error(exc))
        return flat

    def _load_users(self, loads: list[Read]) -> None:
        self.load_calls += 1
        users = list(dict.fromkeys(r.args for r in loads))
        heads: dict[str, int] = {}
        live: dict[str, list[Any]] = {}
        states = ", ".join("?" * len(LIVE_STATE_VALUES))
        try:
            self._query("BEGIN")
            try:
                for i in range(0, len(users), LOAD_CHUNK):
                    chunk = users[i : i + LOAD_CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    for user_id, head in self._query(
                        "SELECT user_id, MAX(seq) FROM netra_events "
                        f"WHERE user_id IN ({marks}) GROUP BY user_id",
                        chunk,
                    ):
                        heads[user_id] = head or 0
                    for row in self._query(
                        f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id IN ({marks}) "
                        f"AND state IN ({states}) ORDER BY user_id, created_at, run_id",
                        [*chunk, *LIVE_STATE_VALUES],
                    ):
                        live.setdefault(row[0], []).append(row)
            finally:
                self._query("COMMIT")
        except Exception as exc:
            for r in loads:
                r.fail(as_store_error(exc))
            return
        for r in loads:
            r.result = outcome.Value(snapshot(heads.get(r.args, 0), live.get(r.args, ())))

    def _replay(self, user_id: str, after_seq: int, limit: int) -> list[Any]:
        from .._values import Event

        rows = self._query(
            f"SELECT {EVENT_SELECT} FROM netra_events WHERE user_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (user_id, after_seq, limit),
        )
        return [Event(*row) for row in rows]

    def _get_run(self, user_id: str, run_id: str) -> Any:
        rows = self._query(
            f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id = ? AND run_id = ?",
            (user_id, run_id),
        )
        return run_info(rows[0]) if rows else None

    def _list_runs(self, user_id: str, limit: int) -> list[Any]:
        rows = self._query(
            f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id = ? "
            "ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (user_id, limit),
        )
        return [run_info(row) for row in rows]

    def _check(self) -> None:
        self._query("SELECT 1")

    def _call(self, fn: Any) -> Any:
        return fn(self._raw)


def snapshot(head: int, live: Iterable[Sequence[Any]]) -> UserSnapshot:
    return UserSnapshot(head_seq=head, live_runs=tuple(run_info(row) for row in live))
