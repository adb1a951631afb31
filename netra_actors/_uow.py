"""The unit of work: what one transaction of one user records.

A unit collects, in order, the events to publish (the transactional outbox), the run rows to
upsert (every state transition goes in the same unit as its ``run_state`` event) and the
developer's own staged rows. It is built inside the supervisor and handed to the store whole:
either all of it commits, or none of it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
from sqlalchemy.sql.base import Executable

from ._values import JSON, StagedEvent, dumps

NO_THREADS: Mapping[str | None, str] = MappingProxyType({})


@attrs.frozen(kw_only=True)
class RunRow:
    """The full row of a run, as it will be after the unit commits."""

    user_id: str
    run_id: str
    agent: str
    state: str
    attempt: int
    input_json: str | None
    result_json: str | None
    reason: str | None
    created_at: float
    updated_at: float
    thread: str = "main"
    start_seq: int | None = None
    history_seq: int | None = None
    wait: str | None = None
    """What the run waits for as a row (``input``, ``timer``, ``scheduled``), if anything."""
    wake_at: float | None = None
    """When its timer or scheduled start is due (seconds since the epoch)."""


@attrs.frozen(kw_only=True)
class Erasure:
    """What a unit erases before it writes its rows (``_store/_erase.py`` has the SQL).

    ``thread`` set: the thread's events with ``seq <= up_to_seq`` (at most ``limit`` of them,
    oldest first; None: all) keep their ``seq`` and ``ts`` but become ``erased`` placeholders
    (``data`` ``{}``, no run, no thread); ``final`` also erases its runs' inputs and results,
    deletes their model calls, the thread's summary and its client message ids.
    ``thread`` None: every row of the user is deleted (see docs/store.md, "Erasure").
    """

    thread: str | None
    up_to_seq: int = 2**31 - 1
    limit: int | None = None
    final: bool = True


@attrs.frozen(kw_only=True)
class StagedStatement:
    """A developer's row or statement: an ORM instance, or a Core statement with parameters."""

    target: Any
    params: Any = None


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


class UnitOfWork:
    """A unit of work of one user, being built. Not thread-safe; owned by the supervisor."""

    __slots__ = (
        "erase",
        "events",
        "inbox_done",
        "message_ids",
        "replies",
        "runs",
        "statements",
        "thread",
        "threads",
        "user_id",
    )

    def __init__(self, user_id: str, events: list[StagedEvent] | None = None) -> None:
        self.user_id = user_id
        self.events: list[StagedEvent] = [] if events is None else events
        self.threads: Mapping[str | None, str] = NO_THREADS
        """The thread of each run whose events the unit holds (the committer sets it to the
        session's map of its live runs)."""
        self.thread: str | None = None
        """The thread of the unit's events that belong to no run (None: no thread)."""
        self.message_ids: list[tuple[str, str]] = []
        """``(message_id, thread)`` of the messages whose id a client chose: recorded in
        ``netra_message_ids`` in its transaction (unique per user)."""
        self.runs: dict[str, RunRow] = {}
        self.statements: list[StagedStatement] = []
        self.inbox_done: list[int] = []
        """Ids of ``netra_inbox`` commands this unit consumed: deleted in its transaction."""
        self.replies: list[tuple[str, str, bool, str]] = []
        """Answers to commands, ``(request_id, user_id, ok, payload)``: inserted into
        ``netra_replies`` in its transaction (first answer wins)."""
        self.erase: Erasure | None = None
        """What the unit erases first, in its transaction (thread deletion, retention, the
        erasure of the user)."""

    def __bool__(self) -> bool:
        return bool(
            self.events
            or self.runs
            or self.statements
            or self.inbox_done
            or self.replies
            or self.erase is not None
        )

    def emit(self, run_id: str | None, event: str, data: Mapping[str, JSON]) -> None:
        """Stage an event (``data`` must be JSON-encodable: checked here, not at commit)."""
        self.events.append(StagedEvent(run_id, event, dumps(data)))

    def emit_encoded(self, run_id: str | None, event: str, data_json: str) -> None:
        """Stage an event whose payload is already encoded."""
        self.events.append(StagedEvent(run_id, event, data_json))

    def stage(self, target: Any, params: Any = None) -> None:
        """Stage a developer's ORM instance or Core statement."""
        self.statements.append(StagedStatement(target=target, params=params))

    def put_run(self, row: RunRow) -> None:
        """Record the run row as it will be after this unit."""
        self.runs[row.run_id] = row
