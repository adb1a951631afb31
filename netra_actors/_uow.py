"""The unit of work: what one transaction of one user records.

A unit collects, in order, the events to publish (the transactional outbox), the run rows to
upsert (every state transition goes in the same unit as its ``run_state`` event) and the
developer's own staged rows. It is built inside the supervisor and handed to the store whole:
either all of it commits, or none of it does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import attrs

from ._core import Transition
from ._values import JSON, dumps


@attrs.frozen(kw_only=True)
class StagedEvent:
    """An event waiting for its unit to commit. It has no ``seq`` yet."""

    run_id: str | None
    event: str
    data: Mapping[str, JSON]
    data_json: str
    """``data`` encoded once, when staged."""


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


@attrs.frozen(kw_only=True)
class StagedStatement:
    """A developer's row or statement: an ORM instance, or a Core statement with parameters."""

    target: Any
    params: Any = None


class UnitOfWork:
    """A unit of work of one user, being built. Not thread-safe; owned by the supervisor."""

    __slots__ = ("events", "runs", "statements", "transitions", "user_id")

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.events: list[StagedEvent] = []
        self.runs: dict[str, RunRow] = {}
        self.statements: list[StagedStatement] = []
        self.transitions: list[tuple[str, Transition]] = []

    def __bool__(self) -> bool:
        return bool(self.events or self.runs or self.statements)

    def emit(self, run_id: str | None, event: str, data: Mapping[str, JSON]) -> None:
        """Stage an event (``data`` must be JSON-encodable: checked here, not at commit)."""
        self.events.append(
            StagedEvent(run_id=run_id, event=event, data=data, data_json=dumps(data))
        )

    def emit_encoded(self, staged: StagedEvent) -> None:
        """Stage an event that was already validated and encoded."""
        self.events.append(staged)

    def stage(self, target: Any, params: Any = None) -> None:
        """Stage a developer's ORM instance or Core statement."""
        self.statements.append(StagedStatement(target=target, params=params))

    def put_run(self, row: RunRow) -> None:
        """Record the run row as it will be after this unit."""
        self.runs[row.run_id] = row

    def record_transition(
        self, row: RunRow, transition: Transition, extra: Mapping[str, JSON] | None = None
    ) -> RunRow:
        """Stage a state transition: its ``run_state`` event and the updated run row."""
        data: dict[str, JSON] = {
            "state": transition.state.value,
            "previous": transition.previous.value if transition.previous else None,
        }
        if transition.reason is not None:
            data["reason"] = transition.reason
        if extra:
            data.update(extra)
        self.emit(row.run_id, "run_state", data)
        new_row = attrs.evolve(
            row,
            state=transition.state.value,
            reason=transition.reason if transition.state.is_terminal else row.reason,
            updated_at=time.time(),
        )
        self.put_run(new_row)
        self.transitions.append((row.run_id, transition))
        return new_row
