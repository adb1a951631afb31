"""Reading a user's conversations: the ``threads`` and ``history`` pages, and client message ids.

The SQL of each read for both databases, which the readers (``_sqlite_reader.py``,
``_pg_reader.py``) run, and the pages they make of the rows (the values,
:class:`~._base.ThreadInfo`, :class:`~._base.ThreadsPage` and :class:`~._base.HistoryPage`, are
the store protocol's). What serves them:

* ``history`` pages backwards over the primary key ``(user_id, seq)``, or over the index
  ``netra_events_user_thread (user_id, thread, seq)`` for one thread: one index range per page;
* ``threads`` reads the summary rows the group commit keeps (``netra_threads``, one upsert per
  thread per batch) by ``netra_threads_user_last (user_id, last_seq)``, and counts the live runs
  per thread from ``netra_runs_user_state`` (a user has at most ``max_live_runs_per_user``);
* ``message_ids`` looks client-chosen ids up in ``netra_message_ids`` (primary key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._values import Event
from ._base import HistoryPage, ThreadInfo, ThreadsPage
from ._rows import EVENT_SELECT

Marks = Callable[[int], str]
"""The placeholder of parameter ``i`` (1-based): ``?`` on SQLite, ``$i`` on PostgreSQL."""


def qmark(_i: int) -> str:
    return "?"


def dollar(i: int) -> str:
    return f"${i}"


def history_query(
    marks: Marks,
    user_id: str,
    thread: str | None,
    before_seq: int | None,
    limit: int,
    kinds: Sequence[str] | None,
    *,
    any_array: bool,
) -> tuple[str, list[Any]]:
    """The SQL and parameters of a history page: up to ``limit + 1`` events, newest first.

    ``kinds``: only these event names. ``any_array``: PostgreSQL's ``= ANY($n::text[])``.
    """
    params: list[Any] = [user_id]
    where = [f"user_id = {marks(1)}"]
    if thread is not None:
        params.append(thread)
        where.append(f"thread = {marks(len(params))}")
    if before_seq is not None:
        params.append(before_seq)
        where.append(f"seq < {marks(len(params))}")
    if kinds:
        if any_array:
            params.append(list(kinds))
            where.append(f"event = ANY({marks(len(params))}::text[])")
        else:
            start = len(params)
            params.extend(kinds)
            where.append(f"event IN ({', '.join(marks(start + i + 1) for i in range(len(kinds)))})")
    params.append(limit + 1)
    sql = (
        f"SELECT {EVENT_SELECT} FROM netra_events WHERE {' AND '.join(where)} "
        f"ORDER BY seq DESC LIMIT {marks(len(params))}"
    )
    return sql, params


def history_page(rows: Sequence[Sequence[Any]], limit: int) -> HistoryPage:
    """The page from the rows of :func:`history_query` (newest first, one more than asked)."""
    events = [Event(*row) for row in rows[:limit]]
    events.reverse()
    return HistoryPage(events=tuple(events), more=len(rows) > limit)


def threads_query(
    marks: Marks, user_id: str, before: int | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and parameters of a page of summary rows, newest activity first (one extra)."""
    params: list[Any] = [user_id]
    where = f"user_id = {marks(1)}"
    if before is not None:
        params.append(before)
        where += f" AND last_seq < {marks(2)}"
    params.append(limit + 1)
    sql = (
        "SELECT thread, title, created_ts, last_seq, last_ts FROM netra_threads "
        f"WHERE {where} ORDER BY last_seq DESC LIMIT {marks(len(params))}"
    )
    return sql, params


def threads_page(
    rows: Sequence[Sequence[Any]], live: Iterable[Sequence[Any]], limit: int
) -> ThreadsPage:
    """The page from the summary rows and ``(thread, live run count)`` rows."""
    counts = {row[0]: int(row[1]) for row in live}
    threads = tuple(
        ThreadInfo(
            thread=row[0],
            title=row[1],
            created_ts=row[2],
            last_seq=row[3],
            last_ts=row[4],
            live_runs=counts.get(row[0], 0),
        )
        for row in rows[:limit]
    )
    more = len(rows) > limit
    return ThreadsPage(threads=threads, next=threads[-1].last_seq if more else None)
