"""PostgreSQL's driver calls: the statements of the group commit, on asyncpg.

The fast path (no developers' statements) runs on the writer's connection (:mod:`._pg_writer`):
the lease and inbox statements the batch needs, then its rows as **one statement**
(:func:`write_statement`): the lease check (``FOR SHARE``), every event, run, thread summary,
message id, consumed command and reply as a data-modifying CTE over ``unnest`` arrays, and the
``pg_notify`` hints, all under "no lease was lost". ``BEGIN`` is sent only before a statement
that needs it: a batch of units alone is that one statement, a transaction of its own — one
round trip. Batches with developers' statements run through SQLAlchemy's asyncio engine
(``run_sync``), since those are SQLAlchemy objects, with the lease statements and the rest of the
rows on the raw asyncpg connection under it. Every statement is one over arrays; the lease
statements use PostgreSQL's clock (:data:`NOW`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._exceptions import StoreError
from ._erase import erase_statements, erased_users, numbered
from ._incarnation import PG_DEAD, PG_UNLOCK
from ._rows import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    RUN_MUTABLE,
    UPSERT_SET,
    HookOwner,
    done_rows,
    event_rows,
    head_rows,
    message_id_rows,
    node_live,
    reply_rows,
    run_rows,
    thread_rows,
)
from ._schema import events, runs
from ._staged import apply_statements
from ._waiting import Pending

try:  # an optional extra: netra_actors imports the PostgreSQL modules only to open such a store
    import asyncpg as asyncpg  # the other PostgreSQL modules import it from here
except ModuleNotFoundError as exc:  # pragma: no cover - the dev extra installs asyncpg
    raise StoreError(
        "PostgreSQL needs the asyncpg driver: pip install 'netra-actors[postgres]'"
    ) from exc

_RUN_TYPES = (
    *("text", "text", "text", "text", "int4", "text", "text", "text", "float8", "float8"),
    *("text", "int4", "int4", "text", "float8"),
)


#: The database's clock, in seconds since the epoch (every lease time is on it).
NOW = "extract(epoch from clock_timestamp())::float8"
#: The bulk renewal: one row, this node's (``netra_nodes``), however many users it owns.
RENEW = (
    f"INSERT INTO netra_nodes (node, expires_at) VALUES ($1, {NOW} + $2) "
    "ON CONFLICT (node) DO UPDATE SET expires_at = excluded.expires_at"
)
OURS = "SELECT user_id, epoch FROM netra_leases WHERE node = $1 AND expires_at > 0"
OTHERS_ALIVE = f"SELECT EXISTS (SELECT 1 FROM netra_nodes WHERE node <> $1 AND expires_at > {NOW})"
#: Unreleased leases of other nodes among the batch's users: an acquisition of one of these is a
#: takeover (for the statistics; the decision is the upsert's, on the latest row version).
OTHERS_OF = (
    "SELECT user_id FROM netra_leases WHERE user_id = ANY($1::text[]) AND node <> $2 "
    "AND expires_at > 0"
)
#: Takes many users' leases in one statement. A lease is free when released (``expires_at =
#: 0``) or when its node is no longer alive.
ACQUIRE = (
    "INSERT INTO netra_leases (user_id, node, epoch, expires_at) "
    f"SELECT u, $2, 1, {NOW} FROM unnest($1::text[]) AS t(u) ORDER BY u "
    "ON CONFLICT (user_id) DO UPDATE SET node = excluded.node, "
    "epoch = netra_leases.epoch + 1, expires_at = excluded.expires_at "
    "WHERE netra_leases.expires_at <= 0 OR netra_leases.node = excluded.node "
    f"OR NOT {node_live('netra_leases.node', NOW)} "
    "RETURNING user_id, epoch"
)
#: A claim's check: the users whose head moved since the claim's read.
STALE_HEADS = (
    "SELECT t.u FROM unnest($1::text[], $2::int8[]) AS t(u, h) WHERE coalesce((SELECT max(seq) "
    "FROM netra_events WHERE user_id = t.u), 0) <> t.h"
)
SPOIL = (
    "UPDATE netra_leases SET epoch = epoch + 1, expires_at = 0 "
    "WHERE user_id = ANY($1::text[]) AND node = $2"
)
RELEASE = (
    "UPDATE netra_leases AS l SET expires_at = 0 "
    "FROM unnest($1::text[], $2::int8[]) AS r(user_id, epoch) "
    "WHERE l.user_id = r.user_id AND l.epoch = r.epoch AND l.node = $3"
)
RELEASE_ALL = "UPDATE netra_leases SET expires_at = 0 WHERE node = $1 AND expires_at > 0"
#: The other nodes alive now (each may be proven gone: ``_incarnation.py``).
LIVE_NODES = f"SELECT node FROM netra_nodes WHERE expires_at > {NOW} AND node <> $1"
#: Nodes proven gone: their rows go, and with them every lease that refers to them.
FORGET_NODES = "DELETE FROM netra_nodes WHERE node = ANY($1::text[])"
#: Rows of nodes that lapsed long ago (:data:`~._leases.FORGET_AFTER`): they hold nothing.
FORGET_LAPSED = f"DELETE FROM netra_nodes WHERE expires_at < {NOW} - $1"
#: The lease check over ``(user, epoch)`` arrays: each lease row looked up by key and locked
#: ``FOR SHARE`` (a takeover's upsert of it waits until this transaction ends); only the pairs
#: whose lease row does not say (this node, that epoch) come back.
FENCE = (
    "WITH l AS (SELECT user_id, node, epoch FROM netra_leases "
    "WHERE user_id = ANY($1::text[]) FOR SHARE) "
    "SELECT t.u, t.e FROM unnest($1::text[], $2::int8[]) AS t(u, e) "
    "LEFT JOIN l ON l.user_id = t.u "
    "WHERE l.node IS DISTINCT FROM $3 OR l.epoch IS DISTINCT FROM t.e"
)
POST = (
    "INSERT INTO netra_inbox (user_id, request_id, kind, payload, created_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[]) "
    "ON CONFLICT (request_id) DO NOTHING"
)
NOTIFY_INBOX = "SELECT pg_notify('netra_inbox', u) FROM unnest($1::text[]) AS t(u)"
TAKE_REPLIES = (
    "DELETE FROM netra_replies WHERE request_id = ANY($1::text[]) RETURNING request_id, ok, payload"
)
#: The lease check over ``(user, epoch)`` arrays, as the first parts of :func:`write_statement`:
#: the same lookup as :data:`FENCE` (each lease row by key, locked ``FOR SHARE``), ``lost`` the
#: pairs whose row does not say (this node, that epoch).
FENCED = (
    "WITH l AS (SELECT user_id, node, epoch FROM netra_leases "
    "WHERE user_id = ANY($1::text[]) FOR SHARE), "
    "lost AS (SELECT t.u, t.e FROM unnest($1::text[], $2::int8[]) AS t(u, e) "
    "LEFT JOIN l ON l.user_id = t.u "
    "WHERE l.node IS DISTINCT FROM $3 OR l.epoch IS DISTINCT FROM t.e)"
)
#: Each part of a batch's write: (its statement over ``unnest`` of arrays — ``{a}``: the array
#: parameters, ``{ok}``: the condition that no lease was lost —, the arrays' types).
_EVENT_TYPES = ("text", "int4", "text", "text", "float8", "text", "text")
_PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "events": (
        f"INSERT INTO netra_events ({', '.join(EVENT_COLUMNS)}) SELECT * FROM unnest({{a}}) "
        "WHERE {ok}",
        _EVENT_TYPES,
    ),
    "runs": (
        f"INSERT INTO netra_runs ({', '.join(RUN_COLUMNS)}) SELECT * FROM unnest({{a}}) "
        f"WHERE {{ok}} ON CONFLICT (user_id, run_id) DO UPDATE SET {UPSERT_SET}",
        _RUN_TYPES,
    ),
    "threads": (
        "INSERT INTO netra_threads (user_id, thread, title, created_ts, last_seq, last_ts) "
        "SELECT * FROM unnest({a}) WHERE {ok} ON CONFLICT (user_id, thread) DO UPDATE SET "
        "title = coalesce(netra_threads.title, excluded.title), last_seq = excluded.last_seq, "
        "last_ts = excluded.last_ts",
        ("text", "text", "text", "float8", "int4", "float8"),
    ),
    "ids": (
        "INSERT INTO netra_message_ids (user_id, message_id, thread, created_ts) "
        "SELECT * FROM unnest({a}) WHERE {ok}",
        ("text", "text", "text", "float8"),
    ),
    "done": (
        "DELETE FROM netra_inbox AS i USING unnest({a}) AS d(id, user_id) "
        "WHERE i.id = d.id AND i.user_id = d.user_id AND {ok}",
        ("int8", "text"),
    ),
    "replies": (
        "INSERT INTO netra_replies (request_id, user_id, ok, payload, created_at) "
        "SELECT * FROM unnest({a}) WHERE {ok} ON CONFLICT (request_id) DO NOTHING",
        ("text", "text", "bool", "text", "float8"),
    ),
}
_NO_LOSS = "NOT EXISTS (SELECT 1 FROM lost)"


@functools.cache
def write_statement(parts: tuple[str, ...], hints: bool) -> str:
    """A batch's whole write as one statement: the lease check (:data:`FENCED`), then each of
    ``parts`` (keys of :data:`_PARTS`, in order) as a data-modifying CTE, each writing only if
    no lease was lost; it returns the lost ``(user_id, epoch)`` pairs. With ``hints``, the
    ``pg_notify`` calls of two more arrays (channels, payloads) run too, in their order, under
    the same condition, and one more row comes back (``user_id`` NULL). Parameters: ``$1``,
    ``$2`` the fenced users and epochs, ``$3`` the node, then every part's arrays."""
    ctes = [FENCED]
    n = 4
    for k, part in enumerate(parts):
        sql, types = _PARTS[part]
        arrays = ", ".join(f"${n + i}::{t}[]" for i, t in enumerate(types))
        n += len(types)
        ctes.append(f"w{k} AS ({sql.format(a=arrays, ok=_NO_LOSS)})")
    out = ", ".join(ctes) + " SELECT u, e FROM lost"
    if hints:
        out += (
            f" UNION ALL SELECT NULL, count(pg_notify(h.c, h.p)) FROM unnest(${n}::text[], "
            f"${n + 1}::text[]) AS h(c, p) WHERE {_NO_LOSS}"
        )
    return out


