"""PostgreSQL: the group-commit writer holds one asyncpg connection on the asyncio host loop.

The process runs trio as a guest of asyncio, so the writer runs in the same thread as the actors:
trio hands it units with ``loop.call_soon`` (once per wake-up, not per unit) and it hands the
outcomes back with one ``run_sync_soon`` per batch. The fast path (no developer statements) is one
asyncpg transaction: ``COPY`` of every event row, one ``INSERT … SELECT FROM unnest(…) ON CONFLICT
… DO UPDATE`` of every run row, ``COMMIT``. Batches with developers' statements go through
SQLAlchemy's asyncio engine (``run_sync``), since those statements are SQLAlchemy objects.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import outcome
from sqlalchemy import Connection, MetaData, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from .._bridge import Bridge
from .._config import RuntimeConfig
from .._exceptions import StoreError
from .._values import Event
from ._common import (
    EVENT_COLUMNS,
    EVENT_SELECT,
    LIVE_STATE_VALUES,
    RUN_COLUMNS,
    RUN_MUTABLE,
    RUN_SELECT,
    UPSERT_SET,
    Pending,
    Read,
    Stats,
    Waiter,
    apply_statements,
    as_store_error,
    committed,
    event_rows,
    log,
    make_orm_transient,
    resume_now,
    run_rows,
    short,
    wait_outcome,
)
from ._schema import events, migrate, runs
from ._sqlite import HookOwner, snapshot

COPY_EVENTS = f"COPY netra_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT binary)"
_RUN_TYPES = ("text", "text", "text", "text", "int4", "text", "text", "text", "float8", "float8")
UPSERT_RUNS = (
    f"INSERT INTO netra_runs ({', '.join(RUN_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_RUN_TYPES, 1))
    + f") ON CONFLICT (user_id, run_id) DO UPDATE SET {UPSERT_SET}"
)


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
    ) -> None:
        self._bridge = bridge
        self._batch_max = config.commit_batch_max
        self._dsn = dsn
        self._sa_engine = sa_engine
        self._extra = tuple(extra)
        self._owner = owner
        self._stats = stats
        self._queue: collections.deque[Pending] = collections.deque()
        self._wake = asyncio.Event()
        self._wake_scheduled = False
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

    def submit(self, p: Pending) -> None:
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

    def _on_exit(self, batch: list[Pending], exc: BaseException | None) -> None:
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

    async def _run(self) -> None:
        batch: list[Pending] = []
        error: BaseException | None = None
        queue, batch_max = self._queue, self._batch_max
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while queue:
                    n = min(len(queue), batch_max)
                    batch = [queue.popleft() for _ in range(n)]
                    await self._commit_batch(batch)
                    self._bridge.resume_soon(batch)
                    batch = []
                if self._closing:
                    break
        except BaseException as exc:  # a bug, or the task was cancelled: fail every waiter
            if not isinstance(exc, asyncio.CancelledError):
                log.critical("the store writer stopped", exc_info=True)
            error = exc
        try:
            if self._conn is not None:
                await self._conn.close()
        except Exception:
            log.exception("closing the writer's connection failed")
        self._bridge.to_trio(self._on_exit, batch, error)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn)
        return self._conn

    def _hook(self, sql: str) -> None:
        hook = self._owner.statement_hook
        if hook is not None:
            hook(sql)

    async def _write(self, conn: Any, batch: Sequence[Pending]) -> None:
        rows = event_rows(batch)
        if rows:
            self._hook(COPY_EVENTS)
            await conn.copy_records_to_table("netra_events", records=rows, columns=EVENT_COLUMNS)
        run_list = run_rows(batch)
        if run_list:
            self._hook(UPSERT_RUNS)
            await conn.execute(UPSERT_RUNS, *(list(col) for col in zip(*run_list, strict=True)))

    async def _commit_batch(self, batch: list[Pending]) -> None:
        stats = self._stats
        started = time.perf_counter()
        stats.batches += 1
        with_statements = any(p.unit.statements for p in batch)
        try:
            if with_statements:
                async with self._sa_engine.begin() as sa_conn:
                    await sa_conn.run_sync(_apply_sa, batch)
            else:
                conn = await self._connection()
                async with conn.transaction():
                    await self._write(conn, batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].fail(as_store_error(exc))
            else:
                log.warning(
                    "group commit of %d units failed (%s); retrying unit by unit",
                    len(batch),
                    short(exc),
                )
                stats.isolated_retries += 1
                await self._commit_isolated(batch, with_statements)
        else:
            for p in batch:
                p.result = committed(p)
        stats.record(batch, started)

    async def _commit_isolated(self, batch: list[Pending], with_statements: bool) -> None:
        errors: dict[int, BaseException] = {}
        try:
            if with_statements:
                make_orm_transient(batch)
                async with self._sa_engine.begin() as sa_conn:
                    await sa_conn.run_sync(_apply_isolated_sa, batch, errors)
            else:
                conn = await self._connection()
                async with conn.transaction():
                    for p in batch:
                        try:
                            async with conn.transaction():  # a SAVEPOINT
                                await self._write(conn, (p,))
                        except Exception as exc:
                            log.warning("unit of user %r failed: %s", p.user_id, short(exc))
                            errors[id(p)] = exc
        except Exception as exc:
            for p in batch:
                p.fail(as_store_error(errors.get(id(p), exc)))
            return
        for p in batch:
            err = errors.get(id(p))
            p.result = committed(p) if err is None else outcome.Error(as_store_error(err))


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


def _apply_isolated_sa(
    conn: Connection, batch: list[Pending], errors: dict[int, BaseException]
) -> None:
    for p in batch:
        try:
            with conn.begin_nested():
                _write_sa(conn, (p,))
                apply_statements(conn, p.unit)
        except Exception as exc:
            log.warning("unit of work of user %r failed: %s", p.user_id, short(exc))
            errors[id(p)] = exc


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

    async def _check(self, conn: Any) -> None:
        await self._fetch(conn, "SELECT 1")
