"""SQLite's driver calls: how a connection is set up, and the statements of the group commit.

Every call is a plain blocking ``sqlite3`` call in the writer's thread (:mod:`._sqlite_writer`):
the statements of a transaction run on one connection, ``executemany`` over all rows of a kind.
A transaction is ``BEGIN IMMEDIATE`` … ``COMMIT`` on the raw connection, or through the sync
SQLAlchemy ``Connection`` on the same connection when developers' statements or SAVEPOINTs need
it. ``BEGIN IMMEDIATE`` takes the write lock first, so no other node changes a lease row before
the transaction ends. The lease statements use SQLite's clock (:data:`NOW`).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy import Connection, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from .._config import RuntimeConfig
from ._erase import erase_statements
from ._incarnation import FileIncarnation
from ._rows import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    UPSERT_SET,
    HookOwner,
    done_rows,
    event_rows,
    log,
    message_id_rows,
    node_live,
    reply_rows,
    run_rows,
    thread_rows,
)
from ._staged import apply_statements
from ._waiting import Pending

T = TypeVar("T")


#: A batch's rows of a kind go to SQLite as few statements, each a multi-row ``INSERT … VALUES
#: (…), (…), …`` bound in one call: one ``sqlite3_step`` per statement, so the writer thread
#: gives up and re-takes the GIL once per statement instead of once per row (``executemany``),
#: and a busy trio thread no longer stalls it at every row. The rows are cut into blocks of a
#: power of two (at most :data:`BLOCK_MAX`), so a handful of statement shapes covers every batch
#: size and each stays in the connection's statement cache: a batch of ``n`` rows is at most
#: ``log2(n) + n / BLOCK_MAX`` statements. (One JSON value per batch through ``json_each`` was
#: measured too: SQLite 3.40 parses a row's text again at each ``->>``, which cost more CPU per
#: event than ``executemany`` saved.)
INSERT_EVENTS = (
    f"INSERT INTO netra_events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)
UPSERT_RUNS = (
    f"INSERT INTO netra_runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))}) "
    f"ON CONFLICT (user_id, run_id) DO UPDATE SET {UPSERT_SET}"
)
#: The thread summary, one row per (user, thread) of a batch (``_rows.thread_rows``).
UPSERT_THREADS = (
    "INSERT INTO netra_threads (user_id, thread, title, created_ts, last_seq, last_ts) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, thread) DO UPDATE SET "
    "title = coalesce(netra_threads.title, excluded.title), last_seq = excluded.last_seq, "
    "last_ts = excluded.last_ts"
)
BLOCK_MAX = 512
"""Rows per multi-row statement at most (512 x 15 run columns stays far below SQLite's
32,766 parameters)."""
_BLOCKS: dict[tuple[str, int], str] = {}
_flatten = itertools.chain.from_iterable
"""A block's rows as one sequence of parameters (in C: the writer holds the GIL meanwhile)."""


def block_statement(sql: str, rows: int) -> str:
    """``sql`` (one ``VALUES (…)`` row, perhaps an ``ON CONFLICT`` after it) for ``rows`` rows."""
    key = (sql, rows)
    found = _BLOCKS.get(key)
    if found is None:
        head, _, tail = sql.partition(" VALUES ")
        one, _, rest = tail.partition(")")
        found = _BLOCKS[key] = f"{head} VALUES {', '.join([one + ')'] * rows)}{rest}"
    return found


def blocks(n: int) -> Iterator[tuple[int, int]]:
    """``(start, size)`` of the power-of-two blocks that cut ``n`` rows, largest first."""
    i = 0
    while i < n:
        size = 1 << min((n - i).bit_length() - 1, BLOCK_MAX.bit_length() - 1)
        yield i, size
        i += size