def _columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


class PgDialect:
    """The group commit's transactions on PostgreSQL (see the module's docstring)."""

    sorts_units = False

    def __init__(
        self, connection: Callable[[], Awaitable[Any]], sa_engine: AsyncEngine, owner: HookOwner
    ) -> None:
        self._connection = connection
        """The writer's asyncpg connection (reconnected if it was closed)."""
        self._sa_engine = sa_engine
        """A one-connection engine for the batches with developers' statements."""
        self._owner = owner

    @contextlib.asynccontextmanager
    async def transaction(
        self, *, with_statements: bool, isolated: bool
    ) -> AsyncIterator[PgTransaction]:
        if with_statements:
            async with self._sa_engine.begin() as sa_conn:
                # The same transaction on the raw asyncpg connection under SQLAlchemy (the
                # first statement makes SQLAlchemy start it).
                await sa_conn.exec_driver_sql("SELECT 1")
                raw = (await sa_conn.get_raw_connection()).driver_connection
                yield PgSaTransaction(raw, self._owner, sa_conn)
            return
        conn = await self._connection()
        tx = PgTransaction(conn, self._owner, folds=not isolated)
        if isolated:  # its SAVEPOINTs need the transaction
            await tx.begin()
        try:
            yield tx
        except BaseException:
            if tx.transaction is not None:
                await tx.transaction.rollback()
            raise
        if tx.transaction is not None:
            await tx.transaction.commit()


