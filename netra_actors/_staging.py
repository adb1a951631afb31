"""What an attempt stages before its next checkpoint: validated, encoded events and rows.

Staged work is invisible until a checkpoint commits it, so it does not travel to the supervisor
one item at a time: the agent's side holds it (one :class:`Staging` per context, async or
threaded) and it goes with the checkpoint, as one message. A crash discards it with the context,
exactly as a rollback of the unit would.

Every event is checked (its name, its size: ``RuntimeConfig.max_event_bytes``) and encoded to JSON
once, here; that text is what the store keeps and every socket receives (see :mod:`._values`).

While the attempt replays its run's journal (a :class:`~._core._journal.JournalCursor`), an event
that matches the next journaled one is not staged (it was committed by an earlier attempt), nor
is a row (it was committed with the work before it); a divergence is staged once, first in the
unit that follows it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._core._journal import JournalCursor
from ._exceptions import AgentError, ReservedEventError
from ._ids import new_message_id
from ._journal_events import divergence_event, event_key, message_key
from ._uow import check_stageable
from ._values import JSON, RESERVED_EVENTS, StagedEvent, dumps

_new = tuple.__new__
"""Builds a named tuple without its Python-level ``__new__`` (the same value, cheaper)."""

NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""What the names of agents and of events match."""

_checked_names: set[str] = set()
"""Event names that passed the name check (a cache: at most 4,096 names are kept)."""


def check_event_name(event: str) -> None:
    """Raise unless agents may emit an event called ``event``."""
    if event not in _checked_names:
        if not isinstance(event, str) or not NAME.match(event):
            raise ValueError(f"event names match [a-z][a-z0-9_]* (<= 64 chars), got {event!r}")
        if event not in RESERVED_EVENTS and len(_checked_names) < 4096:
            _checked_names.add(event)
    if event in RESERVED_EVENTS:
        raise ReservedEventError(f"{event!r} is emitted by the runtime, not by agent code")


def check_size(event: str, encoded: str, max_bytes: int | None) -> str:
    """``encoded``, unless it is larger than ``max_bytes``."""
    if max_bytes is not None and len(encoded) > max_bytes:
        raise ValueError(
            f"event {event!r} data is {len(encoded)} bytes of JSON, more than the limit of "
            f"{max_bytes} (RuntimeConfig.max_event_bytes)"
        )
    return encoded


def encoded_event(run_id: str, event: str, encoded: str, max_bytes: int | None) -> StagedEvent:
    """An event whose payload the runtime encoded itself (its size is still checked)."""
    return _new(StagedEvent, (run_id, event, check_size(event, encoded, max_bytes)))


def stage_event(
    run_id: str, event: str, data: Mapping[str, JSON] | None, max_bytes: int | None
) -> StagedEvent:
    """Validate and encode an event an agent wants to emit (encoded once, here)."""
    check_event_name(event)
    if data is None:
        encoded = "{}"
    elif type(data) is not dict and not isinstance(data, Mapping):
        raise TypeError(f"event data must be a mapping (a JSON object), got {type(data).__name__}")
    else:
        try:
            encoded = dumps(data)
        except TypeError as exc:
            raise TypeError(f"event {event!r} data is not JSON-encodable: {exc}") from None
    return _new(StagedEvent, (run_id, event, check_size(event, encoded, max_bytes)))


def text_event(
    run_id: str, event: str, fields: str, text: str, max_bytes: int | None
) -> StagedEvent:
    """A runtime-shaped event ``{<fields>"text": text}`` (``think``, ``say``), encoded directly."""
    encoded = "{" + fields + '"text":' + dumps(text) + "}"
    return _new(StagedEvent, (run_id, event, check_size(event, encoded, max_bytes)))


def assistant_message(
    run_id: str, text: str, max_bytes: int | None, *, message_id: str | None = None
) -> StagedEvent:
    """An assistant ``message`` event (with its ``message_id``: a new one unless given)."""
    mid = message_id or new_message_id()
    return text_event(
        run_id, "message", f'"role":"assistant","message_id":"{mid}",', text, max_bytes
    )


