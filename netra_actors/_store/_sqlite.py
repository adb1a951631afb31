"""SQLite: a writer thread and a reader thread, each owning one plain ``sqlite3`` connection.

The writer runs a whole group commit — ``BEGIN IMMEDIATE``, one ``executemany`` of every event
row, one ``executemany`` upserting every run row, the developers' statements, ``COMMIT`` — as one
call in its own thread, and hands the outcomes back to trio with one ``run_sync_soon`` per batch.
Trio hands work to it with a ``queue.SimpleQueue.put``. The reader does the same for reads;
``load_user`` requests that arrive together are answered by one pair of queries.

Lease statements (bulk renewal, acquisitions, releases, the lease check of fenced units) open
the writer's transaction, after ``BEGIN IMMEDIATE`` has taken the write lock. SQLite has no
notifications: other processes poll.
"""

from __future__ import annotations

import contextlib
import json
import operator
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import outcome
from sqlalchemy import Connection, MetaData, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from .._bridge import Bridge
from .._config import RuntimeConfig
from .._exceptions import StoreError
from ._base import InboxItem, UserSnapshot
from ._common import (
    EVENT_COLUMNS,
    EVENT_SELECT,
    INBOX_SELECT,
    LIVE_STATE_VALUES,
    RUN_COLUMNS,
    RUN_SELECT,
    UPSERT_SET,
    Leases,
    Op,
    Pending,
    Prelude,
    Read,
    StatementHook,
    Stats,
    Waiter,
    apply_statements,
    as_store_error,
    done_rows,
    event_rows,
    fail_all,
    finish,
    inbox_item,
    log,
    make_orm_transient,
    reply_rows,
    resume_now,
    run_info,
    run_rows,
    short,
    split_batch,
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
#: The database's clock, in seconds since the epoch (every lease time is on it).
NOW = "((julianday('now') - 2440587.5) * 86400.0)"
RENEW = f"UPDATE netra_leases SET expires_at = {NOW} + ? WHERE node = ? AND expires_at > 0"
OURS = "SELECT user_id, epoch FROM netra_leases WHERE node = ? AND expires_at > 0"
#: The batch's users as a JSON array: one statement for all of them (``WHERE true``: SQLite's
#: upsert-after-SELECT parsing rule).
#: Unreleased leases of other nodes among them: acquiring one of these is a takeover.
OTHERS_OF = (
    "SELECT user_id FROM netra_leases "
    "WHERE user_id IN (SELECT value FROM json_each(?)) AND node <> ? AND expires_at > 0"
)
ACQUIRE = (
    "INSERT INTO netra_leases (user_id, node, epoch, expires_at) "
    f"SELECT value, ?, 1, {NOW} + ? FROM json_each(?) WHERE true "
    "ON CONFLICT (user_id) DO UPDATE SET node = excluded.node, "
    "epoch = netra_leases.epoch + 1, expires_at = excluded.expires_at "
    f"WHERE netra_leases.expires_at <= {NOW} OR netra_leases.node = excluded.node "
    "RETURNING user_id, epoch"
)
RELEASE = "UPDATE netra_leases SET expires_at = 0 WHERE user_id = ? AND node = ? AND epoch = ?"
RELEASE_ALL = "UPDATE netra_leases SET expires_at = 0 WHERE node = ? AND expires_at > 0"
#: The lease check of a batch's fenced units, one statement (inside BEGIN IMMEDIATE, which holds
#: the write lock: no other node changes a lease row before this transaction ends).
FENCE = (
    "SELECT user_id, epoch FROM netra_leases "
    "WHERE user_id IN (SELECT value FROM json_each(?)) AND node = ?"
)
POST = (
    "INSERT INTO netra_inbox (user_id, request_id, kind, payload, created_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING"
)
INBOX_DONE = "DELETE FROM netra_inbox WHERE id = ? AND user_id = ?"
INSERT_REPLIES = (
    "INSERT INTO netra_replies (request_id, user_id, ok, payload, created_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING"
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

    def idle_timeout(self) -> float | None:
        """Seconds the thread may wait for work before :meth:`handle` runs with no batch."""
        return None

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
                try:
                    batch = [get(timeout=self.idle_timeout())]
                except queue.Empty:
                    if waiters := self.handle([]):
                        self._bridge.resume_soon(waiters)
                    continue
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
        leases: Leases,
    ) -> None:
        super().__init__(bridge, config.commit_batch_max)
        self._leases = leases
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

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        raw = self._raw
        assert raw is not None
        hook = self._owner.statement_hook
        if hook is not None:
            hook(sql)
        return raw.execute(sql, params).fetchall()

    def idle_timeout(self) -> float | None:
        return self._leases.until_due()

    def _write_rows(self, batch: Sequence[Pending]) -> None:
        rows = event_rows(batch)
        if rows:
            self._exec(INSERT_EVENTS, rows)
        runs = run_rows(batch)
        if runs:
            self._exec(UPSERT_RUNS, runs)
        done = done_rows(batch)
        if done:
            self._exec(INBOX_DONE, done)
        replies = reply_rows(batch, time.time())
        if replies:
            self._exec(INSERT_REPLIES, replies)

    def _prelude(self, ops: Sequence[Op], units: Sequence[Pending], renew: bool) -> Prelude:
        """The lease and inbox statements at the start of a transaction (BEGIN IMMEDIATE holds
        the write lock: nobody else changes a lease row before we commit)."""
        pre = Prelude()
        leases = self._leases
        node, ttl = leases.node, leases.ttl
        if renew:
            self._exec(RENEW, [(ttl, node)])
            if leases.late(time.monotonic()):
                pre.still_ours = dict(self._query(OURS, (node,)))
        by_kind: dict[str, list[Op]] = {}
        for op in ops:
            by_kind.setdefault(op.kind, []).append(op)
        if "acquire" in by_kind:
            users = sorted({op.args[0] for op in by_kind["acquire"]})
            as_json = json.dumps(users)
            others = {row[0] for row in self._query(OTHERS_OF, (as_json, node))}
            pre.acquired = dict.fromkeys(users, (None, False))
            for user_id, epoch in self._query(ACQUIRE, (node, ttl, as_json)):
                pre.acquired[user_id] = (int(epoch), user_id in others)
        if "release" in by_kind:
            self._exec(RELEASE, [(op.args[0], node, op.args[1]) for op in by_kind["release"]])
        if "release_all" in by_kind:
            self._exec(RELEASE_ALL, [(node,)])
        if "post" in by_kind:
            self._exec(POST, [op.args for op in by_kind["post"]])
        for op in by_kind.get("take_replies", ()):
            found: dict[str, tuple[bool, str]] = {}
            ids = list(op.args[0])
            for i in range(0, len(ids), LOAD_CHUNK):
                chunk = ids[i : i + LOAD_CHUNK]
                marks = ", ".join("?" * len(chunk))
                for request_id, ok, payload in self._query(
                    f"DELETE FROM netra_replies WHERE request_id IN ({marks}) "
                    "RETURNING request_id, ok, payload",
                    chunk,
                ):
                    found[request_id] = (bool(ok), payload)
            pre.results[id(op)] = found
        fenced = [p for p in units if p.epoch is not None]
        if fenced:
            fenced_users = json.dumps(sorted({p.user_id for p in fenced}))
            epochs = dict(self._query(FENCE, (fenced_users, node)))
            for p in fenced:
                if epochs.get(p.user_id) != p.epoch:
                    pre.fenced.add(id(p))
        return pre

    @contextlib.contextmanager
    def _transaction(self, through_sqlalchemy: bool) -> Iterator[None]:
        if through_sqlalchemy:
            conn = self._conn
            assert conn is not None
            with conn.begin():
                yield
            return
        raw = self._raw
        assert raw is not None
        self._exec("BEGIN IMMEDIATE")
        try:
            yield
            self._exec("COMMIT")
        except BaseException:
            if raw.in_transaction:
                try:
                    raw.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("ROLLBACK failed")
            raise

    def _attempt(
        self, units: Sequence[Pending], ops: Sequence[Op], renew: bool, isolated: bool
    ) -> Prelude:
        """One transaction: the prelude, then every unit that passed its lease check —
        together, or (``isolated``) each in its own SAVEPOINT so that a bad one fails alone."""
        with_statements = any(p.unit.statements for p in units)
        with self._transaction(with_statements or isolated):
            pre = self._prelude(ops, units, renew)
            live = [p for p in units if id(p) not in pre.fenced]
            if not isolated:
                self._write_rows(live)
                if with_statements:
                    conn = self._conn
                    assert conn is not None
                    for p in live:
                        if p.unit.statements:
                            apply_statements(conn, p.unit)
                return pre
            conn = self._conn
            assert conn is not None
            for p in live:
                try:
                    with conn.begin_nested():
                        self._write_rows((p,))
                        apply_statements(conn, p.unit)
                except Exception as exc:
                    log.warning("unit of work of user %r failed: %s", p.user_id, short(exc))
                    pre.errors[id(p)] = exc
        return pre

    def handle(self, batch: list[Any]) -> Sequence[Waiter]:
        stats, leases = self._stats, self._leases
        units, ops = split_batch(batch)
        began = time.monotonic()
        renew = leases.due(began)
        if not (units or ops or renew):
            return ()
        started = time.perf_counter()
        if units or ops:
            stats.batches += 1
        # In key order, the rows land in the primary-key B-tree as one sweep instead of at
        # random pages (units arrive in trio's scheduling order). Stable: a user's units keep
        # their order.
        units.sort(key=_by_user)
        try:
            pre = self._attempt(units, ops, renew, isolated=False)
        except Exception as exc:  # SQLite errors, OSError, or a developer's listener raising
            if units and (len(units) > 1 or ops or renew):
                log.warning(
                    "group commit of %d units failed (%s); retrying unit by unit",
                    len(units),
                    short(exc),
                )
                stats.isolated_retries += 1
                make_orm_transient(units)
                try:
                    pre = self._attempt(units, ops, renew, isolated=True)
                except Exception as exc2:
                    fail_all(units, ops, exc2, leases, renew)
                else:
                    finish(units, ops, pre, leases, renew, began)
            else:
                fail_all(units, ops, exc, leases, renew)
        else:
            finish(units, ops, pre, leases, renew, began)
        if units:
            stats.record(units, started)
        return batch


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

    def _first_event(self, user_id: str, run_id: str) -> Any:
        from .._values import Event

        rows = self._query(
            f"SELECT {EVENT_SELECT} FROM netra_events WHERE user_id = ? AND run_id = ? "
            "ORDER BY seq LIMIT 1",
            (user_id, run_id),
        )
        return Event(*rows[0]) if rows else None

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

    def _heads(self, user_ids: Sequence[str]) -> dict[str, int]:
        users = list(dict.fromkeys(user_ids))
        heads = dict.fromkeys(users, 0)
        for i in range(0, len(users), LOAD_CHUNK):
            chunk = users[i : i + LOAD_CHUNK]
            marks = ", ".join("?" * len(chunk))
            for user_id, head in self._query(
                "SELECT user_id, MAX(seq) FROM netra_events "
                f"WHERE user_id IN ({marks}) GROUP BY user_id",
                chunk,
            ):
                heads[user_id] = head or 0
        return heads

    def _free_leases(self, user_ids: Sequence[str]) -> list[str]:
        users = list(dict.fromkeys(user_ids))
        held: set[str] = set()
        for i in range(0, len(users), LOAD_CHUNK):
            chunk = users[i : i + LOAD_CHUNK]
            marks = ", ".join("?" * len(chunk))
            held.update(
                user_id
                for (user_id,) in self._query(
                    f"SELECT user_id FROM netra_leases WHERE user_id IN ({marks}) "
                    f"AND expires_at > {NOW}",
                    chunk,
                )
            )
        return [u for u in users if u not in held]

    def _take_commands(self, user_ids: Sequence[str] | None, limit: int) -> list[InboxItem]:
        select = f"SELECT {INBOX_SELECT} FROM netra_inbox"
        if user_ids is None:
            rows = self._query(f"{select} ORDER BY id LIMIT ?", (limit,))
        else:
            users = list(dict.fromkeys(user_ids))
            rows = []
            for i in range(0, len(users), LOAD_CHUNK):
                chunk = users[i : i + LOAD_CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows.extend(
                    self._query(
                        f"{select} WHERE user_id IN ({marks}) ORDER BY id LIMIT ?", [*chunk, limit]
                    )
                )
            rows.sort()
            del rows[limit:]
        return [inbox_item(row) for row in rows]

    def _check(self) -> None:
        self._query("SELECT 1")

    def _call(self, fn: Any) -> Any:
        return fn(self._raw)


def snapshot(head: int, live: Iterable[Sequence[Any]]) -> UserSnapshot:
    return UserSnapshot(head_seq=head, live_runs=tuple(run_info(row) for row in live))
