"""PostgreSQL: the group-commit writer holds one asyncpg connection on the asyncio host loop.

The process runs trio as a guest of asyncio, so the writer runs in the same thread as the actors:
trio hands it units with ``loop.call_soon`` (once per wake-up, not per unit) and it hands the
outcomes back with one ``run_sync_soon`` per batch. The fast path (no developer statements) is one
asyncpg transaction: ``COPY`` of every event row, one ``INSERT … SELECT FROM unnest(…) ON CONFLICT
… DO UPDATE`` of every run row, ``COMMIT``. Batches with developers' statements go through
SQLAlchemy's asyncio engine (``run_sync``), since those statements are SQLAlchemy objects.

Every transaction starts with the lease statements the batch needs, each one statement over
arrays (bulk renewal, acquisitions, releases, the ``FOR SHARE`` lease check of fenced units) and
ends with the ``pg_notify`` hints of its commits; :class:`PgListener` receives them.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from typing import Any

import outcome
from sqlalchemy import Connection, MetaData, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from .._bridge import Bridge
from .._config import RuntimeConfig
from .._exceptions import StoreError
from .._values import Event
from ._base import EventHint, InboxItem, NameHint
from ._common import (
    EVENT_COLUMNS,
    EVENT_SELECT,
    INBOX_SELECT,
    LIVE_STATE_VALUES,
    RUN_COLUMNS,
    RUN_MUTABLE,
    RUN_SELECT,
    UPSERT_SET,
    Leases,
    Op,
    Pending,
    Prelude,
    Read,
    Stats,
    Waiter,
    apply_statements,
    as_store_error,
    done_rows,
    event_rows,
    fail_all,
    finish,
    head_rows,
    inbox_item,
    log,
    make_orm_transient,
    reply_rows,
    resume_now,
    run_rows,
    short,
    split_batch,
    wait_outcome,
)
from ._schema import events, migrate, runs
from ._sqlite import HookOwner, snapshot

try:  # an optional extra: netra_actors imports this module only to open a PostgreSQL store
    import asyncpg
except ModuleNotFoundError as exc:  # pragma: no cover - the dev extra installs asyncpg
    raise StoreError(
        "PostgreSQL needs the asyncpg driver: pip install 'netra-actors[postgres]'"
    ) from exc

COPY_EVENTS = f"COPY netra_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT binary)"
_RUN_TYPES = ("text", "text", "text", "text", "int4", "text", "text", "text", "float8", "float8")
UPSERT_RUNS = (
    f"INSERT INTO netra_runs ({', '.join(RUN_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_RUN_TYPES, 1))
    + f") ON CONFLICT (user_id, run_id) DO UPDATE SET {UPSERT_SET}"
)


#: The database's clock, in seconds since the epoch (every lease time is on it).
NOW = "extract(epoch from clock_timestamp())::float8"
RENEW = f"UPDATE netra_leases SET expires_at = {NOW} + $2 WHERE node = $1 AND expires_at > 0"
OURS = "SELECT user_id, epoch FROM netra_leases WHERE node = $1 AND expires_at > 0"
#: Unreleased leases of other nodes among the batch's users: an acquisition of one of these is a
#: takeover (for the statistics; the decision is the upsert's, on the latest row version).
OTHERS_OF = (
    "SELECT user_id FROM netra_leases WHERE user_id = ANY($1::text[]) AND node <> $2 "
    "AND expires_at > 0"
)
#: Takes many users' leases in one statement.
ACQUIRE = (
    "INSERT INTO netra_leases (user_id, node, epoch, expires_at) "
    f"SELECT u, $2, 1, {NOW} + $3 FROM unnest($1::text[]) AS t(u) ORDER BY u "
    "ON CONFLICT (user_id) DO UPDATE SET node = excluded.node, "
    "epoch = netra_leases.epoch + 1, expires_at = excluded.expires_at "
    f"WHERE netra_leases.expires_at <= {NOW} OR netra_leases.node = excluded.node "
    "RETURNING user_id, epoch"
)
RELEASE = (
    "UPDATE netra_leases AS l SET expires_at = 0 "
    "FROM unnest($1::text[], $2::int8[]) AS r(user_id, epoch) "
    "WHERE l.user_id = r.user_id AND l.epoch = r.epoch AND l.node = $3"
)
RELEASE_ALL = "UPDATE netra_leases SET expires_at = 0 WHERE node = $1 AND expires_at > 0"
#: ``FOR SHARE``: a takeover's upsert of these rows waits until this transaction ends.
FENCE = (
    "SELECT user_id, epoch FROM netra_leases WHERE user_id = ANY($1::text[]) AND node = $2 "
    "FOR SHARE"
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
INBOX_DONE = (
    "DELETE FROM netra_inbox AS i USING unnest($1::int8[], $2::text[]) AS d(id, user_id) "
    "WHERE i.id = d.id AND i.user_id = d.user_id"
)
INSERT_REPLIES = (
    "INSERT INTO netra_replies (request_id, user_id, ok, payload, created_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::float8[]) "
    "ON CONFLICT (request_id) DO NOTHING"
)
NOTIFY_REPLIES = "SELECT pg_notify('netra_replies', r) FROM unnest($1::text[]) AS t(r)"
NOTIFY_EVENTS = (
    "SELECT pg_notify('netra_events', u || ' ' || s::text) "
    "FROM unnest($1::text[], $2::int8[]) AS t(u, s)"
)
CHANNELS = ("netra_events", "netra_inbox", "netra_replies")


def _columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


class PgWriter:
    """The group-commit writer task on the asyncio loop, with its own asyncpg connection."""

    role = "writer"

    def __init__(
        self,
        bridge: Bridge,
        config: RuntimeConfig,
        dsn: str,
        sa_engine: AsyncEngine,
        extra: Sequence[MetaData],
        owner: HookOwner,
        stats: Stats,
        leases: Leases,
    ) -> None:
        self._bridge = bridge
        self._batch_max = config.commit_batch_max
        self._dsn = dsn
        self._sa_engine = sa_engine
        self._extra = tuple(extra)
        self._owner = owner
        self._stats = stats
        self._leases = leases
        self._queue: collections.deque[Pending | Op] = collections.deque()
        self._wake = asyncio.Event()
        self._wake_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_for = -1.0
        self._closing = False
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._exit_waiter: Waiter | None = None
        self.dead: str | None = None
        self.exited = False
        self.schema_versions = (0, 0)

    # -- trio side ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._bridge.run_on_host(self._open())

    def stopped_error(self) -> StoreError:
        return StoreError(f"the store {self.role} stopped: {self.dead}")

    def submit(self, p: Pending | Op) -> None:
        if self.dead is not None:
            p.fail(self.stopped_error())
            self._bridge.resume_soon([p])
            return
        self._queue.append(p)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._bridge.call_host(self._wake_up)

    def queued(self) -> int:
        return len(self._queue)

    async def stop(self) -> None:
        if self.exited or self._task is None:
            return
        self._exit_waiter = Waiter()
        self._bridge.call_host(self._request_stop)
        await wait_outcome(self._exit_waiter)

    def _on_exit(self, batch: list[Pending | Op], exc: BaseException | None) -> None:
        self.exited = True
        self.dead = short(exc) if exc is not None else (self.dead or "it was closed")
        left: list[Waiter] = [*batch, *self._queue]
        self._queue.clear()
        for w in left:
            if w.result is None:
                w.fail(self.stopped_error())
        if self._exit_waiter is not None:
            self._exit_waiter.result = outcome.Value(None)
            left.append(self._exit_waiter)
        resume_now(left)

    # -- asyncio side ------------------------------------------------------------------------

    async def _open(self) -> None:
        def on_execute(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
            hook = self._owner.statement_hook
            if hook is not None:
                hook(statement)

        event.listen(self._sa_engine.sync_engine, "before_cursor_execute", on_execute)
        try:
            async with self._sa_engine.begin() as conn:
                self.schema_versions = await conn.run_sync(migrate)
                for md in self._extra:
                    await conn.run_sync(md.create_all)
            self._conn = await asyncpg.connect(self._dsn)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open the database: {short(exc)}") from exc
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _wake_up(self) -> None:
        self._wake_scheduled = False
        self._wake.set()

    def _request_stop(self) -> None:
        self._closing = True
        self._wake.set()

    def _arm_renewal(self) -> None:
        """Wake the writer when the next bulk renewal is due (one timer per interval)."""
        due = self._leases.next_renewal
        if due == self._timer_for:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_for = due
        self._timer = asyncio.get_running_loop().call_later(
            self._leases.until_due(), self._renewal_due
        )

    def _renewal_due(self) -> None:
        self._timer_for = -1.0  # fired: re-arm next time round, even if it fired a bit early
        self._wake.set()

    async def _run(self) -> None:
        batch: list[Pending | Op] = []
        error: BaseException | None = None
        queue, batch_max, leases = self._queue, self._batch_max, self._leases
        try:
            while True:
                self._arm_renewal()
                await self._wake.wait()
                self._wake.clear()
                while queue or (leases.due(time.monotonic()) and not self._closing):
                    n = min(len(queue), batch_max)
                    batch = [queue.popleft() for _ in range(n)]
                    await self._commit_batch(batch)
                    if batch:
                        self._bridge.resume_soon(batch)
                    batch = []
                if self._closing:
                    break
        except BaseException as exc:  # a bug, or the task was cancelled: fail every waiter
            if not isinstance(exc, asyncio.CancelledError):
                log.critical("the store writer stopped", exc_info=True)
            error = exc
        if self._timer is not None:
            self._timer.cancel()
        try:
            if self._conn is not None:
                await self._conn.close()
        except Exception:
            log.exception("closing the writer's connection failed")
        self._bridge.to_trio(self._on_exit, batch, error)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, timeout=10)
        return self._conn

    def _hook(self, sql: str) -> None:
        hook = self._owner.statement_hook
        if hook is not None:
            hook(sql)

    async def _exec(self, conn: Any, sql: str, *args: Any) -> None:
        self._hook(sql)
        await conn.execute(sql, *args)

    async def _fetch(self, conn: Any, sql: str, *args: Any) -> list[Any]:
        self._hook(sql)
        rows: list[Any] = await conn.fetch(sql, *args)
        return rows

    async def _prelude(
        self, conn: Any, ops: Sequence[Op], units: Sequence[Pending], renew: bool
    ) -> Prelude:
        """The lease and inbox statements at the start of a transaction: one each over arrays."""
        pre = Prelude()
        leases = self._leases
        node, ttl = leases.node, leases.ttl
        if renew:
            await self._exec(conn, RENEW, node, ttl)
            if leases.late(time.monotonic()):
                pre.still_ours = {r[0]: r[1] for r in await self._fetch(conn, OURS, node)}
        by_kind: dict[str, list[Op]] = {}
        for op in ops:
            by_kind.setdefault(op.kind, []).append(op)
        if "acquire" in by_kind:
            users = sorted({op.args[0] for op in by_kind["acquire"]})
            others = {row[0] for row in await self._fetch(conn, OTHERS_OF, users, node)}
            pre.acquired = dict.fromkeys(users, (None, False))
            for user_id, epoch in await self._fetch(conn, ACQUIRE, users, node, ttl):
                pre.acquired[user_id] = (int(epoch), user_id in others)
        if "release" in by_kind:
            rel = by_kind["release"]
            await self._exec(
                conn, RELEASE, [op.args[0] for op in rel], [op.args[1] for op in rel], node
            )
        if "release_all" in by_kind:
            await self._exec(conn, RELEASE_ALL, node)
        if "post" in by_kind:
            await self._exec(conn, POST, *_columns([op.args for op in by_kind["post"]]))
            users = list(dict.fromkeys(op.args[0] for op in by_kind["post"]))
            await self._exec(conn, NOTIFY_INBOX, users)
        for op in by_kind.get("take_replies", ()):
            rows = await self._fetch(conn, TAKE_REPLIES, list(op.args[0]))
            pre.results[id(op)] = {r: (bool(ok), payload) for r, ok, payload in rows}
        fenced = [p for p in units if p.epoch is not None]
        if fenced:
            rows = await self._fetch(conn, FENCE, list({p.user_id for p in fenced}), node)
            epochs = {row[0]: row[1] for row in rows}
            for p in fenced:
                if epochs.get(p.user_id) != p.epoch:
                    pre.fenced.add(id(p))
        return pre

    async def _write(self, conn: Any, batch: Sequence[Pending]) -> None:
        rows = event_rows(batch)
        if rows:
            self._hook(COPY_EVENTS)
            await conn.copy_records_to_table("netra_events", records=rows, columns=EVENT_COLUMNS)
        run_list = run_rows(batch)
        if run_list:
            self._hook(UPSERT_RUNS)
            await conn.execute(UPSERT_RUNS, *_columns(run_list))
        await self._write_extras(conn, batch)

    async def _write_extras(self, conn: Any, batch: Sequence[Pending]) -> None:
        """Consumed commands, replies, and the hints (delivered by PostgreSQL at COMMIT)."""
        done = done_rows(batch)
        if done:
            await self._exec(conn, INBOX_DONE, *_columns(done))
        replies = reply_rows(batch, time.time())
        if replies:
            await self._exec(conn, INSERT_REPLIES, *_columns(replies))
            await self._exec(conn, NOTIFY_REPLIES, [r[0] for r in replies])
        users, seqs = head_rows(batch)
        if users:
            await self._exec(conn, NOTIFY_EVENTS, users, seqs)

    async def _attempt(
        self, units: Sequence[Pending], ops: Sequence[Op], renew: bool, isolated: bool
    ) -> Prelude:
        """One transaction: the prelude, then every unit that passed its lease check —
        together, or (``isolated``) each in its own SAVEPOINT so that a bad one fails alone."""
        if any(p.unit.statements for p in units):
            if isolated:
                make_orm_transient(units)
            async with self._sa_engine.begin() as sa_conn:
                # The same transaction on the raw asyncpg connection under SQLAlchemy (the
                # first statement makes SQLAlchemy start it).
                await sa_conn.exec_driver_sql("SELECT 1")
                raw = (await sa_conn.get_raw_connection()).driver_connection
                pre = await self._prelude(raw, ops, units, renew)
                live = [p for p in units if id(p) not in pre.fenced]
                if not isolated:
                    await sa_conn.run_sync(_apply_sa, live)
                    await self._write_extras(raw, live)
                    return pre
                for p in live:
                    try:
                        async with sa_conn.begin_nested():
                            await sa_conn.run_sync(_apply_sa, [p])
                            await self._write_extras(raw, (p,))
                    except Exception as exc:
                        log.warning("unit of work of user %r failed: %s", p.user_id, short(exc))
                        pre.errors[id(p)] = exc
            return pre
        conn = await self._connection()
        async with conn.transaction():
            pre = await self._prelude(conn, ops, units, renew)
            live = [p for p in units if id(p) not in pre.fenced]
            if not isolated:
                await self._write(conn, live)
                return pre
            for p in live:
                try:
                    async with conn.transaction():  # a SAVEPOINT
                        await self._write(conn, (p,))
                except Exception as exc:
                    log.warning("unit of user %r failed: %s", p.user_id, short(exc))
                    pre.errors[id(p)] = exc
        return pre

    async def _commit_batch(self, batch: list[Pending | Op]) -> None:
        stats, leases = self._stats, self._leases
        units, ops = split_batch(batch)
        began = time.monotonic()
        renew = leases.due(began)
        if not (units or ops or renew):
            return
        started = time.perf_counter()
        if units or ops:
            stats.batches += 1
        try:
            pre = await self._attempt(units, ops, renew, isolated=False)
        except Exception as exc:
            if units and (len(units) > 1 or ops or renew):
                log.warning(
                    "group commit of %d units failed (%s); retrying unit by unit",
                    len(units),
                    short(exc),
                )
                stats.isolated_retries += 1
                try:
                    pre = await self._attempt(units, ops, renew, isolated=True)
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


def _apply_sa(conn: Connection, batch: list[Pending]) -> None:
    _write_sa(conn, batch)
    for p in batch:
        if p.unit.statements:
            apply_statements(conn, p.unit)


# -- reads -------------------------------------------------------------------------------------


class PgReader:
    """Reads through an asyncpg pool on the asyncio loop; one hand-off back per request batch."""

    role = "reader"

    def __init__(self, bridge: Bridge, dsn: str, owner: HookOwner) -> None:
        self._bridge = bridge
        self._dsn = dsn
        self._owner = owner
        self._pool: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.load_calls = 0
        self.dead: str | None = None

    async def start(self) -> None:
        async def open_pool() -> None:
            try:
                self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4)
            except Exception as exc:
                raise StoreError(f"cannot open the database: {short(exc)}") from exc

        await self._bridge.run_on_host(open_pool())

    def submit(self, item: Read | list[Read]) -> None:
        self._bridge.call_host(self._spawn, item if isinstance(item, list) else [item])

    async def stop(self) -> None:
        async def close() -> None:
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._pool is not None:
                await self._pool.close()

        await self._bridge.run_on_host(close(), shield=True)

    def _spawn(self, reads: list[Read]) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reads))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reads: list[Read]) -> None:
        try:
            loads = [r for r in reads if r.kind == "load_user"]
            async with self._pool.acquire() as conn:
                if loads:
                    await self._load_users(conn, loads)
                for r in reads:
                    if r.kind != "load_user":
                        try:
                            r.result = outcome.Value(
                                await getattr(self, "_" + r.kind)(conn, *r.args)
                            )
                        except Exception as exc:
                            r.fail(as_store_error(exc))
        except BaseException as exc:
            for r in reads:
                if r.result is None:
                    r.fail(
                        as_store_error(exc) if isinstance(exc, Exception) else StoreError("closed")
                    )
            if not isinstance(exc, Exception):
                self._bridge.resume_soon(reads)
                raise
        self._bridge.resume_soon(reads)

    async def _fetch(self, conn: Any, sql: str, *args: Any) -> list[Any]:
        hook = self._owner.statement_hook
        if hook is not None:
            hook(sql)
        rows: list[Any] = await conn.fetch(sql, *args)
        return rows

    async def _load_users(self, conn: Any, loads: list[Read]) -> None:
        self.load_calls += 1
        users = list(dict.fromkeys(r.args for r in loads))
        try:
            heads = {
                u: h or 0
                for u, h in await self._fetch(
                    conn,
                    "SELECT user_id, MAX(seq) FROM netra_events WHERE user_id = ANY($1::text[]) "
                    "GROUP BY user_id",
                    users,
                )
            }
            live: dict[str, list[Any]] = {}
            for row in await self._fetch(
                conn,
                f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id = ANY($1::text[]) "
                "AND state = ANY($2::text[]) ORDER BY user_id, created_at, run_id",
                users,
                list(LIVE_STATE_VALUES),
            ):
                live.setdefault(row[0], []).append(tuple(row))
        except Exception as exc:
            for r in loads:
                r.fail(as_store_error(exc))
            return
        for r in loads:
            r.result = outcome.Value(snapshot(heads.get(r.args, 0), live.get(r.args, ())))

    async def _replay(self, conn: Any, user_id: str, after_seq: int, limit: int) -> list[Event]:
        rows = await self._fetch(
            conn,
            f"SELECT {EVENT_SELECT} FROM netra_events WHERE user_id = $1 AND seq > $2 "
            "ORDER BY seq LIMIT $3",
            user_id,
            after_seq,
            limit,
        )
        return [Event(*row) for row in rows]

    async def _first_event(self, conn: Any, user_id: str, run_id: str) -> Event | None:
        rows = await self._fetch(
            conn,
            f"SELECT {EVENT_SELECT} FROM netra_events WHERE user_id = $1 AND run_id = $2 "
            "ORDER BY seq LIMIT 1",
            user_id,
            run_id,
        )
        return Event(*rows[0]) if rows else None

    async def _get_run(self, conn: Any, user_id: str, run_id: str) -> Any:
        from ._common import run_info

        rows = await self._fetch(
            conn,
            f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id = $1 AND run_id = $2",
            user_id,
            run_id,
        )
        return run_info(tuple(rows[0])) if rows else None

    async def _list_runs(self, conn: Any, user_id: str, limit: int) -> list[Any]:
        from ._common import run_info

        rows = await self._fetch(
            conn,
            f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id = $1 "
            "ORDER BY created_at DESC, run_id DESC LIMIT $2",
            user_id,
            limit,
        )
        return [run_info(tuple(row)) for row in rows]

    async def _heads(self, conn: Any, user_ids: Sequence[str]) -> dict[str, int]:
        heads = dict.fromkeys(user_ids, 0)
        for user_id, head in await self._fetch(
            conn,
            "SELECT user_id, MAX(seq) FROM netra_events WHERE user_id = ANY($1::text[]) "
            "GROUP BY user_id",
            list(heads),
        ):
            heads[user_id] = head or 0
        return heads

    async def _free_leases(self, conn: Any, user_ids: Sequence[str]) -> list[str]:
        users = list(dict.fromkeys(user_ids))
        rows = await self._fetch(
            conn,
            "SELECT user_id FROM netra_leases WHERE user_id = ANY($1::text[]) "
            f"AND expires_at > {NOW}",
            users,
        )
        held = {row[0] for row in rows}
        return [u for u in users if u not in held]

    async def _take_commands(
        self, conn: Any, user_ids: Sequence[str] | None, limit: int
    ) -> list[InboxItem]:
        if user_ids is None:
            rows = await self._fetch(
                conn, f"SELECT {INBOX_SELECT} FROM netra_inbox ORDER BY id LIMIT $1", limit
            )
        else:
            rows = await self._fetch(
                conn,
                f"SELECT {INBOX_SELECT} FROM netra_inbox WHERE user_id = ANY($1::text[]) "
                "ORDER BY id LIMIT $2",
                list(user_ids),
                limit,
            )
        return [inbox_item(tuple(row)) for row in rows]

    async def _check(self, conn: Any) -> None:
        await self._fetch(conn, "SELECT 1")


# -- delivery hints ----------------------------------------------------------------------------


class PgListener:
    """One ``LISTEN`` connection per store on the asyncio loop, health-checked and reconnected.

    Notifications are hints (``user_id seq``, a user id, a request id), never data: they are
    handed to trio in one ``run_sync_soon`` per loop turn. After every (re)connect each callback
    gets its catch-up call (``None``): what was notified while the connection was down is lost.
    """

    health_interval = 2.0
    backoff_max = 2.0

    def __init__(self, bridge: Bridge, dsn: str, owner: HookOwner) -> None:
        self._bridge = bridge
        self._dsn = dsn
        self._owner = owner
        self._on_event: EventHint | None = None
        self._on_inbox: NameHint | None = None
        self._on_reply: NameHint | None = None
        self._pending: list[tuple[str | None, str | None]] = []
        self._task: asyncio.Task[None] | None = None
        self._first_attempt: Callable[[], None] | None = None
        self.connects = 0
        """Successful (re)connections so far."""
        self.conn: Any = None
        """The current listener connection (tests terminate it)."""

    def set_callbacks(
        self, on_event: EventHint, on_inbox: NameHint | None, on_reply: NameHint | None
    ) -> None:
        self._on_event, self._on_inbox, self._on_reply = on_event, on_inbox, on_reply

    def start(self, on_first_attempt: Callable[[], None]) -> None:
        """From trio (same thread as the host loop): start the listener task.
        ``on_first_attempt()`` is called (on the loop) once the first connection attempt ended."""
        self._first_attempt = on_first_attempt
        self._task = self._bridge.loop.create_task(self._run())

    def _attempted(self) -> None:
        first, self._first_attempt = self._first_attempt, None
        if first is not None:
            first()

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        await self._bridge.run_on_host(cancel(), shield=True)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                for channel in CHANNELS:
                    await conn.add_listener(channel, self._on_notify)
                self.conn = conn
                self.connects += 1
                delay = 0.05
                self._queue((None, None))  # catch up: hints may have been missed meanwhile
                self._attempted()
                while not conn.is_closed():
                    try:
                        await asyncio.wait_for(lost.wait(), self.health_interval)
                    except TimeoutError:
                        hook = self._owner.statement_hook
                        if hook is not None:
                            hook("SELECT 1")
                        await conn.fetchval("SELECT 1", timeout=self.health_interval)
                    else:
                        break
                log.warning("the store's listener connection was lost; reconnecting")
            except asyncio.CancelledError:
                if conn is not None:
                    conn.terminate()
                raise
            except Exception as exc:
                log.warning("the store's listener failed (%s); reconnecting", short(exc))
            self._attempted()
            if conn is not None:
                conn.terminate()
            self.conn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._queue((channel, payload))

    def _queue(self, item: tuple[str | None, str | None]) -> None:
        if not self._pending:
            self._bridge.call_host(self._flush)
        self._pending.append(item)

    def _flush(self) -> None:
        items, self._pending = self._pending, []
        self._bridge.to_trio(self._deliver, items)

    def _deliver(self, items: list[tuple[str | None, str | None]]) -> None:
        """In trio: call the callbacks; one that raises is logged, the others still run."""
        for channel, payload in items:
            try:
                if channel is None:
                    if self._on_event is not None:
                        self._on_event(None, 0)
                elif channel == "netra_events":
                    if self._on_event is not None and payload:
                        user_id, _, seq = payload.rpartition(" ")
                        self._on_event(user_id, int(seq))
                elif channel == "netra_inbox":
                    if self._on_inbox is not None and payload is not None:
                        self._on_inbox(payload)
                elif self._on_reply is not None and payload is not None:
                    self._on_reply(payload)
            except Exception:
                log.exception("a store notification callback raised")
