"""What a live subscriber receives is exactly what was committed (invariants 2 and 7).

An agent that changes a dict after emitting it must not change the event: the event is encoded
once, when staged, and that text is the row, the live event and the replayed event.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import db_path, make_config, read_until_ended
from runtime_agents import AGENTS_BY_KIND, test_metadata

import netra_actors as na
from netra_actors.gateway._protocol import event_frames
from netra_actors.testing import guest_test


@pytest.mark.parametrize("kind", ["async", "threaded"])
@guest_test()
async def test_mutating_emitted_data_changes_nothing(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    async with na.open_runtime(config, agents=AGENTS_BY_KIND[kind], metadata=[test_metadata]) as rt:
        sub = await rt.subscribe("alice", resume_from=0)
        run_id = await rt.start_run("alice", "mutator", None)
        live = await read_until_ended(sub, [run_id])
        replayed = [e async for e in rt.replay("alice")]

    with sqlite3.connect(db_path(config)) as conn:
        rows = dict(conn.execute("SELECT seq, data FROM netra_events WHERE user_id = 'alice'"))

    probe = next(e for e in live if e.event == "probe")
    assert probe.data == {"n": 1, "items": [1]}  # as emitted, not as changed afterwards
    completed = next(e for e in live if e.event == "agent_completed")
    assert completed.data == {"result": {"n": 3, "items": [1, 2]}}  # the value returned
    # Byte for byte: the live payload is the row's text and the replayed payload.
    assert [(e.seq, e.data_json) for e in live] == sorted(rows.items())
    assert live == replayed
    # The socket frame embeds the committed text as it is and decodes to the v1 frame.
    frame: dict[str, Any] = orjson.loads(probe.wire_json())
    assert frame == probe.to_wire()
    assert rows[probe.seq] in probe.wire_json()
    (batch,) = event_frames([e.wire_json() for e in live], max_bytes=1 << 20)
    assert [orjson.loads(batch)["events"][i] for i in range(len(live))] == [
        e.to_wire() for e in live
    ]


def test_event_data_is_a_fresh_copy() -> None:
    event = na.Event.create(user_id="u", seq=1, run_id=None, event="x", ts=1.0, data={"a": [1]})
    first = event.data
    first["a"].append(2)
    assert event.data == {"a": [1]}
    assert event.data_json == '{"a":[1]}'
    with pytest.raises(AttributeError):
        event.seq = 2  # type: ignore[misc]