class Staging:
    """The work an attempt staged since its last checkpoint, held by the agent's side.

    Its methods validate and encode what they stage; :meth:`take` hands the whole unit over (to
    the checkpoint that commits it) and starts a new one.
    """

    __slots__ = ("attempt", "cursor", "events", "limit", "max_bytes", "rows", "run_id")

    def __init__(
        self,
        run_id: str,
        limit: int,
        max_bytes: int | None = None,
        cursor: JournalCursor | None = None,
        attempt: int = 1,
    ) -> None:
        self.run_id = run_id
        self.cursor = cursor
        """The attempt's walk through its run's journal (None: nothing to replay)."""
        self.attempt = attempt
        self.limit = limit
        """At most this many events and rows between two checkpoints."""
        self.max_bytes = max_bytes
        """The largest event payload, in bytes of JSON (``RuntimeConfig.max_event_bytes``)."""
        self.events: list[StagedEvent] = []
        self.rows: list[tuple[Any, Any]] = []

    def __bool__(self) -> bool:
        """True if anything is staged."""
        return bool(self.events or self.rows)

    def _room(self) -> None:
        if len(self.events) + len(self.rows) >= self.limit:
            raise AgentError(
                f"more than {self.limit} items staged without a checkpoint: "
                "call checkpoint() more often"
            )

    # emit, think and say append themselves: the agent's hottest path, one call shorter

    def add_event(self, staged: StagedEvent) -> None:
        """Stage an event that is already encoded."""
        if len(self.events) >= self.limit - len(self.rows):
            self._room()
        self.events.append(staged)

    def replayed(self, key: str) -> bool:
        """True if the attempt replays an event with this key (it is not staged again)."""
        cursor = self.cursor
        return cursor is not None and not cursor.stopped and cursor.event(key)

    def emit(self, event: str, data: Mapping[str, JSON] | None) -> None:
        """Stage an agent's custom event."""
        staged = stage_event(self.run_id, event, data, self.max_bytes)
        cursor = self.cursor  # the key is made only while replaying
        if cursor is not None and not cursor.stopped and cursor.event(event_key(event, staged[2])):
            return
        if len(self.events) >= self.limit - len(self.rows):
            self._room()
        self.events.append(staged)

    def think(self, text: str) -> None:
        """Stage an ``agent_thinking`` event."""
        encoded = '{"text":' + dumps(text) + "}"
        max_bytes = self.max_bytes
        if max_bytes is not None and len(encoded) > max_bytes:
            check_size("agent_thinking", encoded, max_bytes)  # raises
        cursor = self.cursor  # the key is made only while replaying
        if (
            cursor is not None
            and not cursor.stopped
            and cursor.event(event_key("agent_thinking", encoded))
        ):
            return
        staged = _new(StagedEvent, (self.run_id, "agent_thinking", encoded))
        if len(self.events) >= self.limit - len(self.rows):
            self._room()
        self.events.append(staged)

    def say(self, text: str, message_id: str | None = None) -> None:
        """Stage an assistant ``message`` (with ``message_id``: a new one unless given)."""
        if self.cursor is not None and self.replayed(message_key(text)):
            return
        self.add_event(assistant_message(self.run_id, text, self.max_bytes, message_id=message_id))

    def add_row(self, row: Any, params: Any) -> None:
        """Stage a developer's ORM instance or Core statement (with ``params``)."""
        check_stageable(row)
        if self.cursor is not None and not self.cursor.stopped:
            return  # committed with the replayed work it came with
        self._room()
        self.rows.append((row, params))

    def take(self) -> tuple[list[StagedEvent], list[tuple[Any, Any]]]:
        """The staged events and rows, handed over; nothing is staged afterwards."""
        cursor = self.cursor
        if cursor is not None and cursor.divergence is not None:
            self.events.insert(0, self._divergence())
        events, rows = self.events, self.rows
        self.events, self.rows = [], []
        return events, rows

    def _divergence(self) -> StagedEvent:
        assert self.cursor is not None
        divergence = self.cursor.take_divergence()
        assert divergence is not None
        return divergence_event(self.run_id, self.attempt, divergence)
