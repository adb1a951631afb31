"""Checks shared by the runtime tests: read the SQLite file directly, validate event streams."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import trio

import netra_actors as na
from netra_actors._core import ExecutionStateMachine, RunState, Transition
from netra_actors._store import Store
from netra_actors._uow import UnitOfWork

FAST_RESTART = na.policies.RestartPolicy(max_restarts=3, backoff_initial=0.01, backoff_max=0.05)


def make_config(tmp_path: Path, **changes: Any) -> na.RuntimeConfig:
    """A config on a fresh SQLite file in ``tmp_path`` with fast restarts."""
    base: dict[str, Any] = {
        "database_url": na.sqlite_url(tmp_path / "netra.db"),
        "restart": FAST_RESTART,
    }
    base.update(changes)
    return na.RuntimeConfig(**base)


def db_path(config: na.RuntimeConfig) -> str:
    return config.database_url.split(":///", 1)[1]


def stored_events(config: na.RuntimeConfig, user_id: str) -> list[tuple[int, str | None, str, Any]]:
    """(seq, run_id, event, data) of a user, read with an independent sqlite3 connection."""
    with sqlite3.connect(db_path(config)) as conn:
        rows = conn.execute(
            "SELECT seq, run_id, event, data FROM netra_events WHERE user_id = ? ORDER BY seq",
            (user_id,),
        ).fetchall()
    return [(seq, run_id, event, json.loads(data)) for seq, run_id, event, data in rows]


def ledger_attempts(config: na.RuntimeConfig, run_id: str) -> list[int]:
    """The attempts that committed a ``test_ledger`` row for the run."""
    with sqlite3.connect(db_path(config)) as conn:
        rows = conn.execute(
            "SELECT attempt FROM test_ledger WHERE run_id = ? ORDER BY id", (run_id,)
        ).fetchall()
    return [r[0] for r in rows]


def as_tuples(events: Iterable[na.Event]) -> list[tuple[int, str | None, str, Any]]:
    return [(e.seq, e.run_id, e.event, dict(e.data)) for e in events]


def assert_gapless(events: Sequence[na.Event], *, start: int = 1) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(start, start + len(seqs))), f"not gapless from {start}: {seqs}"


def assert_legal_runs(
    events: Iterable[na.Event | tuple[int, str | None, str, Any]],
) -> dict[str, RunState]:
    """Replay every run's ``run_state`` events through a fresh state machine.

    Also checks that every ``run_rolled_back`` is followed by a ``run_state`` of its run.
    Returns each run's final state.
    """
    machines: dict[str, ExecutionStateMachine] = {}
    awaiting_state: set[str] = set()
    for item in events:
        if isinstance(item, na.Event):
            run_id, name, data = item.run_id, item.event, dict(item.data)
        else:
            _, run_id, name, data = item
        if run_id is None:
            continue
        if name == "run_rolled_back":
            assert run_id not in awaiting_state, f"two rollbacks in a row for {run_id}"
            awaiting_state.add(run_id)
        if name != "run_state":
            continue
        awaiting_state.discard(run_id)
        state = RunState(data["state"])
        previous = data["previous"]
        if run_id not in machines:
            assert previous is None, (run_id, data)
            assert state is RunState.PENDING, (run_id, data)
            machines[run_id] = ExecutionStateMachine(RunState.PENDING)
            continue
        machine = machines[run_id]
        assert previous == machine.state.value, (run_id, previous, machine.state)
        machine.apply(Transition(previous=machine.state, state=state))
    assert not awaiting_state, f"rollback without a following run_state: {awaiting_state}"
    return {run_id: m.state for run_id, m in machines.items()}


def run_events(events: Iterable[na.Event], run_id: str) -> list[na.Event]:
    return [e for e in events if e.run_id == run_id]


async def read_until_ended(sub: na.types.Subscription, run_ids: Iterable[str]) -> list[na.Event]:
    """Read a subscription until every run in ``run_ids`` has a terminal ``run_state``."""
    pending = set(run_ids)
    events: list[na.Event] = []
    with trio.fail_after(20):
        while pending:
            for e in await sub.receive_batch():
                events.append(e)
                if e.event == "run_state" and RunState(e.data["state"]).is_terminal:
                    pending.discard(e.run_id or "")
    return events


class WatermarkStore:
    """Delegates to the real store; records, per user, the highest seq whose commit returned."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.committed: dict[str, int] = {}

    async def commit(
        self, user_id: str, base_seq: int, unit: UnitOfWork, **kwargs: Any
    ) -> list[na.Event]:
        events = await self.inner.commit(user_id, base_seq, unit, **kwargs)
        if events:
            self.committed[user_id] = events[-1].seq
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
