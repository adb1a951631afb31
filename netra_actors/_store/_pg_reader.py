"""PostgreSQL's reader: an asyncpg pool on the asyncio host, one hand-off back per request batch.

``load_user`` requests that arrive together are answered by one pair of queries over arrays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import outcome

from .._bridge import Bridge
from .._exceptions import StoreError
from .._values import Event, RunInfo
from ._base import HistoryPage, InboxItem, ModelCall, ThreadsPage
from ._history import (
    dollar,
    history_page,
    history_query,
    threads_page,
    threads_query,
)
from ._postgres import NOW, OTHERS_ALIVE, asyncpg
from ._rows import (
    EVENT_SELECT,
    INBOX_SELECT,
    LIVE_STATE_VALUES,
    MODEL_CALL_SELECT,
    RUN_SELECT,
    HookOwner,
    inbox_item,
    lease_held,
    orphan_queries,
    run_info,
    snapshot,
)
from ._waiting import Read, as_store_error, short

ORPHANS_LIVE, ORPHANS_DUE = orphan_queries(NOW, "${}")
#: A claim's lease rows: ``(user_id, node, epoch, held)``.
LEASES = (
    f"SELECT user_id, node, epoch, {lease_held('netra_leases', NOW)} FROM netra_leases "
    "WHERE user_id = ANY($1::text[])"
)


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
            loads = [r for r in reads if r.kind in ("load_user", "claim")]
            async with self._pool.acquire() as conn:
                if loads:
                    await self._load_users(conn, loads)
                for r in reads:
                    if r.kind not in ("load_user", "claim"):
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
            leases: dict[str, tuple[str, int, bool]] = {}
            others = True
            if any(r.kind == "claim" for r in loads):
                for row in await self._fetch(conn, LEASES, users):
                    leases[row[0]] = (row[1], row[2], row[3])
                others = bool((await self._fetch(conn, OTHERS_ALIVE, self._owner.node))[0][0])
        except Exception as exc:
            for r in loads:
                r.fail(as_store_error(exc))
            return
        for r in loads:
            snap = snapshot(heads.get(r.args, 0), live.get(r.args, ()))
            r.result = outcome.Value(
                snap if r.kind == "load_user" else (snap, leases.get(r.args), others)
            )

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

    async def _history(
        self,
        conn: Any,
        user_id: str,
        thread: str | None,
        before_seq: int | None,
        limit: int,
        kinds: Sequence[str] | None,
    ) -> HistoryPage:
        sql, params = history_query(
            dollar, user_id, thread, before_seq, limit, kinds, any_array=True
        )
        return history_page(await self._fetch(conn, sql, *params), limit)

    async def _threads(
        self, conn: Any, user_id: str, before: int | None, limit: int
    ) -> ThreadsPage:
        sql, params = threads_query(dollar, user_id, before, limit)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await self._fetch(conn, sql, *params)
            live = await self._fetch(
                conn,
                "SELECT thread, count(*) FROM netra_runs WHERE user_id = $1 "
                "AND state = ANY($2::text[]) GROUP BY thread",
                user_id,
                list(LIVE_STATE_VALUES),
            )
        return threads_page(rows, live, limit)

    async def _message_ids(self, conn: Any, user_id: str, ids: Sequence[str]) -> dict[str, str]:
        rows = await self._fetch(
            conn,
            "SELECT message_id, thread FROM netra_message_ids "
            "WHERE user_id = $1 AND message_id = ANY($2::text[])",
            user_id,
            list(dict.fromkeys(ids)),
        )
        return {row[0]: row[1] for row in rows}

    async def _get_run(self, conn: Any, user_id: str, run_id: str) -> RunInfo | None:
        rows = await self._fetch(
            conn,
            f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id = $1 AND run_id = $2",
            user_id,
            run_id,
        )
        return run_info(tuple(rows[0])) if rows else None

    async def _list_runs(self, conn: Any, user_id: str, limit: int) -> list[RunInfo]:
        rows = await self._fetch(
            conn,
            f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id = $1 "
            "ORDER BY created_at DESC, run_id DESC LIMIT $2",
            user_id,
            limit,
        )
        return [run_info(tuple(row)) for row in rows]

    async def _run_history(
        self, conn: Any, user_id: str, run_id: str
    ) -> tuple[list[Event], list[ModelCall]]:
        events = await self._fetch(
            conn,
            f"SELECT {EVENT_SELECT} FROM netra_events WHERE run_id = $1 AND user_id = $2 "
            "ORDER BY seq",
            run_id,
            user_id,
        )
        calls = await self._fetch(
            conn,
            f"SELECT {MODEL_CALL_SELECT} FROM netra_model_calls WHERE user_id = $1 "
            "AND run_id = $2 AND after_seq IS NOT NULL",
            user_id,
            run_id,
        )
        return [Event(*row) for row in events], [ModelCall(*row) for row in calls]

    async def _orphans(self, conn: Any, limit: int, lookahead: float) -> list[str]:
        users = [r[0] for r in await self._fetch(conn, ORPHANS_LIVE, *LIVE_STATE_VALUES, limit)]
        users += [r[0] for r in await self._fetch(conn, ORPHANS_DUE, lookahead, limit)]
        return list(dict.fromkeys(users))[:limit]

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
            f"AND {lease_held('netra_leases', NOW)}",
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
