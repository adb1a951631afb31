"""The store's rows as its writers and readers see them, on either database.

The column lists of ``netra_events`` and ``netra_runs``, the rows a batch of units writes, the
values read rows become, and what every part of the store shares besides: the statement hook of
its owner and its logger.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from .._core import LIVE_STATES
from .._core._threads import title_of
from .._values import Event, RunInfo, loads
from ._base import InboxItem, UserSnapshot
from ._waiting import Pending

log = logging.getLogger("netra_actors.store")

StatementHook = Callable[[str], None]


class HookOwner(Protocol):
    """The store: its ``statement_hook`` (if set) sees the text of every statement it runs;
    ``node`` is its node identity."""

    statement_hook: StatementHook | None
    node: str


LIVE_STATE_VALUES: tuple[str, ...] = tuple(sorted(s.value for s in LIVE_STATES))

EVENT_COLUMNS = ("user_id", "seq", "run_id", "event", "ts", "data", "thread")
RUN_COLUMNS = (
    "user_id",
    "run_id",
    "agent",
    "state",
    "attempt",
    "input",
    "result",
    "reason",
    "created_at",
    "updated_at",
    "thread",
    "start_seq",
    "history_seq",
    "wait",
    "wake_at",
)
RUN_MUTABLE = (
    "state",
    "attempt",
    "result",
    "reason",
    "updated_at",
    "history_seq",
    "wait",
    "wake_at",
)
RUN_SELECT = ", ".join(RUN_COLUMNS)
EVENT_SELECT = ", ".join(EVENT_COLUMNS)
UPSERT_SET = ", ".join(f"{c} = excluded.{c}" for c in RUN_MUTABLE)
INBOX_SELECT = "id, user_id, request_id, kind, payload"
MODEL_CALL_SELECT = "after_seq, attempt, step, name, request_sha256, response"


def node_live(node: str, now: str) -> str:
    """SQL: the node incarnation named by the expression ``node`` is alive (its row in
    ``netra_nodes`` has not expired on the database's clock ``now``)."""
    return f"EXISTS (SELECT 1 FROM netra_nodes AS n WHERE n.node = {node} AND n.expires_at > {now})"


def lease_held(alias: str, now: str) -> str:
    """SQL: the lease row ``alias`` of ``netra_leases`` is held — not released, and its node is
    alive (schema version 6: a lease lasts as long as its node's row)."""
    return f"{alias}.expires_at > 0 AND {node_live(alias + '.node', now)}"


def orphan_queries(now: str, mark: str) -> tuple[str, str]:
    """The recovery scan's two reads in a dialect (``now``: its clock, ``mark``: a parameter
    placeholder, ``{}`` for its number): users with a live run that is not waiting as a row,
    and users with a timer or a scheduled start due within ``lookahead`` seconds — each while
    no node holds the user's lease. Parameters: (live states…, limit); (lookahead, limit).

    ``wake_at IS NOT NULL`` keeps SQLite on the ``wake_at`` index: without it the planner scans
    every run of every user (in ``user_id`` order, for the DISTINCT) at each scan."""
    free = (
        "NOT EXISTS (SELECT 1 FROM netra_leases AS l WHERE l.user_id = r.user_id "
        f"AND {lease_held('l', now)})"
    )
    states = ", ".join(mark.format(i + 1) for i in range(len(LIVE_STATE_VALUES)))
    n = len(LIVE_STATE_VALUES)
    live = (
        f"SELECT DISTINCT r.user_id FROM netra_runs AS r WHERE r.state IN ({states}) "
        f"AND r.wait IS NULL AND {free} LIMIT {mark.format(n + 1)}"
    )
    due = (
        f"SELECT DISTINCT r.user_id FROM netra_runs AS r WHERE r.wake_at IS NOT NULL AND "
        f"r.wake_at <= {now} + "
        f"{mark.format(1)} AND {free} LIMIT {mark.format(2)}"
    )
    return live, due


# -- read rows -------------------------------------------------------------------------------


class RunRecord(NamedTuple):
    """A row of ``netra_runs`` with attribute access (for :meth:`RunInfo.from_row`)."""

    user_id: str
    run_id: str
    agent: str
    state: str
    attempt: int
    input: str | None
    result: str | None
    reason: str | None
    created_at: float
    updated_at: float
    thread: str
    start_seq: int | None
    history_seq: int | None
    wait: str | None = None
    wake_at: float | None = None


def run_info(row: Sequence[Any]) -> RunInfo:
    return RunInfo.from_row(RunRecord(*row))


def inbox_item(row: Sequence[Any]) -> InboxItem:
    return InboxItem(id=int(row[0]), user_id=row[1], request_id=row[2], kind=row[3], payload=row[4])


def snapshot(head: int, live: Iterable[Sequence[Any]]) -> UserSnapshot:
    return UserSnapshot(head_seq=head, live_runs=tuple(run_info(row) for row in live))


# -- written rows ----------------------------------------------------------------------------


def event_rows(batch: Sequence[Pending]) -> list[Event]:
    """The event rows of a batch (the committed events themselves: see ``Pending``)."""
    if len(batch) == 1:
        return batch[0].events
    return [ev for p in batch for ev in p.events]


def run_rows(batch: Sequence[Pending]) -> list[tuple[Any, ...]]:
    return [
        (
            r.user_id,
            r.run_id,
            r.agent,
            r.state,
            r.attempt,
            r.input_json,
            r.result_json,
            r.reason,
            r.created_at,
            r.updated_at,
            r.thread,
            r.start_seq,
            r.history_seq,
            r.wait,
            r.wake_at,
        )
        for p in batch
        for r in p.unit.runs.values()
    ]


def thread_rows(batch: Sequence[Pending]) -> list[tuple[str, str, str | None, float, int, float]]:
    """The ``netra_threads`` summary of a batch: one row per (user, thread) it wrote events of,
    ``(user_id, thread, title, created_ts, last_seq, last_ts)``. ``title``: the start of the
    first user message of the thread in this batch (the upsert keeps an existing title)."""
    rows: dict[tuple[str, str], list[Any]] = {}
    for p in batch:
        events = p.events
        if not events:
            continue
        # Usually all of a unit's events are of one thread and none is a message (a title):
        # then its first and last event say it all (checked in C: the writer holds the GIL).
        if "message" not in map(_EVENT, events) and len(set(map(_THREAD, events))) == 1:
            first, last = events[0], events[-1]
            thread = first[6]
            if thread is None:
                continue
            key = (first[0], thread)
            row = rows.get(key)
            if row is None:
                rows[key] = [first[0], thread, None, first[4], last[1], last[4]]
            else:
                row[4], row[5] = last[1], last[4]
            continue
        for ev in events:
            thread = ev[6]
            if thread is None:
                continue
            key = (ev[0], thread)
            row = rows.get(key)
            if row is None:
                row = rows[key] = [ev[0], thread, None, ev[4], ev[1], ev[4]]
            else:
                row[4], row[5] = ev[1], ev[4]
            if row[2] is None and ev[3] == "message" and '"role":"user"' in ev[5]:
                row[2] = _user_title(ev[5])
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows.values()]


