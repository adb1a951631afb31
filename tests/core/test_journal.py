"""The pure journal (``_core/_journal.py``): step keys, the cursor's decisions, recording.

A restarted attempt replays step k only if step k succeeded with the same call; a started or
failed step runs again; a different call is a divergence that stops the journal for the attempt
and, once recorded, drops what came after it. A property test plays whole runs (attempts that
call, fail, crash) against the cursor and the journal alone.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netra_actors._core._journal import (
    Journal,
    JournalCursor,
    JournalEntry,
    Outcome,
    Step,
    step_key,
)

RUN = "r_01TEST"
A = '{"x":1}'
B = '{"x":2}'


def ok(step: int, name: str = "t", args: str = A, value: str = "1") -> JournalEntry:
    return JournalEntry(step, name, args, Outcome.OK, value)


def started(step: int, name: str = "t", args: str = A) -> JournalEntry:
    return JournalEntry(step, name, args, Outcome.STARTED)


def failed(step: int, name: str = "t", args: str = A) -> JournalEntry:
    return JournalEntry(step, name, args, Outcome.ERROR, "ValueError: no")


# -- keys -----------------------------------------------------------------------------------


def test_step_key_names_the_run_the_step_and_the_call() -> None:
    key = step_key(RUN, 3, "search", A)
    digest = hashlib.sha256(f"search\x00{A}".encode()).hexdigest()[:16]
    assert key == f"{RUN}:3:{digest}"
    assert step_key(RUN, 3, "search", A) == key  # stable
    assert step_key(RUN, 4, "search", A) != key
    assert step_key(RUN, 3, "search", B) != key  # a divergent call at the same step
    assert step_key(RUN, 3, "other", A) != key
    assert step_key("r_other", 3, "search", A) != key
    # the name and the arguments cannot run into each other
    assert step_key(RUN, 1, "a", '{"b":1}') != step_key(RUN, 1, 'a{"b":1', "}")


# -- the cursor -------------------------------------------------------------------------------


def test_an_empty_journal_journals_every_call_fresh() -> None:
    cursor = JournalCursor(RUN)
    assert cursor.stopped
    for k in (1, 2, 3):
        step = cursor.begin("t", A)
        assert step == Step(k, step_key(RUN, k, "t", A))
        assert not step.replayed
        assert step.diverged_from is None
        cursor.end()
    assert cursor.next_step == 4
    assert cursor.in_flight == 0


def test_a_succeeded_step_with_the_same_call_is_replayed() -> None:
    cursor = JournalCursor(RUN, (ok(1, value='{"r":[1,2]}'), ok(2, "u", B, "null")))
    first = cursor.begin("t", A)
    assert first.replayed
    assert first.replay_json == '{"r":[1,2]}'
    assert first.step == 1
    assert first.key == step_key(RUN, 1, "t", A)
    assert cursor.in_flight == 0  # a replayed call is not in flight: no end()
    second = cursor.begin("u", B)
    assert second.replay_json == "null"  # a null result is still a replay
    assert cursor.stopped  # the snapshot is used up
    third = cursor.begin("t", A)
    assert third == Step(3, step_key(RUN, 3, "t", A))
    assert cursor.in_flight == 1


@pytest.mark.parametrize("entry", [started(1), failed(1)], ids=["started", "error"])
def test_a_started_or_failed_step_runs_again_under_the_same_key(entry: JournalEntry) -> None:
    cursor = JournalCursor(RUN, (entry, ok(2)))
    step = cursor.begin("t", A)
    assert not step.replayed
    assert step.diverged_from is None
    assert step.key == step_key(RUN, 1, "t", A)  # what the crashed attempt's call had
    cursor.end()
    assert not cursor.stopped
    assert cursor.begin("t", A).replayed  # later steps are still replayed


@pytest.mark.parametrize(("name", "args"), [("other", A), ("t", B)], ids=["name", "args"])
def test_a_different_call_diverges_and_stops_the_journal(name: str, args: str) -> None:
    cursor = JournalCursor(RUN, (ok(1), ok(2), ok(3)))
    assert cursor.begin("t", A).replayed
    step = cursor.begin(name, args)
    assert step.step == 2
    assert not step.replayed
    assert step.diverged_from == ok(2)
    assert step.key == step_key(RUN, 2, name, args)
    cursor.end()
    assert cursor.stopped
    later = cursor.begin("t", A)  # the journal's step 3 is the same call, but not replayed
    assert later == Step(3, step_key(RUN, 3, "t", A))  # and it is no second divergence


def test_replay_false_takes_no_step_and_is_never_replayed() -> None:
    cursor = JournalCursor(RUN, (ok(1), ok(2, "u")))
    live = cursor.begin("t", A, replay=False)
    assert live == Step(None, None)
    assert cursor.in_flight == 1
    cursor.end()
    assert cursor.next_step == 1  # the steps around it keep their positions
    assert cursor.begin("t", A).replayed
    assert cursor.begin("t", A, replay=False).step is None
    cursor.end()
    assert cursor.begin("u", A).replayed


def test_a_call_while_another_is_in_flight_is_not_journaled() -> None:
    cursor = JournalCursor(RUN, (ok(1), ok(2)))
    outer = cursor.begin("t", B)  # diverges at 1: a real call, in flight
    assert outer.step == 1
    inner = cursor.begin("t", A)
    assert inner == Step(None, None)
    assert cursor.in_flight == 2
    cursor.end()
    cursor.end()
    assert cursor.begin("t", A).step == 2


def test_step_entries() -> None:
    step = Step(2, "k")
    assert step.entry("t", A, Outcome.OK, "5") == JournalEntry(2, "t", A, Outcome.OK, "5")
    with pytest.raises(AssertionError):
        Step(None, None).entry("t", A, Outcome.OK)
    assert ok(1).same_call("t", A)
    assert not ok(1).same_call("t", B)


# -- the run's journal ------------------------------------------------------------------------


def test_record_appends_and_replaces() -> None:
    journal = Journal()
    assert journal.record(started(1))
    assert journal.record(ok(1))  # the same call completes: replaced
    assert journal.record(started(2, "u"))
    assert journal.snapshot() == (ok(1), started(2, "u"))
    assert len(journal) == 2
    assert journal[2] == started(2, "u")
    with pytest.raises(IndexError):
        journal[0]


def test_rerunning_a_step_keeps_the_later_ones() -> None:
    journal = Journal([failed(1), ok(2, "u"), ok(3, "v")])
    assert journal.record(started(1))
    assert journal.record(ok(1))
    assert journal.snapshot() == (ok(1), ok(2, "u"), ok(3, "v"))


def test_a_divergent_step_drops_the_later_ones() -> None:
    journal = Journal([ok(1), ok(2, "u"), ok(3, "v")])
    assert journal.record(started(2, "u", B))
    assert journal.snapshot() == (ok(1), started(2, "u", B))
    assert journal.record(ok(3, "w"))
    assert journal.snapshot() == (ok(1), started(2, "u", B), ok(3, "w"))


def test_an_entry_that_would_leave_a_gap_is_not_kept() -> None:
    journal = Journal([ok(1)])
    assert not journal.record(ok(3))
    assert not journal.record(ok(0))
    assert journal.snapshot() == (ok(1),)


def test_a_snapshot_does_not_change_with_the_journal() -> None:
    journal = Journal()
    journal.record(ok(1))
    snap = journal.snapshot()
    journal.record(ok(1, "other"))
    assert snap == (ok(1),)


# -- whole runs, against the pure parts alone -------------------------------------------------

# A script: calls (name index, arg, fails in the first attempt only, replay flag); the crash
# points: how many calls each attempt makes before it crashes (after the call, or inside it).
CALL = st.tuples(st.integers(0, 2), st.integers(0, 2), st.booleans(), st.booleans())


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    script=st.lists(CALL, min_size=1, max_size=8),
    crashes=st.lists(st.tuples(st.integers(0, 8), st.booleans()), max_size=4),
    diverge=st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(0, 8))),
)
def test_every_succeeded_step_runs_once_unless_after_a_divergence(
    script: list[tuple[int, int, bool, bool]],
    crashes: list[tuple[int, bool]],
    diverge: tuple[int, int] | None,
) -> None:
    journal = Journal()
    ran: dict[tuple[int, str, str], int] = {}  # (position in the script, name, args) -> calls
    keys: dict[int, set[str]] = {}
    diverged_positions: set[int] = set()
    attempts = [*crashes, (len(script), False)]  # the last attempt completes
    for attempt, (stop_at, inside) in enumerate(attempts, start=1):
        cursor = JournalCursor(RUN, journal.snapshot())
        seen_divergence = False
        for i, (n, arg, fails_first, replay) in enumerate(script):
            name, args = f"t{n}", f'{{"a":{arg}}}'
            if diverge is not None and attempt == diverge[0] and i == diverge[1]:
                args = '{"a":"changed"}'
            step = cursor.begin(name, args, replay=replay)
            if step.diverged_from is not None:
                seen_divergence = True
            if seen_divergence or not replay:
                diverged_positions.add(i)
            if step.replayed:
                assert replay
                assert step.replay_json == f"{i}"
                continue
            if step.step is not None:
                journal.record(step.entry(name, args, Outcome.STARTED))
            if i == stop_at and inside:  # the attempt crashes inside the call: it ran
                ran[(i, name, args)] = ran.get((i, name, args), 0) + 1
                if step.key is not None:
                    keys.setdefault(i, set()).add(step.key)
                cursor.end()
                break
            ran[(i, name, args)] = ran.get((i, name, args), 0) + 1
            if step.key is not None:
                keys.setdefault(i, set()).add(step.key)
            outcome = Outcome.ERROR if fails_first and attempt == 1 else Outcome.OK
            if step.step is not None:
                value = f"{i}" if outcome is Outcome.OK else "boom"
                journal.record(step.entry(name, args, outcome, value))
            cursor.end()
            if i == stop_at:  # the attempt crashes after the call
                break
        assert cursor.in_flight == 0
    for (i, _name, _args), count in ran.items():
        if i in diverged_positions:
            continue
        n, arg, fails_first, _replay = script[i]
        crashed_inside = any(stop == i and inside for stop, inside in attempts)
        if not fails_first and not crashed_inside:
            assert count == 1, (i, count)  # succeeded the first time: never again
    for i, seen in keys.items():  # one key per position and call, in every attempt
        if i not in diverged_positions:
            assert len(seen) == 1, (i, seen)
