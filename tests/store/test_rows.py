"""The rows a batch writes (``_store/_rows.py``): the ``netra_threads`` summary of a batch is the
same as folding its events one by one, whichever shortcut a unit takes (one thread and no
message: its first and last event)."""

from __future__ import annotations

from typing import Any

import trio
from hypothesis import given
from hypothesis import strategies as st

from netra_actors._core._threads import title_of
from netra_actors._store._rows import thread_rows
from netra_actors._store._waiting import Pending
from netra_actors._uow import UnitOfWork
from netra_actors._values import StagedEvent, dumps, loads


def reference(batch: list[Pending]) -> list[tuple[Any, ...]]:
    """The summary by definition: every event in order, per (user, thread)."""
    rows: dict[tuple[str, str], list[Any]] = {}
    for p in batch:
        for user, seq, _run, event, ts, data, thread in p.events:
            if thread is None:
                continue
            row = rows.get((user, thread))
            if row is None:
                row = rows[(user, thread)] = [user, thread, None, ts, seq, ts]
            else:
                row[4], row[5] = seq, ts
            if row[2] is None and event == "message" and loads(data).get("role") == "user":
                row[2] = title_of(str(loads(data).get("text", "")))
    return [tuple(r) for r in rows.values()]


EVENT = st.tuples(
    st.sampled_from(["r1", "r2", None]),  # r2 is of another thread; None: the unit's own
    st.sampled_from(["agent_thinking", "message", "run_state"]),
    st.sampled_from(["user", "assistant"]),
    st.sampled_from(["hello there", "a second question"]),
)
UNIT = st.tuples(
    st.sampled_from(["alice", "bob"]),
    st.sampled_from([None, "side"]),  # the thread of events of no run
    st.lists(EVENT, max_size=6),
)


@given(st.lists(UNIT, max_size=6))
def test_the_threads_summary_is_the_fold_of_every_event(units: list[Any]) -> None:
    async def build() -> list[Pending]:
        heads: dict[str, int] = {}
        batch = []
        for user, own_thread, events in units:
            unit = UnitOfWork(user)
            unit.threads = {"r1": "main", "r2": "other"}
            unit.thread = own_thread
            for run_id, event, role, text in events:
                data = {"role": role, "text": text} if event == "message" else {"n": 1}
                unit.events.append(StagedEvent(run_id, event, dumps(data)))
            batch.append(Pending(user, heads.get(user, 0), unit))
            heads[user] = heads.get(user, 0) + len(events)
        return batch

    batch = trio.run(build)
    assert thread_rows(batch) == reference(batch)