class PgTransaction:
    """The driver calls on a raw asyncpg connection inside its transaction (the fast path).

    ``BEGIN`` is sent before the first statement that needs it: a batch of units only is one
    statement (:meth:`write`), which PostgreSQL runs as its own transaction — one round trip.
    With ``folds``, the lease check is not a statement of its own: :meth:`fence` leaves it to
    :meth:`write`, whose statement checks the leases and writes (:func:`write_statement`).
    """

    def __init__(self, conn: Any, owner: HookOwner, *, folds: bool = False) -> None:
        self._conn = conn
        self._owner = owner
        self._folds = folds
        self._fence_node: str | None = None
        """The node of a lease check left to :meth:`write` (``folds``)."""
        self.transaction: Any = None
        """The asyncpg transaction this began (:meth:`begin`), to commit or roll back."""
        self._begun = False

    async def begin(self) -> None:
        if not self._begun:
            self._begun = True
            transaction = self._conn.transaction()
            await transaction.start()
            self.transaction = transaction  # (one that failed to start has nothing to undo)

    def _hook(self, sql: str) -> None:
        hook = self._owner.statement_hook
        if hook is not None:
            hook(sql)

    async def _exec(self, sql: str, *args: Any) -> None:
        await self.begin()
        self._hook(sql)
        await self._conn.execute(sql, *args)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        await self.begin()
        self._hook(sql)
        rows: list[Any] = await self._conn.fetch(sql, *args)
        return rows

    async def renew(self, node: str, ttl: float) -> None:
        await self._exec(RENEW, node, ttl)

    async def others_alive(self, node: str) -> bool:
        return bool((await self._fetch(OTHERS_ALIVE, node))[0][0])

    async def ours(self, node: str) -> dict[str, int]:
        return {r[0]: r[1] for r in await self._fetch(OURS, node)}

    async def others_of(self, users: list[str], node: str) -> set[str]:
        return {row[0] for row in await self._fetch(OTHERS_OF, users, node)}

    async def acquire(self, users: list[str], node: str, ttl: float) -> list[tuple[str, int]]:
        return [(r[0], r[1]) for r in await self._fetch(ACQUIRE, users, node)]

    async def stale_heads(self, heads: list[tuple[str, int]]) -> set[str]:
        rows = await self._fetch(STALE_HEADS, [u for u, _ in heads], [h for _, h in heads])
        return {row[0] for row in rows}

    async def spoil(self, users: list[str], node: str) -> None:
        await self._exec(SPOIL, users, node)

    async def release(self, leases: list[tuple[str, int]], node: str) -> None:
        await self._exec(RELEASE, [u for u, _ in leases], [e for _, e in leases], node)

    async def release_all(self, node: str) -> None:
        await self._exec(RELEASE_ALL, node)

    async def live_nodes(self, node: str) -> list[str]:
        return [row[0] for row in await self._fetch(LIVE_NODES, node)]

    async def dead_nodes(self, nodes: list[str]) -> list[str]:
        dead = [row[0] for row in await self._fetch(PG_DEAD, nodes)]
        if dead:  # taken only to prove it: give them back at once
            await self._fetch(PG_UNLOCK, dead)
        return dead

    async def forget_nodes(self, nodes: list[str], lapsed_for: float) -> None:
        if nodes:
            await self._exec(FORGET_NODES, nodes)
        await self._exec(FORGET_LAPSED, lapsed_for)

    async def post(self, commands: list[tuple[Any, ...]]) -> None:
        await self._exec(POST, *_columns(commands))
        await self._exec(NOTIFY_INBOX, list(dict.fromkeys(c[0] for c in commands)))

    async def take_replies(self, request_ids: list[str]) -> dict[str, tuple[bool, str]]:
        rows = await self._fetch(TAKE_REPLIES, request_ids)
        return {r: (bool(ok), payload) for r, ok, payload in rows}

    async def fence(self, leases: list[tuple[str, int]], node: str) -> set[tuple[str, int]] | None:
        if self._folds:
            self._fence_node = node  # checked by write's statement, with the writes
            return None
        return await self._fence(leases, node)

    async def _fence(self, leases: list[tuple[str, int]], node: str) -> set[tuple[str, int]]:
        rows = await self._fetch(FENCE, [u for u, _ in leases], [e for _, e in leases], node)
        return {(row[0], int(row[1])) for row in rows}

    def savepoint(self) -> AbstractAsyncContextManager[Any]:
        savepoint: AbstractAsyncContextManager[Any] = self._conn.transaction()
        return savepoint

    async def write(self, units: Sequence[Pending]) -> set[tuple[str, int]] | None:
        """The rows of ``units`` in one statement (:func:`write_statement`). With a lease check
        left to it (:meth:`fence`), that statement writes only if every fenced unit passes; if
        some did not, nothing was written and it runs again without them (each time in the
        same transaction, or as a transaction of its own): the lost pairs come back."""
        node, self._fence_node = self._fence_node, None
        lost: set[tuple[str, int]] = set()
        if node is not None and any(p.unit.erase is not None for p in units):
            # An erasure runs before the rows, and only for units that passed their check.
            lost = await self._fence(_pairs(units), node)
            units = [p for p in units if (p.user_id, p.epoch) not in lost]
            node = None
        await self._erase(units)
        while units:  # each round drops at least one unit
            got = await self._write_rows(units, node, with_rows=True)
            if not got:
                break
            lost |= got
            units = [p for p in units if (p.user_id, p.epoch) not in got]
        return lost

    async def _erase(self, units: Sequence[Pending]) -> None:
        """The erasing statements of the batch, first (``_erase.py``)."""
        for sql, params in erase_statements(units):
            await self._exec(numbered(sql), *params)

    async def _write_rows(
        self, units: Sequence[Pending], node: str | None, *, with_rows: bool
    ) -> set[tuple[str, int]]:
        """One statement: the lease check of ``units`` (if ``node``), then (``with_rows``) their
        events and runs, the thread summary, client message ids, consumed commands, replies,
        and the hints (delivered by PostgreSQL at COMMIT). Returns the lost pairs."""
        now = time.time()
        parts: list[str] = []
        args: list[Any] = []
        pairs = _pairs(units) if node is not None else []
        args += ([u for u, _ in pairs], [e for _, e in pairs], node)
        for part, rows in (
            ("events", event_rows(units) if with_rows else ()),
            ("runs", run_rows(units) if with_rows else ()),
            ("threads", thread_rows(units)),
            ("ids", message_id_rows(units, now)),
            ("done", done_rows(units)),
            ("replies", reply_rows(units, now)),
        ):
            if rows:
                parts.append(part)
                args += _columns(rows)
        channels, payloads = _hints(units)
        if not parts and not channels:
            return set()
        if channels:
            args += (channels, payloads)
        sql = write_statement(tuple(parts), bool(channels))
        self._hook(sql)
        rows = await self._conn.fetch(sql, *args)
        return {(row[0], int(row[1])) for row in rows if row[0] is not None}


