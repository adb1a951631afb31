"""SQLite's reader: a thread with its own connection (WAL: reads never wait for the writer).

``load_user`` requests that arrive together are answered by one pair of queries; the other reads
are one query each (one per :data:`~._sqlite.LOAD_CHUNK` users for the lists of users). A lone
``load_user`` or ``claim`` that finds the reader idle is answered at once, in trio's thread, on the
same connection (:meth:`SqliteReader.read_now`; docs/store.md, "An idle SQLite reader").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import outcome
import trio

from .._bridge import Bridge
from .._exceptions import StoreError
from .._values import Event, RunInfo
from ._base import HistoryPage, InboxItem, ModelCall, ThreadsPage
from ._db_thread import DbThread
from ._history import (
    history_page,
    history_query,
    qmark,
    threads_page,
    threads_query,
)
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
from ._sqlite import NOW, OTHERS_ALIVE, SqliteFile, chunks
from ._waiting import Read, Waiter, as_store_error, short

HEADS = "SELECT user_id, MAX(seq) FROM netra_events WHERE user_id IN ({}) GROUP BY user_id"
ORPHANS_LIVE, ORPHANS_DUE = orphan_queries(NOW, "?")
#: A claim's lease rows: ``(user_id, node, epoch, held)``.
LEASES = (
    f"SELECT user_id, node, epoch, {lease_held('netra_leases', NOW)} FROM netra_leases "
    "WHERE user_id IN ({})"
)
LOADS = ("load_user", "claim")
"""The reads answered together by one pair of queries (``claim`` adds the lease rows)."""


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
        self.read_now_calls = 0
        """Reads answered at once, in trio's thread (:meth:`read_now`)."""

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

    def read_now(self, read: Read) -> bool:
        """In trio: answer ``read`` (a lone ``load_user`` or ``claim``) on this thread's
        connection at once, if the reader is idle; False (nothing done: submit it) otherwise.

        Idle: nothing submitted is in flight and no other trio task is ready. An activation then
        costs the reads themselves (index lookups of one user, ~0.05 ms) instead of a round trip
        through the reader thread's wake-up and trio's hand-off. The outcome is on ``read``.
        """
        if (
            self._in_flight
            or self.dead is not None
            or trio.lowlevel.current_statistics().tasks_runnable
            or not self._busy.acquire(blocking=False)
        ):
            return False
        try:
            self.read_now_calls += 1
            self.handle_here(read)
        finally:
            self._busy.release()
        return True

    def handle(self, batch: list[Any]) -> Sequence[Waiter]:
        flat: list[Read] = []
        for item in batch:
            if isinstance(item, list):
                flat.extend(item)
            else:
                flat.append(item)
        loads = [r for r in flat if r.kind in LOADS]
        if loads:
            self._load_users(loads)
        for r in flat:
            if r.kind not in LOADS:
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
        leases: dict[str, tuple[str, int, int]] = {}
        claims = any(r.kind == "claim" for r in loads)
        others = True
        states = ", ".join("?" * len(LIVE_STATE_VALUES))
        try:
            self._query("BEGIN")
            try:
                for chunk, marks in chunks(users):
                    for user_id, head in self._query(HEADS.format(marks), chunk):
                        heads[user_id] = head or 0
                    for row in self._query(
                        f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id IN ({marks}) "
                        f"AND state IN ({states}) ORDER BY user_id, created_at, run_id",
                        [*chunk, *LIVE_STATE_VALUES],
                    ):
                        live.setdefault(row[0], []).append(row)
                    if claims:
                        for row in self._query(LEASES.format(marks), chunk):
                            leases[row[0]] = row[1:]
                if claims:
                    others = bool(self._query(OTHERS_ALIVE, (self._owner.node,))[0][0])
            finally:
                self._query("COMMIT")
        except Exception as exc:
            for r in loads:
                r.fail(as_store_error(exc))
            return
        for r in loads:
            snap = snapshot(heads.get(r.args, 0), live.get(r.args, ()))
            r.result = outcome.Value(
                snap if r.kind == "load_user" else (snap, leases.get(r.args), others)
            )

    def _replay(self, user_id: str, after_seq: int, limit: int) -> list[Event]:
        rows = self._query(
            f"SELECT {EVENT_SELECT} FROM netra_events WHERE user_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (user_id, after_seq, limit),
        )
        return [Event(*row) for row in rows]

    def _first_event(self, user_id: str, run_id: str) -> Event | None:
        rows = self._query(
            f"SELECT {EVENT_SELECT} FROM netra_events WHERE user_id = ? AND run_id = ? "
            "ORDER BY seq LIMIT 1",
            (user_id, run_id),
        )
        return Event(*rows[0]) if rows else None

    def _history(
        self,
        user_id: str,
        thread: str | None,
        before_seq: int | None,
        limit: int,
        kinds: Sequence[str] | None,
    ) -> HistoryPage:
        sql, params = history_query(
            qmark, user_id, thread, before_seq, limit, kinds, any_array=False
        )
        return history_page(self._query(sql, params), limit)

    def _threads(self, user_id: str, before: int | None, limit: int) -> ThreadsPage:
        sql, params = threads_query(qmark, user_id, before, limit)
        states = ", ".join("?" * len(LIVE_STATE_VALUES))
        self._query("BEGIN")  # the summary and the live runs from one snapshot
        try:
            rows = self._query(sql, params)
            live = self._query(
                f"SELECT thread, count(*) FROM netra_runs WHERE user_id = ? "
                f"AND state IN ({states}) GROUP BY thread",
                (user_id, *LIVE_STATE_VALUES),
            )
        finally:
            self._query("COMMIT")
        return threads_page(rows, live, limit)

    def _message_ids(self, user_id: str, ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk, marks in chunks(list(dict.fromkeys(ids))):
            for message_id, thread in self._query(
                "SELECT message_id, thread FROM netra_message_ids "
                f"WHERE user_id = ? AND message_id IN ({marks})",
                (user_id, *chunk),
            ):
                found[message_id] = thread
        return found

    def _get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        rows = self._query(
            f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id = ? AND run_id = ?",
            (user_id, run_id),
        )
        return run_info(rows[0]) if rows else None

    def _list_runs(self, user_id: str, limit: int) -> list[RunInfo]:
        rows = self._query(
            f"SELECT {RUN_SELECT} FROM netra_runs WHERE user_id = ? "
            "ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (user_id, limit),
        )
        return [run_info(row) for row in rows]

    def _run_history(self, user_id: str, run_id: str) -> tuple[list[Event], list[ModelCall]]:
        events = self._query(
            f"SELECT {EVENT_SELECT} FROM netra_events WHERE run_id = ? AND user_id = ? "
            "ORDER BY seq",
            (run_id, user_id),
        )
        calls = self._query(
            f"SELECT {MODEL_CALL_SELECT} FROM netra_model_calls WHERE user_id = ? "
            "AND run_id = ? AND after_seq IS NOT NULL",
            (user_id, run_id),
        )
        return [Event(*row) for row in events], [ModelCall(*row) for row in calls]

    def _orphans(self, limit: int, lookahead: float) -> list[str]:
        users = [u for (u,) in self._query(ORPHANS_LIVE, (*LIVE_STATE_VALUES, limit))]
        users += [u for (u,) in self._query(ORPHANS_DUE, (lookahead, limit))]
        return list(dict.fromkeys(users))[:limit]

    def _heads(self, user_ids: Sequence[str]) -> dict[str, int]:
        users = list(dict.fromkeys(user_ids))
        heads = dict.fromkeys(users, 0)
        for chunk, marks in chunks(users):
            for user_id, head in self._query(HEADS.format(marks), chunk):
                heads[user_id] = head or 0
        return heads

    def _free_leases(self, user_ids: Sequence[str]) -> list[str]:
        users = list(dict.fromkeys(user_ids))
        held: set[str] = set()
        for chunk, marks in chunks(users):
            held.update(
                user_id
                for (user_id,) in self._query(
                    f"SELECT user_id FROM netra_leases WHERE user_id IN ({marks}) "
                    f"AND {lease_held('netra_leases', NOW)}",
                    chunk,
                )
            )
        return [u for u in users if u not in held]

    def _take_commands(self, user_ids: Sequence[str] | None, limit: int) -> list[InboxItem]:
        select = f"SELECT {INBOX_SELECT} FROM netra_inbox"
        if user_ids is None:
            rows = self._query(f"{select} ORDER BY id LIMIT ?", (limit,))
        else:
            rows = []
            for chunk, marks in chunks(list(dict.fromkeys(user_ids))):
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
