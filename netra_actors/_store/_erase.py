"""Erasure in the store: the statements a unit's :class:`~netra_actors._uow.Erasure` runs, and the
retention sweep's read.

A unit that erases runs these statements first in its transaction, before its own rows (so the
``thread_deleted`` event it carries is written after the thread's events were erased, and its
fencing covers both): :func:`erase_statements` gives them, with ``?`` placeholders (SQLite) or
``$n`` ones (PostgreSQL, :func:`numbered`). Both databases run the same SQL.

* A thread, or a batch of it (retention): its events keep ``user_id``, ``seq`` and ``ts`` and
  become ``erased`` placeholders — ``data`` ``{}``, ``run_id`` and ``thread`` NULL (so the
  thread's index range holds only what is left to erase: each batch is one index range). The
  final step also clears its runs' ``input`` and ``result``, deletes their model calls, the
  thread's summary row and its client message ids.
* A user: every row of the user in ``netra_events``, ``netra_runs``, ``netra_threads``,
  ``netra_message_ids`` and ``netra_model_calls``. The lease row stays (released by the owner
  afterwards): its epoch only grows, and it is what fences a late writer. ``netra_inbox`` and
  ``netra_replies`` hold commands in flight and are consumed within seconds.

:func:`stale_threads` is the one read across users (like the inspector's, on ``store.engine``,
bounded by a ``LIMIT``): the threads whose last activity is older than a cutoff.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from .._uow import Erasure
from ._schema import threads
from ._waiting import Pending

_ERASE = "UPDATE netra_events SET event = 'erased', data = '{}', run_id = NULL, thread = NULL "
ERASE_EVENTS = _ERASE + "WHERE user_id = ? AND thread = ? AND seq <= ?"
ERASE_EVENTS_BATCH = (
    _ERASE + "WHERE user_id = ? AND thread = ? AND seq IN (SELECT seq FROM netra_events "
    "WHERE user_id = ? AND thread = ? AND seq <= ? ORDER BY seq LIMIT ?)"
)
ERASE_THREAD_RUNS = (
    "UPDATE netra_runs SET input = NULL, result = NULL WHERE user_id = ? AND thread = ?"
)
DELETE_THREAD_MODEL_CALLS = (
    "DELETE FROM netra_model_calls WHERE user_id = ? AND run_id IN "
    "(SELECT run_id FROM netra_runs WHERE user_id = ? AND thread = ?)"
)
DELETE_THREAD_SUMMARY = "DELETE FROM netra_threads WHERE user_id = ? AND thread = ?"
DELETE_THREAD_IDS = "DELETE FROM netra_message_ids WHERE user_id = ? AND thread = ?"
#: The tables whose every row of a user an erasure deletes (the lease row stays: see above).
USER_TABLES = (
    "netra_events",
    "netra_runs",
    "netra_threads",
    "netra_message_ids",
    "netra_model_calls",
)

Statement = tuple[str, tuple[Any, ...]]


def erase_statements(units: Sequence[Pending]) -> list[Statement]:
    """The erasing statements of a batch's units, in order (``?`` placeholders)."""
    out: list[Statement] = []
    for p in units:
        erasure = p.unit.erase
        if erasure is not None:
            out.extend(statements_of(p.user_id, erasure))
    return out


def statements_of(user_id: str, erasure: Erasure) -> list[Statement]:
    """What one :class:`Erasure` of ``user_id`` runs."""
    thread = erasure.thread
    if thread is None:
        return [(f"DELETE FROM {table} WHERE user_id = ?", (user_id,)) for table in USER_TABLES]
    up_to = erasure.up_to_seq
    if erasure.limit is None:
        out: list[Statement] = [(ERASE_EVENTS, (user_id, thread, up_to))]
    else:
        args = (user_id, thread, user_id, thread, up_to, erasure.limit)
        out = [(ERASE_EVENTS_BATCH, args)]
    if erasure.final:
        out += [
            (DELETE_THREAD_MODEL_CALLS, (user_id, user_id, thread)),
            (ERASE_THREAD_RUNS, (user_id, thread)),
            (DELETE_THREAD_SUMMARY, (user_id, thread)),
            (DELETE_THREAD_IDS, (user_id, thread)),
        ]
    return out


def erased_users(units: Sequence[Pending]) -> list[str]:
    """The users a batch erases whole (PostgreSQL hints their head: 0)."""
    return [p.user_id for p in units if p.unit.erase is not None and p.unit.erase.thread is None]


_MARK = re.compile(r"\?")


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, …``."""
    counter = iter(range(1, 1000))
    return _MARK.sub(lambda _m: f"${next(counter)}", sql)


async def stale_threads(
    engine: AsyncEngine, before_ts: float, limit: int
) -> list[tuple[str, str, int]]:
    """``(user_id, thread, last_seq)`` of up to ``limit`` threads whose last event is older than
    ``before_ts``, oldest first (the retention sweep's read; across users, on ``engine``)."""
    query = (
        select(threads.c.user_id, threads.c.thread, threads.c.last_seq)
        .where(threads.c.last_ts < before_ts)
        .order_by(threads.c.last_ts)
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]
