"""Immutable values that cross module boundaries: committed events and run snapshots.

An event is encoded to JSON **once**, when it is staged, and that text travels unchanged into
the store's row and into every socket frame. No caller-owned mapping is ever held, so what a
live subscriber receives is byte for byte what was committed and what a replay returns
(invariants 2 and 7).
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeAlias

import attrs
import orjson

from ._core import RunState

JSON: TypeAlias = Any
"""Any value ``orjson`` can encode (dict, list, str, int, float, bool, None)."""

#: Event names the runtime emits itself. Agent code may not emit these.
RESERVED_EVENTS = frozenset({"run_state", "agent_started", "agent_completed", "run_rolled_back"})


def dumps(value: JSON) -> str:
    """Encode a JSON value as text (orjson; raises ``TypeError`` for what it cannot encode)."""
    return orjson.dumps(value).decode()


def loads(text: str | bytes) -> JSON:
    """Decode JSON text."""
    return orjson.loads(text)


class StagedEvent(NamedTuple):
    """An event waiting for its unit of work to commit. It has no ``seq`` yet."""

    run_id: str | None
    event: str
    data_json: str
    """The payload, already encoded (once, when it was staged)."""


class Event(NamedTuple):
    """One committed event of one user. Its ``seq`` is final and gapless per user.

    An immutable value (a named tuple). The payload is kept as the JSON text that was committed;
    :attr:`data` decodes a fresh copy on each access, so nobody can change what others see.
    """

    user_id: str
    """Whose event this is."""
    seq: int
    """Per-user sequence number: 1, 2, 3, … with no gap and no repeat."""
    run_id: str | None
    """The run it belongs to (``None`` for user-level events)."""
    event: str
    """The event name (``run_state``, ``agent_thinking``, a custom name …)."""
    ts: float
    """Commit time, seconds since the epoch."""
    data_json: str
    """The payload as committed (JSON text of an object)."""
    thread: str | None = None
    """The thread it belongs to: its run's (``main`` by default); None for an event of the
    user's log that belongs to no thread."""

    @property
    def data(self) -> dict[str, JSON]:
        """The payload, decoded (a new dict on every access)."""
        value: dict[str, JSON] = orjson.loads(self.data_json)
        return value

    @classmethod
    def create(
        cls,
        *,
        user_id: str,
        seq: int,
        run_id: str | None,
        event: str,
        ts: float,
        data: JSON,
        thread: str | None = None,
    ) -> Event:
        """Build an event from a payload value (encoded here)."""
        return cls(user_id, seq, run_id, event, ts, dumps(data), thread)

    @classmethod
    def from_row(cls, row: Any) -> Event:
        """Build from a row of the events table (attribute access by column name)."""
        return cls(row.user_id, row.seq, row.run_id, row.event, row.ts, row.data, row.thread)

    def to_wire(self) -> dict[str, JSON]:
        """The protocol v1 ``event`` frame as a dict (decodes the payload)."""
        frame: dict[str, JSON] = {
            "type": "event",
            "seq": self.seq,
            "run_id": self.run_id,
            "event": self.event,
            "ts": self.ts,
            "data": self.data,
        }
        if self.thread is not None:
            frame["thread"] = self.thread
        return frame

    def wire_json(self) -> str:
        """The protocol v1 ``event`` frame as JSON text, built around the committed payload.

        The payload is not decoded or re-encoded: the frame embeds ``data_json`` as it is.
        """
        run_id = "null" if self.run_id is None else orjson.dumps(self.run_id).decode()
        event = orjson.dumps(self.event).decode()
        # A thread name is plain ASCII without quotes (``_core/_threads.py``): no escaping.
        thread = "" if self.thread is None else f',"thread":"{self.thread}"'
        return (
            f'{{"type":"event","seq":{self.seq},"run_id":{run_id},'
            f'"event":{event},"ts":{self.ts!r},"data":{self.data_json}{thread}}}'
        )


class Delta(NamedTuple):
    """Provisional text of a message that is still streaming. Not durable: it has no ``seq``.

    ``offset`` counts the code points of the message sent before ``text``. The message's
    committed ``message`` event (same ``message_id``) supersedes it; a ``run_rolled_back`` of the
    same run and attempt retracts it.
    """

    run_id: str
    attempt: int
    message_id: str
    offset: int
    text: str

    def wire_json(self) -> str:
        """The ``delta`` frame (protocol v1 addition) as JSON text."""
        return orjson.dumps(
            {
                "type": "delta",
                "run_id": self.run_id,
                "attempt": self.attempt,
                "message_id": self.message_id,
                "offset": self.offset,
                "text": self.text,
            }
        ).decode()


@attrs.frozen(kw_only=True)
class RunInfo:
    """A snapshot of one run, as the store has it."""

    user_id: str
    run_id: str
    agent: str
    state: RunState
    attempt: int
    """1 for the first attempt; each supervised restart adds one."""
    created_at: float
    updated_at: float
    reason: str | None = None
    """Why the run ended, for ``failed``/``timeout``/``dead``/``cancelled``."""
    input: JSON = None
    result: JSON = None
    thread: str = "main"
    """The thread the run belongs to."""
    start_seq: int | None = None
    """The ``seq`` of the run's first event (None for runs stored before threads existed)."""
    history_seq: int | None = None
    """The last ``seq`` of its thread the run's conversation includes (None: not fixed yet)."""
    wait: str | None = None
    """What a live run waits for as a row: ``input`` (an answer), ``timer`` (a durable sleep),
    ``scheduled`` (its start time); None otherwise."""
    wake_at: float | None = None
    """When its timer or scheduled start is due (seconds since the epoch)."""

    @classmethod
    def from_row(cls, row: Any) -> RunInfo:
        """Build from a row of the runs table."""
        return cls(
            user_id=row.user_id,
            run_id=row.run_id,
            agent=row.agent,
            state=RunState(row.state),
            attempt=row.attempt,
            created_at=row.created_at,
            updated_at=row.updated_at,
            reason=row.reason,
            input=loads(row.input) if row.input is not None else None,
            result=loads(row.result) if row.result is not None else None,
            thread=row.thread,
            start_seq=row.start_seq,
            history_seq=row.history_seq,
            wait=getattr(row, "wait", None),
            wake_at=getattr(row, "wake_at", None),
        )

    def to_wire(self) -> dict[str, JSON]:
        """The element of a protocol v1 ``runs`` frame."""
        out: dict[str, JSON] = {
            "run_id": self.run_id,
            "agent": self.agent,
            "state": self.state.value,
            "attempt": self.attempt,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "thread": self.thread,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out
