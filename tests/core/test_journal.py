"""The pure journal (``_core/_journal.py``): step keys, the cursor's decisions, the journal's
operations.

A new attempt replays what the journal has, in order: an event that matches the next item is
not committed again, a step that succeeded returns its result, one begun or failed runs again,
a question the journal has is not asked again, a sleep keeps its wake-up time. Anything else is
a divergence, recorded once, after which the attempt runs live; recording it cuts the journal
there. A property test plays whole runs (attempts that act, crash and change course) against the
cursor and the journal alone, and checks them against a plain model of "what was committed".
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from netra_actors._core._journal import (
    Item,
    Journal,
    JournalCursor,
    Kind,
    Outcome,
    step_item_key,
    step_key,
)

RUN = "r_01TEST"
A = '{"x":1}'
B = '{"x":2}'


def ev(key: str) -> Item:
    return Item(Kind.EVENT, key)


def ok(name: str = "t", args: str = A, value: str = "1", call_id: str = "c") -> Item:
    return Item(Kind.STEP, step_item_key(name, args), Outcome.OK, value, call_id)


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


def test_an_empty_journal_replays_nothing() -> None:
    cursor = JournalCursor(RUN)
    assert cursor.stopped
    assert not cursor.event("e")
    assert cursor.divergence is None  # past the end is no divergence
    step = cursor.step("t", A)
    assert (step.step, step.key, step.replayed) == (1, step_key(RUN, 1, "t", A), False)
    cursor.end()
    assert cursor.in_flight == 0


def test_matching_actions_replay_in_order() -> None:
    items = (
        ev("think\x00a"),
        ok(value='{"r":[1,2]}'),
        Item(Kind.ASK, "q"),
        Item(Kind.SLEEP, "5.0", value="123.5"),
        ev("message\x00hi"),
    )
    cursor = JournalCursor(RUN, items)
    assert cursor.event("think\x00a")
    step = cursor.step("t", A)
    assert (step.step, step.replay_json) == (1, '{"r":[1,2]}')
    assert cursor.in_flight == 0  # a replayed call is not in flight
    assert cursor.ask("q")
    assert cursor.sleep("5.0") == "123.5"
    assert cursor.next_is_event()
    assert cursor.event("message\x00hi")
    assert cursor.stopped is True  # past the end: live from here
    assert cursor.position == 5
    assert cursor.divergence is None


def test_a_begun_or_failed_step_runs_again_under_the_same_key() -> None:
    for outcome in (Outcome.STARTED, Outcome.ERROR):
        begun = Item(Kind.STEP, step_item_key("t", A), outcome, "", "r.1.1")
        cursor = JournalCursor(RUN, (begun, ok("u", B)))
        step = cursor.step("t", A)
        assert (step.replayed, step.again, step.key) == (False, begun, step_key(RUN, 1, "t", A))
        cursor.end()
        assert cursor.step("u", B).replayed  # and the journal goes on after it


def test_a_different_action_diverges_once_and_stops_the_journal() -> None:
    cursor = JournalCursor(RUN, (ev("e\x001"), ok(), ev("e\x002")))
    assert cursor.event("e\x001")
    step = cursor.step("t", B)  # other arguments
    assert not step.replayed
    assert step.again is None
    divergence = cursor.take_divergence()
    assert divergence is not None
    assert (divergence.position, divergence.step, divergence.expected) == (1, 1, ok())
    assert (divergence.actual_kind, divergence.actual_key) == (Kind.STEP, step_item_key("t", B))
    assert cursor.take_divergence() is None  # recorded once
    cursor.end()
    assert cursor.stopped
    assert not cursor.event("e\x002")  # live from here, though it would have matched
    assert cursor.divergence is None


def test_a_question_answered_without_asking_is_no_divergence() -> None:
    cursor = JournalCursor(RUN, (ev("e"),))
    assert not cursor.ask("q")  # answered by an input the run had: nothing was committed
    assert cursor.divergence is None
    assert cursor.ask_at() == 0  # if it must be asked after all, the journal is cut here
    assert cursor.event("e")
    assert cursor.ask_at() is None


def test_unjournaled_and_concurrent_calls_take_no_step() -> None:
    cursor = JournalCursor(RUN, (ok(),))
    assert cursor.step("clock", "{}", replay=False).step is None
    cursor.end()
    first = cursor.step("t", A)
    assert first.replayed
    live = cursor.step("x", "{}")
    inner = cursor.step("y", "{}")  # while ``live`` is in flight
    assert (live.step, inner.step, inner.key) == (2, None, None)
    assert cursor.in_flight == 2


# -- the journal ------------------------------------------------------------------------------


def test_tool_calls_are_begun_completed_and_replaced_in_place() -> None:
    journal = Journal()
    key = step_item_key("t", A)
    journal.append(ev("e"))
    journal.tool_started(key, "r.1.1")
    journal.append(ev("after"))
    journal.tool_ended("r.1.1", Outcome.ERROR, "ValueError: no")
    assert journal.items[1] == Item(Kind.STEP, key, Outcome.ERROR, "ValueError: no", "r.1.1")
    journal.tool_started(key, "r.2.1", replaces="r.1.1")  # run again: in its place
    journal.tool_ended("r.2.1", Outcome.OK, "5")
    assert journal.items == [ev("e"), Item(Kind.STEP, key, Outcome.OK, "5", "r.2.1"), ev("after")]
    journal.tool_ended("unknown", Outcome.OK, "1")  # not journaled: nothing to update
    assert len(journal) == 3


def test_a_cut_drops_what_came_after_and_a_snapshot_does_not_change() -> None:
    journal = Journal([ev("a"), ev("b"), ev("c")])
    snapshot = journal.snapshot()
    journal.cut(1)
    assert journal.items == [ev("a")]
    journal.cut(5)  # past the end: nothing
    assert snapshot == (ev("a"), ev("b"), ev("c"))


# -- the property: whole runs --------------------------------------------------------------

ACTIONS = st.lists(st.sampled_from(["e1", "e2", "t1", "t2", "q"]), max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    courses=st.lists(st.tuples(ACTIONS, st.integers(0, 8)), min_size=1, max_size=4),
)
def test_attempts_commit_each_action_of_the_run_once(
    courses: list[tuple[list[str], int]],
) -> None:
    """Each attempt runs a course of actions and crashes after ``stop`` of them. What it
    commits is folded into the journal as the shell does. Whatever the courses, the journal is
    always what the last course committed up to where it got (earlier courses' actions where
    they agreed with it); an attempt commits only actions past the point where it agreed with
    the journal, and records a divergence only where it disagreed."""
    journal = Journal()
    committed: list[str] = []  # the model: the run's course as the store has it
    for actions, stop in courses:
        cursor = JournalCursor(RUN, journal.snapshot())
        done = actions[:stop]
        agreed = 0
        while agreed < min(len(done), len(committed)) and done[agreed] == committed[agreed]:
            agreed += 1
        for i, action in enumerate(done):
            if action.startswith("t"):
                step = cursor.step(action, "{}")
                replayed = step.replayed
                if not replayed:
                    cursor.end()
            else:
                replayed = cursor.event(action)
            assert replayed == (i < agreed), (i, agreed)
            divergence = cursor.take_divergence()
            if i == agreed and agreed < len(committed):
                assert divergence is not None
                assert divergence.position == agreed
                journal.cut(divergence.position)
            else:
                assert divergence is None
            if not replayed:
                if action.startswith("t"):
                    journal.tool_started(step_item_key(action, "{}"), f"{len(journal)}")
                    journal.tool_ended(f"{len(journal) - 1}", Outcome.OK, "1")
                else:
                    journal.append(ev(action))
        if len(done) > agreed:  # it went past the journal (or off it): its course now
            committed = done
        assert [item.key.partition("\x00")[0] for item in journal.items] == committed