INSERT_MESSAGE_IDS = (
    "INSERT INTO netra_message_ids (user_id, message_id, thread, created_ts) VALUES (?, ?, ?, ?)"
)
#: The database's clock, in seconds since the epoch (every lease time is on it).
NOW = "((julianday('now') - 2440587.5) * 86400.0)"
#: The bulk renewal: one row, this node's (``netra_nodes``), however many users it owns.
RENEW = (
    f"INSERT INTO netra_nodes (node, expires_at) VALUES (?, {NOW} + ?) "
    "ON CONFLICT (node) DO UPDATE SET expires_at = excluded.expires_at"
)
OURS = "SELECT user_id, epoch FROM netra_leases WHERE node = ? AND expires_at > 0"
OTHERS_ALIVE = f"SELECT EXISTS (SELECT 1 FROM netra_nodes WHERE node <> ? AND expires_at > {NOW})"
#: The batch's users as a JSON array: one statement for all of them (``WHERE true``: SQLite's
#: upsert-after-SELECT parsing rule).
#: Unreleased leases of other nodes among them: acquiring one of these is a takeover.
OTHERS_OF = (
    "SELECT user_id FROM netra_leases "
    "WHERE user_id IN (SELECT value FROM json_each(?)) AND node <> ? AND expires_at > 0"
)
#: A lease is free when released (``expires_at = 0``) or when its node is no longer alive.
ACQUIRE = (
    "INSERT INTO netra_leases (user_id, node, epoch, expires_at) "
    f"SELECT value, ?, 1, {NOW} FROM json_each(?) WHERE true "
    "ON CONFLICT (user_id) DO UPDATE SET node = excluded.node, "
    "epoch = netra_leases.epoch + 1, expires_at = excluded.expires_at "
    "WHERE netra_leases.expires_at <= 0 OR netra_leases.node = excluded.node "
    f"OR NOT {node_live('netra_leases.node', NOW)} "
    "RETURNING user_id, epoch"
)
#: A claim's check: the users (``[[user, head], …]``) whose head moved since the claim's read.
STALE_HEADS = (
    "SELECT j.value ->> 0 FROM json_each(?) AS j WHERE coalesce((SELECT MAX(seq) "
    "FROM netra_events WHERE user_id = j.value ->> 0), 0) IS NOT j.value ->> 1"
)
SPOIL = (
    "UPDATE netra_leases SET epoch = epoch + 1, expires_at = 0 "
    "WHERE user_id IN (SELECT value FROM json_each(?)) AND node = ?"
)
RELEASE = "UPDATE netra_leases SET expires_at = 0 WHERE user_id = ? AND node = ? AND epoch = ?"
RELEASE_ALL = "UPDATE netra_leases SET expires_at = 0 WHERE node = ? AND expires_at > 0"
#: The other nodes alive now (each may be proven gone: ``_incarnation.py``).
LIVE_NODES = f"SELECT node FROM netra_nodes WHERE expires_at > {NOW} AND node <> ?"
#: A node proven gone: its row goes, and with it every lease that refers to it (one row).
FORGET_NODE = "DELETE FROM netra_nodes WHERE node = ?"
#: Rows of nodes that lapsed long ago (:data:`~._leases.FORGET_AFTER`): they hold nothing.
FORGET_LAPSED = f"DELETE FROM netra_nodes WHERE expires_at < {NOW} - ?"
#: The lease check of a batch's fenced units, one statement over ``[[user, epoch], …]``
#: (inside BEGIN IMMEDIATE, which holds the write lock: no other node changes a lease row before
#: this transaction ends). Each pair is looked up by the primary key (the node's own leases are
#: never scanned); only the pairs whose lease row does not say (this node, that epoch) come back.
FENCE = (
    "SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?) AS j "
    "LEFT JOIN netra_leases AS l ON l.user_id = j.value ->> 0 "
    "WHERE l.node IS NOT ? OR l.epoch IS NOT j.value ->> 1"
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
WAL_SIZE_LIMIT = 4 * 1024 * 1024
"""``journal_size_limit``: the WAL file is cut back to this size whenever a checkpoint resets it
(the writer also truncates it to nothing when idle: :mod:`._sqlite_writer`)."""
#: Users (or ids) per ``IN (…)`` list (well under SQLite's variable limit).
LOAD_CHUNK = 500


def chunks(items: Sequence[T]) -> Iterator[tuple[Sequence[T], str]]:
    """``items`` in slices of :data:`LOAD_CHUNK`, each with its ``?, ?, …`` placeholders."""
    for i in range(0, len(items), LOAD_CHUNK):
        chunk = items[i : i + LOAD_CHUNK]
        yield chunk, ", ".join("?" * len(chunk))


class SqliteFile:
    """Where the database is and how every connection to it is set up."""

    def __init__(self, config: RuntimeConfig) -> None:
        url = make_url(config.database_url)
        path = url.database or ""
        if path in ("", ":memory:"):
            # One private in-memory database shared by the writer, the reader and the engine.
            self.target = f"file:netra_mem_{id(self):x}?mode=memory&cache=shared"
            self.uri = True
            self.in_memory = True
        else:
            self.target = path
            self.uri = path.startswith("file:")
            self.in_memory = self.uri and "mode=memory" in path
            if not self.uri:
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
        cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
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


class SqliteDialect:
    """The group commit's transactions and driver calls on the writer's connection (one object
    per writer: it is its own :class:`~._dialect.Transaction`)."""

    sorts_units = True
    """In key order, the rows land in the primary-key B-tree as one sweep instead of at random
    pages (units arrive in trio's scheduling order)."""

    def __init__(
        self, conn: Connection, owner: HookOwner, incarnation: FileIncarnation | None = None
    ) -> None:
        self._conn = conn
        self._raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        self._owner = owner
        self._incarnation = incarnation
        self._begun = False
        """The next transaction's ``BEGIN IMMEDIATE`` has run already (:meth:`begin_now`)."""

    def begin_now(self, busy_timeout: float) -> bool:
        """``BEGIN IMMEDIATE`` if nobody else holds the write lock (no busy wait); True if
        begun: the next :meth:`transaction` (on the fast path) goes on from there."""
        raw = self._raw
        raw.execute("PRAGMA busy_timeout=0")
        try:
            self._exec("BEGIN IMMEDIATE")
        except sqlite3.Error:  # busy, or worse: the writer thread meets it and reports it
            return False
        finally:
            raw.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        self._begun = True
        return True

    def transaction(
        self, *, with_statements: bool, isolated: bool
    ) -> AbstractAsyncContextManager[SqliteDialect]:
        if with_statements or isolated:
            # SQLAlchemy begins with BEGIN IMMEDIATE too (SqliteFile.listen), on the same
            # connection: the raw calls run inside its transaction.
            return Synchronous(self._conn.begin(), self)
        return self  # BEGIN IMMEDIATE … COMMIT on the raw connection (the fast path)

    async def __aenter__(self) -> SqliteDialect:
        if self._begun:
            self._begun = False
        else:
            self._exec("BEGIN IMMEDIATE")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        if exc_type is None:
            try:
                self._exec("COMMIT")
                return
            except BaseException:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._raw.in_transaction:
            try:
                self._raw.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("ROLLBACK failed")

    def savepoint(self) -> AbstractAsyncContextManager[Any]:
        return Synchronous(self._conn.begin_nested(), None)

    def _exec(self, sql: str, rows: Any = None) -> None:
        hook = self._owner.statement_hook
        if hook is not None:
            hook(sql)
        if rows is None:
            self._raw.execute(sql)
        else:
            self._raw.executemany(sql, rows)

    def _bulk(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Every row of ``rows`` by a few multi-row statements (see :data:`INSERT_EVENTS`)."""
        hook = self._owner.statement_hook
        execute = self._raw.execute
        for start, size in blocks(len(rows)):
            statement = block_statement(sql, size)
            if hook is not None:
                hook(statement)
            execute(statement, list(_flatten(rows[start : start + size])))

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        hook = self._owner.statement_hook
        if hook is not None:
            hook(sql)
        return self._raw.execute(sql, params).fetchall()

    # -- the driver calls (see Transaction) --------------------------------------------------

    async def renew(self, node: str, ttl: float) -> None:
        self._query(RENEW, (node, ttl))

    async def others_alive(self, node: str) -> bool:
        return bool(self._query(OTHERS_ALIVE, (node,))[0][0])

    async def ours(self, node: str) -> dict[str, int]:
        return dict(self._query(OURS, (node,)))

    async def others_of(self, users: list[str], node: str) -> set[str]:
        return {row[0] for row in self._query(OTHERS_OF, (json.dumps(users), node))}

    async def acquire(self, users: list[str], node: str, ttl: float) -> list[tuple[str, int]]:
        return self._query(ACQUIRE, (node, json.dumps(users)))

    async def stale_heads(self, heads: list[tuple[str, int]]) -> set[str]:
        return {row[0] for row in self._query(STALE_HEADS, (json.dumps(heads),))}

    async def spoil(self, users: list[str], node: str) -> None:
        self._query(SPOIL, (json.dumps(users), node))

    async def release(self, leases: list[tuple[str, int]], node: str) -> None:
        self._exec(RELEASE, [(user_id, node, epoch) for user_id, epoch in leases])

    async def release_all(self, node: str) -> None:
        self._exec(RELEASE_ALL, [(node,)])

    async def live_nodes(self, node: str) -> list[str]:
        return [row[0] for row in self._query(LIVE_NODES, (node,))]

    async def dead_nodes(self, nodes: list[str]) -> list[str]:
        return [] if self._incarnation is None else self._incarnation.dead(nodes)

    async def forget_nodes(self, nodes: list[str], lapsed_for: float) -> None:
        if nodes:
            self._exec(FORGET_NODE, [(node,) for node in nodes])
        self._query(FORGET_LAPSED, (lapsed_for,))

    async def post(self, commands: list[tuple[Any, ...]]) -> None:
        self._exec(POST, commands)

    async def take_replies(self, request_ids: list[str]) -> dict[str, tuple[bool, str]]:
        found: dict[str, tuple[bool, str]] = {}
        for chunk, marks in chunks(request_ids):
            for request_id, ok, payload in self._query(
                f"DELETE FROM netra_replies WHERE request_id IN ({marks}) "
                "RETURNING request_id, ok, payload",
                chunk,
            ):
                found[request_id] = (bool(ok), payload)
        return found

    async def fence(self, leases: list[tuple[str, int]], node: str) -> set[tuple[str, int]]:
        return {(u, int(e)) for u, e in self._query(FENCE, (json.dumps(leases), node))}

    async def write(self, units: Sequence[Pending]) -> None:
        for sql, params in erase_statements(units):  # first: a unit's own rows come after
            self._exec(sql, [params])
        rows = event_rows(units)
        if rows:
            self._bulk(INSERT_EVENTS, rows)
        runs = run_rows(units)
        if runs:
            self._bulk(UPSERT_RUNS, runs)
        threads = thread_rows(units)
        if threads:
            self._bulk(UPSERT_THREADS, threads)
        ids = message_id_rows(units, time.time())
        if ids:
            self._exec(INSERT_MESSAGE_IDS, ids)
        done = done_rows(units)
        if done:
            self._exec(INBOX_DONE, done)
        replies = reply_rows(units, time.time())
        if replies:
            self._exec(INSERT_REPLIES, replies)
        for p in units:
            if p.unit.statements:
                apply_statements(self._conn, p.unit)


# -- running async code whose calls never suspend --------------------------------------------


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (it awaits only SQLite's calls) to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("a SQLite driver call suspended")


class Synchronous(AbstractAsyncContextManager[T]):
    """A synchronous context manager used as an asynchronous one (under :func:`drive`) that
    gives ``value``."""

    def __init__(self, cm: AbstractContextManager[Any], value: T) -> None:
        self._cm = cm
        self._value = value

    async def __aenter__(self) -> T:
        self._cm.__enter__()
        return self._value

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return self._cm.__exit__(*exc_info)
