"""The conversation as values (``_conversation.py``) and as chat messages within a budget
(``llm/_history.py``), from committed events."""

from __future__ import annotations

import json

import pytest

import netra_actors as na
from netra_actors._conversation import conversation_of
from netra_actors.llm._history import chat_turns, history_messages, within_budget


def ev(seq: int, run: str, name: str, **data: object) -> na.Event:
    return na.Event.create(
        user_id="u", seq=seq, run_id=run, event=name, ts=float(seq), data=data, thread="t"
    )


EVENTS = [
    ev(1, "r1", "message", role="user", text="weather?", message_id="m1"),
    ev(2, "r1", "tool_executing", tool="weather", args={"city": "Paris"}, call_id="c1"),
    ev(3, "r1", "tool_completed", tool="weather", call_id="c1", result={"c": 21}),
    ev(4, "r1", "tool_executing", tool="broken", args={}, call_id="c2"),
    ev(5, "r1", "tool_completed", tool="broken", call_id="c2", error="ValueError: no"),
    ev(6, "r1", "tool_executing", tool="lost", args={}, call_id="c3"),
    ev(7, "r1", "message", role="assistant", text="21 °C", message_id="m2"),
    ev(8, "r1", "message", role="system", text="ignored"),
    ev(9, "r2", "message", role="user", text="thanks", message_id="m3"),
]


def test_events_become_typed_messages_with_their_tool_calls() -> None:
    conv = conversation_of(EVENTS)
    assert [(m.role, m.text, m.seq) for m in conv] == [
        ("user", "weather?", 1),
        ("tool", "", 2),
        ("tool", "", 4),
        ("tool", "", 6),
        ("assistant", "21 °C", 7),
        ("user", "thanks", 9),
    ]
    ok, failed, lost = (m.tool for m in conv[1:4])
    assert ok == na.types.ToolCallRecord(
        call_id="c1", name="weather", args={"city": "Paris"}, result={"c": 21}, completed=True
    )
    assert failed is not None
    assert (failed.error, failed.completed) == ("ValueError: no", True)
    assert lost is not None
    assert not lost.completed
    assert conv[0].message_id == "m1"
    assert conv[-1].run_id == "r2"
    with pytest.raises(AttributeError):
        conv[0].text = "changed"  # type: ignore[misc]


def test_user_messages_of_later_runs_are_left_out() -> None:
    conv = conversation_of(EVENTS, run_id="r1", start_seq=1)
    assert [m.text for m in conv if m.role == "user"] == ["weather?"]
    assert [m.text for m in conversation_of(EVENTS, run_id="r2", start_seq=9)][-1] == "thanks"


def test_later_runs_are_left_out_with_their_answers_and_tool_calls() -> None:
    later = [
        ev(10, "r3", "message", role="user", text="meanwhile?", message_id="m4"),
        ev(11, "r3", "tool_executing", tool="look", args={}, call_id="c4"),
        ev(12, "r3", "tool_completed", tool="look", call_id="c4", result=1),
        ev(13, "r3", "message", role="assistant", text="found", message_id="m5"),
        ev(14, "r1", "message", role="assistant", text="and more", message_id="m6"),
    ]
    conv = conversation_of([*EVENTS, *later], run_id="r2", start_seq=9)
    assert "r3" not in {m.run_id for m in conv}  # admitted after r2: the whole exchange
    assert [m.text for m in conv][-2:] == ["thanks", "and more"]  # an earlier run's answer stays


def test_chat_messages_answer_every_tool_call_they_show() -> None:
    turns = chat_turns(conversation_of(EVENTS))
    assert len(turns) == 2
    first = turns[0]
    assert first[0] == {"role": "user", "content": "weather?"}
    assert first[1]["tool_calls"] == [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert first[2] == {"role": "tool", "tool_call_id": "c1", "content": '{"c":21}'}
    assert first[4] == {
        "role": "tool",
        "tool_call_id": "c2",
        "content": '{"error":"ValueError: no"}',
    }
    assert "c3" not in json.dumps(first)  # never completed: not shown
    assert first[-1] == {"role": "assistant", "content": "21 °C"}


def test_the_budget_drops_whole_turns_oldest_first_and_keeps_the_last() -> None:
    turns = [[{"role": "user", "content": "x" * 10}] for _ in range(5)]
    size = len(json.dumps(turns[0][0], separators=(",", ":")))
    assert len(within_budget(turns, 3 * size)) == 3
    assert len(within_budget(turns, 1)) == 1  # the last turn always


def test_the_runs_own_message_comes_last_and_a_start_run_gets_its_input() -> None:
    conv = conversation_of(EVENTS)
    messages = history_messages(conv, "thanks", run_id="r2", system_prompt="S", max_chars=10**6)
    assert messages[0] == {"role": "system", "content": "S"}
    assert messages[-1] == {"role": "user", "content": "thanks"}
    started = history_messages(
        conv[:1], {"text": "go"}, run_id="r9", system_prompt=None, max_chars=10**6
    )
    assert started == [{"role": "user", "content": "weather?"}, {"role": "user", "content": "go"}]
