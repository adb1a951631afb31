"""PostgreSQL's group-commit writer: a task on the asyncio host holding one asyncpg connection.

The process runs trio as a guest of asyncio, so the writer runs in the same thread as the actors:
trio hands it units with ``loop.call_soon`` (once per wake-up, not per unit); it takes what has
queued (up to ``commit_batch_max``), awaits the whole group commit
(:class:`~._group_commit.GroupCommit` over a :class:`~._postgres.PgDialect`), and hands the
outcomes back with one ``run_sync_soon`` per batch. A timer wakes it when the bulk lease renewal
is due.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.ext.asyncio import AsyncEngine

from .._bridge import Bridge
from .._config import RuntimeConfig
from .._exceptions import StoreError
from ._group_commit import GroupCommit
from ._incarnation import PG_HOLD
from ._leases import Leases
from ._postgres import FORGET_NODES, PgDialect, asyncpg
from ._rows import HookOwner, log
from ._schema import migrate
from ._statistics import Stats
from ._waiting import Op, Pending, Server, Waiter, short, wait_outcome


class PgWriter(Server):
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
        super().__init__()
        self._bridge = bridge
        self._batch_max = config.commit_batch_max
        self._dsn = dsn
        self._sa_engine = sa_engine
        self._extra = tuple(extra)
        self._owner = owner
        self._leases = leases
        self._group = GroupCommit(PgDialect(self._connection, sa_engine, owner), stats, leases)
        self._queue: collections.deque[Pending | Op] = collections.deque()
        self._wake = asyncio.Event()
        self._wake_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_for = -1.0
        self._closing = False
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self.schema_versions = (0, 0)

    # -- trio side ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._bridge.run_on_host(self._open())

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
        left: list[Waiter] = [*batch, *self._queue]
        self._queue.clear()
        self._ended(left, exc)

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
            self._conn = await self._hold(await asyncpg.connect(self._dsn))
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
        if error is None and self._conn is not None and not self._conn.is_closed():
            # Nothing of this node commits from now on: its row goes, and with it every lease
            # it still held (free at once, not after the TTL).
            try:
                await self._conn.execute(FORGET_NODES, [self._leases.node])
            except Exception as exc:
                log.warning("forgetting this node's row failed: %s", short(exc))
        try:
            if self._conn is not None:
                await self._conn.close()
        except Exception:
            log.exception("closing the writer's connection failed")
        self._bridge.to_trio(self._on_exit, batch, error)

    async def _commit_batch(self, batch: list[Pending | Op]) -> None:
        await self._group.commit(batch)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._hold(await asyncpg.connect(self._dsn, timeout=10))
        return self._conn

    async def _hold(self, conn: Any) -> Any:
        """Take this node's incarnation lock on its writer connection (``_incarnation.py``):
        it lives exactly as long as the session this node commits through."""
        if not await conn.fetchval(PG_HOLD, self._leases.node):
            log.warning("the node's incarnation lock is still held by its previous session")
        return conn
