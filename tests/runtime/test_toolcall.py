"""The tool-call protocol (``netra_actors._toolcall``) on its own, without a runtime.

A small driver here plays the part of a context and its supervisor: it takes the protocol's steps
in the documented order, "commits" what they staged by folding the events into a :class:`Journal`
(as the supervisor does) and keeping them, and calls the tool's function itself. Attempts are
played one after the other against the journal the earlier ones left.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netra_actors._core._journal import Journal, JournalCursor, Outcome, step_item_key, step_key
from netra_actors._exceptions import (
    CircuitOpenError,
    DependencyFailedError,
    ReservedEventError,
    ToolError,
)
from netra_actors._journal_events import fold
from netra_actors._staging import Staging
from netra_actors._toolcall import ToolCalls, canonical_json
from netra_actors._values import dumps, loads

RUN = "r1"

Call = tuple[str, int]
"""A call of a script: the tool's name and its argument ``n``."""


class Attempt:
    """One attempt's driver: the protocol's steps, with commits and calls done right here."""

    def __init__(self, journal: Journal, attempt: int, *, limit: int = 1000) -> None:
        self.journal = journal
        cursor = JournalCursor(RUN, journal.snapshot())
        self.staging = Staging(RUN, limit, cursor=cursor, attempt=attempt)
        self.tools = ToolCalls(RUN, attempt, cursor)
        self.committed: list[tuple[str, dict[str, Any]]] = []
        self.called: list[int] = []
        """The script positions whose function really ran."""

    def commit(self) -> None:
        events, _rows = self.staging.take()
        self.committed += [(e.event, loads(e.data_json)) for e in events]
        for e in events:
            fold(self.journal, e.event, e.data_json)

    def tool(self, position: int, call: Call, fn: Callable[[], Any], *, replay: bool = True) -> Any:
        name, n = call
        tool_call = self.tools.begin(self.staging, name, {"n": n}, replay)
        if tool_call.replayed:
            if self.staging:
                self.commit()
            return tool_call.replay_result()
        try:
            tool_call.executing()
            self.commit()
            self.called.append(position)
            try:
                result = fn()
            except Exception as exc:
                error = tool_call.failed(exc)
                self.commit()
                raise error from exc
            tool_call.completed(dumps(result), 1)
            self.commit()
            return loads(dumps(result))
        finally:
            tool_call.end()

    def play(self, script: list[Call], fails: Collection[int] = ()) -> list[Any]:
        """Every call of ``script`` in order (the ones in ``fails`` raise; the agent goes on)."""
        results: list[Any] = []
        for i, call in enumerate(script):

            def fn(i: int = i, call: Call = call) -> Any:
                if i in fails:
                    raise ValueError(f"call {i} fails")
                return {"call": list(call), "attempt": self.tools.attempt}

            try:
                results.append(self.tool(i, call, fn))
            except ToolError as exc:
                results.append({"error": exc.error})
        return results

    def events(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data in self.committed if event == name]


calls = st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 2))


@settings(max_examples=300, deadline=None)
@given(
    script=st.lists(calls, max_size=7),
    crash_at=st.integers(0, 7),
    fails=st.sets(st.integers(0, 6)),
    change=st.one_of(st.none(), st.tuples(st.integers(0, 6), calls)),
)
def test_a_restart_replays_what_matched_and_detects_a_divergence_once(
    script: list[Call], crash_at: int, fails: set[int], change: tuple[int, Call] | None
) -> None:
    journal = Journal()
    first = Attempt(journal, 1)
    first_results = first.play(script[:crash_at], fails)  # then the attempt crashes
    recorded = journal.snapshot()
    again = list(script)
    if change is not None and change[0] < len(again):
        again[change[0]] = change[1]

    second = Attempt(journal, 2)
    results = second.play(again)

    # what the rules say, written plainly: a call is replayed when its step was recorded ok
    # with the same call and no earlier step of this attempt differed from the journal
    def key(call: Call) -> str:
        return step_item_key(call[0], canonical_json({"n": call[1]}))

    matched = 0
    while matched < min(len(again), len(recorded)) and recorded[matched].key == key(again[matched]):
        matched += 1
    replayed = [k for k in range(matched) if recorded[k].outcome is Outcome.OK]
    assert [k for k in range(len(again)) if k not in second.called] == replayed
    for k in replayed:
        assert results[k] == first_results[k] == loads(recorded[k].value)
    for k in second.called:
        assert results[k] == {"call": list(again[k]), "attempt": 2}

    diverged = second.events("tool_replay_diverged")
    if matched < min(len(again), len(recorded)):
        k = matched
        name, _, args = recorded[k].key.partition("\x00")
        assert diverged == [
            {
                "position": k,
                "step": k + 1,
                "expected": {"tool": name, "args": loads(args)},
                "actual": {"tool": again[k][0], "args": {"n": again[k][1]}},
                "attempt": 2,
            }
        ]
    else:
        assert diverged == []

    # the journal now follows the second attempt's course: a third attempt replays all of it
    third = Attempt(journal, 3)
    assert third.play(again) == results
    assert third.called == []
    assert third.committed == []


