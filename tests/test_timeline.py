"""A run's attempts read back from its events (``_timeline.py``): rollbacks, tool steps, and the
replayed steps that commit nothing."""

from __future__ import annotations

import time
from typing import Any

import netra_actors as na
from netra_actors._timeline import summary, timeline
from netra_actors._values import Event, RunInfo

RUN = "r_t"


def make(*specs: tuple[str, dict[str, Any]]) -> list[Event]:
    return [
        Event.create(user_id="u", seq=n, run_id=RUN, event=name, ts=100.0 + n, data=data)
        for n, (name, data) in enumerate(specs, 1)
    ]


def started(n: int) -> tuple[str, dict[str, Any]]:
    return "agent_started", {"agent": "a", "attempt": n}


def call(n: int, attempt: int, tool: str, ok: bool = True) -> list[tuple[str, dict[str, Any]]]:
    call_id = f"{RUN}.{attempt}.{n}"
    end = {"result": 1} if ok else {"error": "ValueError: no"}
    return [
        ("tool_executing", {"tool": tool, "args": {"x": n}, "call_id": call_id}),
        ("tool_completed", {"tool": tool, "call_id": call_id, **end, "attempts": 1}),
    ]


CRASH = (
    "run_rolled_back",
    {"reason": "crash", "error": "E: boom", "attempt": 1, "will_restart": True},
)


def info(state: str = "completed", attempt: int = 2) -> RunInfo:
    now = time.time()
    return RunInfo(user_id="u", run_id=RUN, agent="a", state=na.RunState(state), attempt=attempt,
                   created_at=now, updated_at=now)  # fmt: skip


def test_a_restarted_attempt_replays_the_steps_that_succeeded() -> None:
    events = make(
        started(1), *call(1, 1, "search"), *call(2, 1, "fetch", ok=False), CRASH,
        started(2), ("tool_executing", {"tool": "fetch", "args": {"x": 2}, "call_id": f"{RUN}.2.1"}),
        ("tool_completed", {"tool": "fetch", "call_id": f"{RUN}.2.1", "result": 2, "attempts": 1}),
        ("agent_completed", {"result": None}),
    )  # fmt: skip
    t = timeline(info(), events)
    first, second = t["attempts"]
    assert (first["outcome"], first["rollback"]["reason"]) == ("rolled_back", "crash")
    assert [(x["tool"], x["status"]) for x in first["tools"]] == [
        ("search", "ok"),
        ("fetch", "error"),
    ]
    assert first["replayed"] == []
    assert second["outcome"] == "completed"
    assert second["replayed"] == [{"step": 1, "tool": "search", "exact": True}]
    assert [x["tool"] for x in second["tools"]] == ["fetch"]
    assert [e["attempt"] for e in t["events"]] == [1] * 6 + [2] * 4


def test_a_divergence_stops_the_replay_where_it_says() -> None:
    events = make(
        started(1), *call(1, 1, "a"), *call(2, 1, "b"), CRASH,
        started(2), ("tool_replay_diverged", {"step": 2, "expected": {"tool": "b"},
                                              "actual": {"tool": "c"}, "attempt": 2}),
        *call(1, 2, "c"), CRASH,
        started(3), *call(1, 3, "d"),
    )  # fmt: skip
    second, third = timeline(info("running", 3), events)["attempts"][1:]
    assert [r["tool"] for r in second["replayed"]] == ["a"]
    assert second["diverged"][0]["step"] == 2
    assert [r["tool"] for r in third["replayed"]] == ["a", "c"]  # the journal after the divergence
    assert third["outcome"] == "running"
    assert third["end"] is None


def test_an_attempt_without_a_new_call_replayed_at_most_the_journal() -> None:
    events = make(started(1), *call(1, 1, "a"), CRASH, started(2), CRASH, started(3),
                  ("agent_completed", {"result": None}))  # fmt: skip
    _, second, third = timeline(info(attempt=3), events)["attempts"]
    assert second["replayed"] == [{"step": 1, "tool": "a", "exact": False}]
    assert third["replayed"] == [{"step": 1, "tool": "a", "exact": True}]


def test_a_question_left_unanswered_is_waiting() -> None:
    events = make(started(1), ("input_requested", {"prompt": "Which?"}))
    (only,) = timeline(info("running", 1), events)["attempts"]
    assert only["outcome"] == "waiting"
    assert only["asks"][0]["prompt"] == "Which?"
    answered = make(started(1), ("input_requested", {"prompt": "?"}), ("run_input", {"input": 1}))
    assert timeline(info("running", 1), answered)["attempts"][0]["outcome"] == "running"


def test_summaries_say_what_an_event_is_in_one_short_line() -> None:
    assert summary(
        "run_state", {"state": "starting", "previous": "running", "reason": "restart"}
    ) == ("running → starting (restart)")
    assert summary("tool_executing", {"tool": "t", "args": {"q": "x"}}) == "t(q='x')"
    assert len(summary("agent_thinking", {"text": "y" * 1000})) == 160