_EVENT = operator.itemgetter(3)
_THREAD = operator.itemgetter(6)


def _user_title(data_json: str) -> str | None:
    data = loads(data_json)
    if isinstance(data, dict) and data.get("role") == "user":
        return title_of(str(data.get("text", "")))
    return None


def message_id_rows(batch: Sequence[Pending], now: float) -> list[tuple[str, str, str, float]]:
    """The client-chosen message ids a batch commits: ``(user_id, message_id, thread, ts)``."""
    return [(p.user_id, m, t, now) for p in batch for m, t in p.unit.message_ids]


def head_rows(units: Sequence[Pending]) -> tuple[list[str], list[int]]:
    """Per user of the committed units, the head seq after them (for the NOTIFY hints)."""
    heads: dict[str, int] = {}
    for p in units:
        if p.events:
            seq = p.events[-1][1]
            if seq > heads.get(p.user_id, 0):
                heads[p.user_id] = seq
    return list(heads), list(heads.values())


def done_rows(units: Sequence[Pending]) -> list[tuple[int, str]]:
    return [(i, p.user_id) for p in units for i in p.unit.inbox_done]


def reply_rows(units: Sequence[Pending], now: float) -> list[tuple[str, str, bool, str, float]]:
    return [(r, u, ok, payload, now) for p in units for (r, u, ok, payload) in p.unit.replies]