@settings(max_examples=100, deadline=None)
@given(script=st.lists(calls, max_size=6), fails=st.sets(st.integers(0, 5)))
def test_every_real_call_is_a_committed_pair_with_a_journal_entry(
    script: list[Call], fails: set[int]
) -> None:
    journal = Journal()
    attempt = Attempt(journal, 4)
    results = attempt.play(script, fails)
    executing = attempt.events("tool_executing")
    completed = attempt.events("tool_completed")
    ids = [f"{RUN}.4.{n}" for n in range(1, len(script) + 1)]
    assert [e["call_id"] for e in executing] == [c["call_id"] for c in completed] == ids
    assert [(e["tool"], e["args"]) for e in executing] == [(t, {"n": n}) for t, n in script]
    for k, (done, result) in enumerate(zip(completed, results, strict=True)):
        assert done["attempts"] == 1
        entry = journal.items[k]
        if k in fails:
            assert done["error"] == result["error"] == f"ValueError: call {k} fails"
            assert entry.outcome is Outcome.ERROR
            assert entry.value == done["error"]
        else:
            assert done["result"] == result
            assert entry.outcome is Outcome.OK
            assert loads(entry.value) == result


def test_the_key_is_the_steps_and_an_unjournaled_call_uses_its_call_id() -> None:
    attempt = Attempt(Journal(), 1)
    journaled = attempt.tools.begin(attempt.staging, "pay", {"n": 1}, True)
    assert journaled.key == step_key(RUN, 1, "pay", '{"n":1}')
    inner = attempt.tools.begin(attempt.staging, "pay", {"n": 1}, True)  # while one is in flight
    assert (inner.step.step, inner.key, inner.call_id) == (None, "r1.1.2", "r1.1.2")
    inner.executing()  # not journaled: its start says so, and no journal item comes of it
    [(event, data)] = [(e.event, loads(e.data_json)) for e in attempt.staging.events]
    assert (event, data["replay"]) == ("tool_executing", False)
    attempt.commit()
    assert len(attempt.journal) == 0
    inner.end()
    journaled.end()
    live = attempt.tools.begin(attempt.staging, "pay", {"n": 1}, False)
    assert (live.step.step, live.key) == (None, "r1.1.3")
    live.end()
    assert attempt.tools.cursor.in_flight == 0


def test_a_replayed_call_and_the_events_before_it_commit_nothing() -> None:
    journal = Journal()
    first = Attempt(journal, 1)
    first.staging.emit("note", {"x": 1})
    first.play([("a", 1)])
    second = Attempt(journal, 2)
    second.staging.emit("note", {"x": 1})  # the journal has it: not staged again
    assert second.play([("a", 1)]) == [{"call": ["a", 1], "attempt": 1}]
    assert second.committed == []
    third = Attempt(journal, 3)
    third.staging.emit("note", {"x": 2})  # another event: a divergence, then all live
    assert third.play([("a", 1)]) == [{"call": ["a", 1], "attempt": 3}]
    assert [event for event, _ in third.committed] == [
        "replay_diverged",
        "note",
        "tool_executing",
        "tool_completed",
    ]


@pytest.mark.parametrize(
    ("error", "text", "attempts"),
    [
        (ValueError("no"), "ValueError: no", 1),
        (DependencyFailedError("t", 3, KeyError("k")), "KeyError: 'k'", 3),
        (CircuitOpenError("t", 2.0, failures=5, attempts=2), None, 2),
    ],
)
def test_a_failure_records_its_error_and_attempts(
    error: Exception, text: str | None, attempts: int
) -> None:
    attempt = Attempt(Journal(), 1)
    call = attempt.tools.begin(attempt.staging, "t", {"n": 0}, True)
    call.executing()
    attempt.commit()
    raised = call.failed(error)
    attempt.commit()
    call.end()
    [done] = attempt.events("tool_completed")
    assert done["attempts"] == attempts
    assert done["error"] == raised.error == (text if text is not None else str(error))
    [entry] = attempt.journal.items
    assert (entry.outcome, entry.value) == (Outcome.ERROR, done["error"])


def test_arguments_and_events_are_checked_before_anything_is_staged() -> None:
    attempt = Attempt(Journal(), 1)
    with pytest.raises(TypeError, match="replay= is a keyword"):
        attempt.tools.begin(attempt.staging, "t", {}, "yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not JSON-encodable"):
        attempt.tools.begin(attempt.staging, "t", {"x": object()}, True)
    assert attempt.tools.cursor.steps == 0
    small = Attempt(Journal(), 1)
    small.staging.max_bytes = 40
    call = small.tools.begin(small.staging, "t", {"n": 0}, True)
    with pytest.raises(ValueError, match="max_event_bytes"):
        call.executing()
    call.end()
    with pytest.raises(ReservedEventError):
        small.staging.emit("agent_completed", None)
    assert not small.staging
