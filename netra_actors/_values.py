"""Immutable values that cross module boundaries: committed events and run snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

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


@attrs.frozen(kw_only=True)
class Event:
    """One committed event of one user. Its ``seq`` is final and gapless per user."""

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
    data: Mapping[str, JSON]
    """The payload."""

    @classmethod
    def from_row(cls, row: Any) -> Event:
        """Build from a row of the events table (attribute access by column name)."""
        return cls(
            user_id=row.user_id,
            seq=row.seq,
            run_id=row.run_id,
            event=row.event,
            ts=row.ts,
            data=loads(row.data),
        )

    def to_wire(self) -> dict[str, JSON]:
        """The protocol v1 ``event`` frame."""
        return {
            "type": "event",
            "seq": self.seq,
            "run_id": self.run_id,
            "event": self.event,
            "ts": self.ts,
            "data": dict(self.data),
        }


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
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out