def _pairs(units: Sequence[Pending]) -> list[tuple[str, int]]:
    return sorted({(p.user_id, p.epoch) for p in units if p.epoch is not None})


def _hints(units: Sequence[Pending]) -> tuple[list[str], list[str]]:
    """The ``pg_notify`` calls of a batch, in order: ``(channels, payloads)`` — each reply's
    request id, then each user's new head (``0``: the user was erased)."""
    channels: list[str] = []
    payloads: list[str] = []
    for p in units:
        for reply in p.unit.replies:
            channels.append("netra_replies")
            payloads.append(reply[0])
    users, seqs = head_rows(units)
    users += erased_users(units)
    seqs += [0] * (len(users) - len(seqs))
    for user_id, seq in zip(users, seqs, strict=True):
        channels.append("netra_events")
        payloads.append(f"{user_id} {seq}")
    return channels, payloads


class PgSaTransaction(PgTransaction):
    """A transaction of SQLAlchemy's (a batch with developers' statements): the rows and those
    statements go through SQLAlchemy, the rest on the raw asyncpg connection under it."""

    def __init__(self, raw: Any, owner: HookOwner, sa_conn: AsyncConnection) -> None:
        super().__init__(raw, owner)
        self._sa_conn = sa_conn
        self._begun = True  # SQLAlchemy's transaction

    def savepoint(self) -> AbstractAsyncContextManager[Any]:
        return self._sa_conn.begin_nested()

    async def write(self, units: Sequence[Pending]) -> None:
        await self._erase(units)
        await self._sa_conn.run_sync(_apply_sa, units)
        await self._write_rows(units, None, with_rows=False)


# -- the SQLAlchemy path (batches with developers' statements) -------------------------------


def _upsert() -> Any:
    stmt = pg_insert(runs)
    return stmt.on_conflict_do_update(
        index_elements=[runs.c.user_id, runs.c.run_id],
        set_={name: stmt.excluded[name] for name in RUN_MUTABLE},
    )


def _write_sa(conn: Connection, batch: Sequence[Pending]) -> None:
    rows = [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in event_rows(batch)]
    if rows:
        conn.execute(events.insert(), rows)
    run_list = [dict(zip(RUN_COLUMNS, r, strict=True)) for r in run_rows(batch)]
    if run_list:
        conn.execute(_upsert(), run_list)


def _apply_sa(conn: Connection, batch: Sequence[Pending]) -> None:
    _write_sa(conn, batch)
    for p in batch:
        if p.unit.statements:
            apply_statements(conn, p.unit)
