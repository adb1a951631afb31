"""The SQL store: SQLAlchemy 2 on its asyncio engine, with group commit.

One writer task on the asyncio host loop takes the pending units of work of all users and commits
them in one transaction (the fast path: one ``executemany`` for every event row, one for every run
row, then the developers' statements). If that transaction fails, the batch is retried unit by
unit, each inside a SAVEPOINT, so a bad unit fails alone and the others still commit.

SQLite (the embedded default) runs in WAL mode with a busy timeout; write transactions begin with
``BEGIN IMMEDIATE`` so that a second writer waits for the lock instead of failing mid-transaction.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import trio
from sqlalchemy import Connection, MetaData, event, func, select, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, make_transient
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.base import Executable

from .._bridge import Bridge
from .._config import RuntimeConfig
from .._core import LIVE_STATES
from .._exceptions import StoreError
from .._histogram import Histogram
from .._uow import UnitOfWork
from .._values import Event, RunInfo
from ._base import StoreStatistics, UserSnapshot
from ._schema import events, migrate, runs

log = logging.getLogger("netra_actors.store")

_RUN_MUTABLE = ("state", "attempt", "result", "reason", "updated_at")


def is_orm_instance(target: object) -> bool:
    """True for an instance of a mapped (ORM) class."""
    return hasattr(type(target), "__mapper__") and hasattr(target, "_sa_instance_state")


def check_stageable(target: object) -> None:
    """Raise ``TypeError`` unless ``target`` can be staged in a unit of work."""
    if not (is_orm_instance(target) or isinstance(target, Executable)):
        raise TypeError(
            "stage() takes an instance of a SQLAlchemy mapped class or a Core statement "
            f"(insert/update/delete), not {type(target).__name__}"
        )


class _Pending:
    """One unit waiting for the writer; resolved in trio when its batch is done."""

    __slots__ = ("base_seq", "done", "error", "result", "unit", "user_id")

    def __init__(self, user_id: str, base_seq: int, unit: UnitOfWork) -> None:
        self.user_id = user_id
        self.base_seq = base_seq
        self.unit = unit
        self.result: list[Event] | None = None
        self.error: BaseException | None = None
        self.done = trio.Event()


def _fail_unresolved(batch: Sequence[_Pending], exc: BaseException) -> None:
    for p in batch:
        if p.result is None and p.error is None:
            p.error = exc


def _resolve_all(batch: Sequence[_Pending]) -> None:
    for p in batch:
        p.done.set()


class SqlStore:
    """The durable store. Create with :meth:`open` from a trio task running as a guest."""

    def __init__(
        self,
        config: RuntimeConfig,
        bridge: Bridge,
        writer_engine: AsyncEngine,
        reader_engine: AsyncEngine,
    ) -> None:
        self._config = config
        self._bridge = bridge
        self._writer_engine = writer_engine
        self._reader_engine = reader_engine
        self._queue: collections.deque[_Pending] = collections.deque()
        # Bounded by the number of active users: each supervisor has at most one unit in flight.
        self._wake = asyncio.Event()
        self._closing = False
        self._writer_task: asyncio.Task[None] | None = None
        self._stats = {
            "batches": 0,
            "units_committed": 0,
            "units_failed": 0,
            "events_committed": 0,
            "isolated_retries": 0,
        }
        self._last_commit_seconds = 0.0
        self._commit_seconds = Histogram()
        self.dialect = writer_engine.dialect.name

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    async def open(
        cls, config: RuntimeConfig, *, extra_metadata: Iterable[MetaData] = ()
    ) -> SqlStore:
        """Connect, migrate the schema, create ``extra_metadata`` tables, start the writer."""
        bridge = Bridge.current()
        try:
            writer, reader = _make_engines(config)
        except Exception as exc:
            raise StoreError(f"cannot create the database engine: {exc}") from exc
        store = cls(config, bridge, writer, reader)
        try:
            await bridge.run_on_host(store._setup(tuple(extra_metadata)))
        except BaseException:
            await bridge.run_on_host(store._dispose(), shield=True)
            raise
        return store

    async def _setup(self, extra: tuple[MetaData, ...]) -> None:
        try:
            async with self._writer_engine.begin() as conn:
                before, after = await conn.run_sync(migrate)
                for md in extra:
                    await conn.run_sync(md.create_all)
        except StoreError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open the database: {_short(exc)}") from exc
        if before != after:
            log.info("store schema migrated from version %d to %d", before, after)
        self._writer_task = asyncio.get_running_loop().create_task(self._run_writer())

    async def aclose(self) -> None:
        """Commit what is queued, stop the writer, dispose of the engines."""
        await self._bridge.run_on_host(self._shutdown(), shield=True)

    async def _shutdown(self) -> None:
        self._closing = True
        self._wake.set()
        if self._writer_task is not None:
            await self._writer_task
        await self._dispose()

    async def _dispose(self) -> None:
        await self._writer_engine.dispose()
        if self._reader_engine is not self._writer_engine:
            await self._reader_engine.dispose()

    # -- writing ---------------------------------------------------------------------------

    async def commit(self, user_id: str, base_seq: int, unit: UnitOfWork) -> list[Event]:
        """See :meth:`Store.commit`."""
        if self._closing:
            raise StoreError("the store is closed")
        pending = _Pending(user_id, base_seq, unit)
        self._bridge.call_host(self._enqueue, pending)
        with trio.CancelScope(shield=True):  # the outcome must be observed: see Store.commit
            await pending.done.wait()
        if pending.error is not None:
            raise StoreError(_short(pending.error)) from pending.error
        assert pending.result is not None
        return pending.result

    def _enqueue(self, pending: _Pending) -> None:
        self._queue.append(pending)
        self._wake.set()

    async def _run_writer(self) -> None:
        batch_max = self._config.commit_batch_max
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                n = min(len(self._queue), batch_max)
                batch = [self._queue.popleft() for _ in range(n)]
                try:
                    await self._commit_batch(batch)
                except Exception as exc:  # a bug or an odd driver error: fail the batch, go on
                    log.exception("group commit of %d units failed unexpectedly", len(batch))
                    _fail_unresolved(batch, exc)
                except BaseException as exc:  # cancelled: never leave a waiter hanging
                    _fail_unresolved(batch, exc)
                    self._bridge.to_trio(_resolve_all, batch)
                    raise
                self._bridge.to_trio(_resolve_all, batch)
            if self._closing:
                return

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        now = time.time()
        self._stats["batches"] += 1
        try:
            async with self._writer_engine.begin() as conn:
                await conn.run_sync(_apply_fast, batch, now)
        except Exception as exc:  # SQLAlchemyError, OSError, or a developer's listener raising
            if len(batch) == 1:
                batch[0].error = exc
            else:
                log.warning(
                    "group commit of %d units failed (%s); retrying unit by unit",
                    len(batch),
                    _short(exc),
                )
                self._stats["isolated_retries"] += 1
                await self._commit_isolated(batch, now)
        else:
            for p in batch:
                p.result = _committed_events(p, now)
        self._last_commit_seconds = time.perf_counter() - started
        self._commit_seconds.observe(self._last_commit_seconds)
        for p in batch:
            if p.error is None:
                self._stats["units_committed"] += 1
                self._stats["events_committed"] += len(p.unit.events)
            else:
                self._stats["units_failed"] += 1

    async def _commit_isolated(self, batch: list[_Pending], now: float) -> None:
        for p in batch:
            for s in p.unit.statements:
                if is_orm_instance(s.target):
                    make_transient(s.target)
        errors: dict[int, BaseException] = {}
        try:
            async with self._writer_engine.begin() as conn:
                await conn.run_sync(_apply_isolated, batch, now, errors)
        except Exception as exc:
            for p in batch:
                p.error = errors.get(id(p), exc)
            return
        for p in batch:
            err = errors.get(id(p))
            if err is None:
                p.result = _committed_events(p, now)
            else:
                p.error = err

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, fn: Any, *args: Any) -> Any:
        async def go() -> Any:
            try:
                async with self._reader_engine.connect() as conn:
                    return await conn.run_sync(fn, *args)
            except (SQLAlchemyError, OSError) as exc:
                raise StoreError(_short(exc)) from exc

        return await self._bridge.run_on_host(go())

    async def load_user(self, user_id: str) -> UserSnapshot:
        """See :meth:`Store.load_user`."""
        result: UserSnapshot = await self._read(_load_user, user_id)
        return result

    async def replay(self, user_id: str, after_seq: int, limit: int) -> list[Event]:
        """See :meth:`Store.replay`."""
        result: list[Event] = await self._read(_replay, user_id, after_seq, limit)
        return result

    async def get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        """See :meth:`Store.get_run`."""
        result: RunInfo | None = await self._read(_get_run, user_id, run_id)
        return result

    async def list_runs(self, user_id: str, limit: int) -> list[RunInfo]:
        """See :meth:`Store.list_runs`."""
        result: list[RunInfo] = await self._read(_list_runs, user_id, limit)
        return result

    async def check(self) -> None:
        """See :meth:`Store.check`."""
        await self._read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())

    def statistics(self) -> StoreStatistics:
        """See :meth:`Store.statistics`."""
        return StoreStatistics(
            queued=len(self._queue),
            last_commit_seconds=self._last_commit_seconds,
            commit_seconds=self._commit_seconds.snapshot(),
            **self._stats,
        )


# -- engines -------------------------------------------------------------------------------


def _make_engines(config: RuntimeConfig) -> tuple[AsyncEngine, AsyncEngine]:
    url = config.database_url
    if not config.is_sqlite:
        engine = create_async_engine(url, echo=config.echo_sql, pool_pre_ping=True)
        return engine, engine
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:" and not path.startswith("file:"):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
    busy_ms = int(config.busy_timeout * 1000)

    def on_connect(dbapi_conn: DBAPIConnection, _rec: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's BEGIN listener below decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={config.sqlite_synchronous}")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    writer = create_async_engine(
        url,
        echo=config.echo_sql,
        pool_size=1,
        max_overflow=0,
        connect_args={"timeout": config.busy_timeout},
    )
    reader = create_async_engine(
        url, echo=config.echo_sql, connect_args={"timeout": config.busy_timeout}
    )
    for eng, begin in ((writer, "BEGIN IMMEDIATE"), (reader, "BEGIN")):
        event.listen(eng.sync_engine, "connect", on_connect)
        event.listen(eng.sync_engine, "begin", _begin_with(begin))
    return writer, reader


def _begin_with(sql: str) -> Any:
    def on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(sql)

    return on_begin


# -- the transaction bodies (sync code, run via AsyncConnection.run_sync) --------------------


def _upsert_runs(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(runs)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(runs)
    return stmt.on_conflict_do_update(
        index_elements=[runs.c.user_id, runs.c.run_id],
        set_={name: stmt.excluded[name] for name in _RUN_MUTABLE},
    )


def _event_rows(p: _Pending, now: float) -> list[dict[str, Any]]:
    seq = p.base_seq
    rows = []
    for ev in p.unit.events:
        seq += 1
        rows.append(
            {
                "user_id": p.user_id,
                "seq": seq,
                "run_id": ev.run_id,
                "event": ev.event,
                "ts": now,
                "data": ev.data_json,
            }
        )
    return rows


def _run_rows(p: _Pending) -> list[dict[str, Any]]:
    return [
        {
            "user_id": r.user_id,
            "run_id": r.run_id,
            "agent": r.agent,
            "state": r.state,
            "attempt": r.attempt,
            "input": r.input_json,
            "result": r.result_json,
            "reason": r.reason,
            "created_at": r.created_at,
            "updated_at": r.updated_at,
        }
        for r in p.unit.runs.values()
    ]


def _apply_statements(conn: Connection, unit: UnitOfWork) -> None:
    orm: list[object] = []

    def flush_orm() -> None:
        if orm:
            with Session(
                bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
            ) as session:
                session.add_all(orm)
                session.commit()
            orm.clear()

    for s in unit.statements:
        if is_orm_instance(s.target):
            orm.append(s.target)
            continue
        flush_orm()
        if s.params is None:
            conn.execute(s.target)
        else:
            conn.execute(s.target, s.params)
    flush_orm()


_SQLITE_INSERT_EVENTS = (
    "INSERT INTO netra_events (user_id, seq, run_id, event, ts, data) VALUES (?, ?, ?, ?, ?, ?)"
)


def _insert_events(conn: Connection, pendings: Sequence[_Pending], now: float) -> None:
    """Insert the event rows of ``pendings`` in one ``executemany``.

    On SQLite this goes straight to the driver (the hot path: SQLAlchemy's per-row parameter
    processing cost more than the insert itself); elsewhere it is an ordinary Core insert.
    """
    if conn.dialect.name == "sqlite":
        rows = [
            (p.user_id, seq, ev.run_id, ev.event, now, ev.data_json)
            for p in pendings
            for seq, ev in enumerate(p.unit.events, start=p.base_seq + 1)
        ]
        if rows:
            conn.exec_driver_sql(_SQLITE_INSERT_EVENTS, rows)
        return
    dict_rows = [row for p in pendings for row in _event_rows(p, now)]
    if dict_rows:
        conn.execute(events.insert(), dict_rows)


def _apply_fast(conn: Connection, batch: list[_Pending], now: float) -> None:
    _insert_events(conn, batch, now)
    run_rows = [row for p in batch for row in _run_rows(p)]
    if run_rows:
        conn.execute(_upsert_runs(conn), run_rows)
    for p in batch:
        if p.unit.statements:
            _apply_statements(conn, p.unit)


def _apply_isolated(
    conn: Connection, batch: list[_Pending], now: float, errors: dict[int, BaseException]
) -> None:
    upsert = _upsert_runs(conn)
    for p in batch:
        try:
            with conn.begin_nested():
                _insert_events(conn, [p], now)
                run_rows = _run_rows(p)
                if run_rows:
                    conn.execute(upsert, run_rows)
                _apply_statements(conn, p.unit)
        except Exception as exc:
            log.warning("unit of work of user %r failed: %s", p.user_id, _short(exc))
            errors[id(p)] = exc


def _committed_events(p: _Pending, now: float) -> list[Event]:
    seq = p.base_seq
    out = []
    for ev in p.unit.events:
        seq += 1
        out.append(
            Event(
                user_id=p.user_id, seq=seq, run_id=ev.run_id, event=ev.event, ts=now, data=ev.data
            )
        )
    return out


def _load_user(conn: Connection, user_id: str) -> UserSnapshot:
    head = conn.execute(select(func.max(events.c.seq)).where(events.c.user_id == user_id))
    live = conn.execute(
        select(runs)
        .where(runs.c.user_id == user_id, runs.c.state.in_([s.value for s in LIVE_STATES]))
        .order_by(runs.c.created_at)
    )
    return UserSnapshot(
        head_seq=head.scalar_one() or 0, live_runs=tuple(RunInfo.from_row(r) for r in live)
    )


def _replay(conn: Connection, user_id: str, after_seq: int, limit: int) -> list[Event]:
    rows = conn.execute(
        select(events)
        .where(events.c.user_id == user_id, events.c.seq > after_seq)
        .order_by(events.c.seq)
        .limit(limit)
    )
    return [Event.from_row(r) for r in rows]


def _get_run(conn: Connection, user_id: str, run_id: str) -> RunInfo | None:
    row = conn.execute(
        select(runs).where(runs.c.user_id == user_id, runs.c.run_id == run_id)
    ).first()
    return RunInfo.from_row(row) if row else None


def _list_runs(conn: Connection, user_id: str, limit: int) -> list[RunInfo]:
    rows = conn.execute(
        select(runs)
        .where(runs.c.user_id == user_id)
        .order_by(runs.c.created_at.desc(), runs.c.run_id.desc())
        .limit(limit)
    )
    return [RunInfo.from_row(r) for r in rows]


def _short(exc: BaseException) -> str:
    """A one-line description of a database error, without the SQL and parameters."""
    orig = getattr(exc, "orig", None)
    msg = str(orig if orig is not None else exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(orig if orig is not None else exc).__name__}: {msg}"[:300]
