"""Restarts that do not repeat work (issue 13): journaled tool calls, replayed to later attempts.

Through the real store on a SQLite file, with async and threaded agents. The tools count their
own calls (``replay_agents.CALLS``, owned by the test); the user's stream is read back from the
database with an independent ``sqlite3`` connection.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import pytest
from helpers import make_config, stored_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replay_agents import CALLS, REPLAY_AGENTS, Call, test_metadata

import netra_actors as na
from netra_actors._core._journal import step_key
from netra_actors._values import dumps
from netra_actors.testing import guest_test

KINDS = pytest.mark.parametrize("kind", ["async", "threaded"])
USER = "u"
_tokens = itertools.count()


def token() -> str:
    return f"t{next(_tokens)}"


def open_rt(config: na.RuntimeConfig, kind: str) -> Any:
    return na.open_runtime(config, agents=REPLAY_AGENTS[kind], metadata=[test_metadata])


async def play(config: na.RuntimeConfig, kind: str, script: dict[str, Any]) -> tuple[Any, str]:
    """Run the script to its end; the run's info and its id."""
    async with open_rt(config, kind) as rt:
        run_id = await rt.start_run(USER, "replay_script", script)
        info = await rt.wait_run(USER, run_id)
    return info, run_id


def events_of(config: na.RuntimeConfig, run_id: str, name: str) -> list[dict[str, Any]]:
    return [d for _s, r, e, d in stored_events(config, USER) if r == run_id and e == name]


def calls(tok: str, index: int | None = None) -> list[Call]:
    return [c for c in CALLS.get(tok, []) if index is None or c.position == index]


def pairs_of(config: na.RuntimeConfig, run_id: str, index: int) -> tuple[int, int]:
    """How many ``tool_executing`` and ``tool_completed`` the stream has for step ``index``."""
    executing = [d for d in events_of(config, run_id, "tool_executing") if d["args"]["i"] == index]
    ids = {d["call_id"] for d in executing}
    completed = [d for d in events_of(config, run_id, "tool_completed") if d["call_id"] in ids]
    return len(executing), len(completed)


def expected(index: int, arg: Any, attempt: int) -> dict[str, Any]:
    return {"i": index, "arg": arg, "pair": [index, attempt]}  # the tuple comes back a list


@KINDS
@guest_test()
async def test_a_crash_after_a_tool_does_not_call_it_again(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    tok = token()
    steps = [
        {"tool": "search", "arg": "a"},
        {"tool": "book", "arg": {"n": 1, "z": [1, 2]}, "after": [1]},
        {"tool": "search", "arg": "c"},
    ]
    info, run_id = await play(config, kind, {"token": tok, "steps": steps})
    assert info.state is na.RunState.COMPLETED
    assert info.attempt == 2
    # attempt 2 got what attempt 1 committed, without calling the tools again
    assert info.result["results"] == [
        expected(0, "a", 1),
        expected(1, {"n": 1, "z": [1, 2]}, 1),
        expected(2, "c", 2),
    ]
    assert [(c.position, c.attempt) for c in calls(tok)] == [(0, 1), (1, 1), (2, 2)]
    for index in range(3):
        assert pairs_of(config, run_id, index) == (1, 1)  # one pair per step in the stream
    completed = events_of(config, run_id, "tool_completed")
    assert completed[1]["result"] == expected(1, {"n": 1, "z": [1, 2]}, 1)
    assert events_of(config, run_id, "tool_replay_diverged") == []


@KINDS
@guest_test()
async def test_a_fresh_result_is_what_a_replay_returns(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    tok = token()
    steps = [{"tool": "t", "arg": [1, "x"]}]
    info, _ = await play(config, kind, {"token": tok, "steps": steps})
    assert info.attempt == 1
    assert info.result["results"] == [expected(0, [1, "x"], 1)]  # a list, as a replay gives


@KINDS
@guest_test()
async def test_a_crash_inside_a_tool_runs_it_again_with_the_same_key(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    tok = token()
    steps = [{"tool": "a", "arg": 1}, {"tool": "charge", "arg": 2, "inside": [1]}]
    info, run_id = await play(config, kind, {"token": tok, "steps": steps})
    assert info.state is na.RunState.COMPLETED
    assert info.attempt == 2
    assert [(c.position, c.attempt) for c in calls(tok)] == [(0, 1), (1, 1), (1, 2)]
    first, second = calls(tok, 1)
    assert first.key == second.key == step_key(run_id, 2, "charge", dumps({"arg": 2, "i": 1}))
    assert first.passed_key == first.key
    assert second.passed_key == second.key
    assert pairs_of(config, run_id, 0) == (1, 1)
    # begun once (its start was committed: the next attempt keeps its call_id), completed once
    assert pairs_of(config, run_id, 1) == (1, 1)
    rollbacks = events_of(config, run_id, "run_rolled_back")
    assert [r["reason"] for r in rollbacks] == ["store_error"]


@KINDS
@guest_test()
async def test_a_divergent_attempt_is_recorded_and_runs_the_rest_for_real(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    tok = token()
    steps = [
        {"tool": "a", "arg": 0},
        {"tool": "b", "arg": 1},
        {"tool": "c", "arg": 2, "after": [1]},
    ]
    script = {"token": tok, "steps": steps, "diverge": {"attempt": 2, "index": 1}}
    info, run_id = await play(config, kind, script)
    assert info.state is na.RunState.COMPLETED
    assert info.attempt == 2
    assert [(c.position, c.attempt) for c in calls(tok)] == [(0, 1), (1, 1), (2, 1), (1, 2), (2, 2)]
    (diverged,) = events_of(config, run_id, "tool_replay_diverged")
    assert isinstance(diverged.pop("position"), int)  # where the journal is cut
    assert diverged == {
        "step": 2,
        "expected": {"tool": "b", "args": {"arg": 1, "i": 1}},
        "actual": {"tool": "b", "args": {"arg": {"changed": 1}, "i": 1}},
        "attempt": 2,
    }
    keys = [c.key for c in calls(tok, 1)]
    assert keys[0] != keys[1]  # the divergent call at the same step has another key
    assert info.result["results"][2] == expected(2, 2, 2)  # step 3 ran again, though the same


@KINDS
@guest_test()
async def test_a_divergence_drops_the_rest_of_the_journal_for_later_attempts(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    tok = token()
    steps = [{"tool": "a", "arg": 0, "after": [2]}, {"tool": "b", "arg": 1, "after": [1]}]
    script = {"token": tok, "steps": steps, "diverge": {"attempt": 2, "index": 0, "onward": True}}
    info, _ = await play(config, kind, script)
    assert info.attempt == 3
    # attempt 2 diverged at step 1 and crashed after it; attempt 3 replays attempt 2's step 1,
    # but not attempt 1's step 2: it belonged to the course that attempt 2 left
    assert [(c.position, c.attempt) for c in calls(tok)] == [(0, 1), (1, 1), (0, 2), (1, 3)]
    assert info.result["results"] == [expected(0, {"changed": 0}, 2), expected(1, 1, 3)]


@KINDS
@guest_test()
async def test_a_step_that_failed_runs_again(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    tok = token()
    steps = [
        {"tool": "a", "arg": 0},
        {"tool": "flaky", "arg": 1, "fail": [1]},
        {"tool": "c", "arg": 2, "after": [1]},
    ]
    info, run_id = await play(config, kind, {"token": tok, "steps": steps})
    assert info.attempt == 2
    assert [(c.position, c.attempt) for c in calls(tok)] == [(0, 1), (1, 1), (2, 1), (1, 2)]
    assert info.result["results"] == [expected(0, 0, 1), expected(1, 1, 2), expected(2, 2, 1)]
    assert pairs_of(config, run_id, 1) == (2, 2)
    first, second = (d for d in events_of(config, run_id, "tool_completed") if d["tool"] == "flaky")
    assert first["error"].startswith("ValueError: step 1 fails")
    assert "result" not in first
    assert second["result"] == expected(1, 1, 2)
    assert len({c.key for c in calls(tok, 1)}) == 1  # a rerun of the same step: the same key


@KINDS
@guest_test()
async def test_replay_false_always_runs_and_keeps_the_steps_around_it(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    tok = token()
    steps = [
        {"tool": "a", "arg": 0},
        {"tool": "clock", "arg": 1, "replay": False},
        {"tool": "c", "arg": 2, "after": [1]},
    ]
    info, run_id = await play(config, kind, {"token": tok, "steps": steps})
    assert info.attempt == 2
    assert [(c.position, c.attempt) for c in calls(tok)] == [(0, 1), (1, 1), (2, 1), (1, 2)]
    assert info.result["results"][1] == expected(1, 1, 2)
    clock = calls(tok, 1)
    assert [c.key for c in clock] == [f"{run_id}.1.2", f"{run_id}.2.1"]  # its call_id
    assert pairs_of(config, run_id, 1) == (2, 2)  # still recorded, every time
    assert calls(tok, 2)[0].key == step_key(run_id, 2, "c", dumps({"arg": 2, "i": 2}))


@KINDS
@guest_test()
async def test_the_key_outside_and_inside_tools(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        run_id = await rt.start_run(USER, "key_probe", None)
        info = await rt.wait_run(USER, run_id)
    assert info.state is na.RunState.COMPLETED, info
    result = info.result
    assert "only available while a tool's function runs" in result["outside"]
    assert result["key"] == step_key(run_id, 1, "probe", "{}")
    assert result["live"] == f"{run_id}.1.2"
    assert "replay= is a keyword of ctx.tool" in result["reserved"]


# -- the property ------------------------------------------------------------------------------

STEP = st.fixed_dictionaries(
    {
        "tool": st.sampled_from(["a", "b"]),
        "arg": st.integers(0, 1),
        "replay": st.booleans() | st.just(True),
        "fail": st.sampled_from([[], [], [1], [1, 2]]),
    }
)


@st.composite
def scripts(draw: st.DrawFn) -> dict[str, Any]:
    steps: list[dict[str, Any]] = draw(st.lists(STEP, min_size=1, max_size=6))
    for attempt in range(1, draw(st.integers(1, 3)) + 1):  # attempts that crash
        index = draw(st.integers(0, len(steps) - 1))
        where = draw(st.sampled_from(["after", "inside"]))
        steps[index].setdefault(where, []).append(attempt)
    diverge = draw(st.none() | st.tuples(st.integers(2, 4), st.integers(0, len(steps) - 1)))
    return {
        "steps": steps,
        "diverge": None if diverge is None else {"attempt": diverge[0], "index": diverge[1]},
    }


def check_script(kind: str, script: dict[str, Any]) -> None:
    tok = token()
    steps = script["steps"]
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        played = na.run(play, config, kind, {**script, "token": tok}, handle_signals=False)
    assert played is not None
    info = played[0]
    assert info.state is na.RunState.COMPLETED, info
    last = info.attempt
    # the steps the property does not cover: not journaled, or after a divergence
    diverge = script["diverge"]
    uncovered = {i for i, s in enumerate(steps) if not s["replay"]}
    if diverge is not None and diverge["attempt"] <= last:
        uncovered |= set(range(diverge["index"], len(steps)))
    for index, step in enumerate(steps):
        if index in uncovered:
            continue
        made = calls(tok, index)
        assert made, index  # every attempt that reached it: the last one did
        succeeding = set(range(1, last + 1)) - set(step["fail"]) - set(step.get("inside", ()))
        first_ok = next((c.attempt for c in made if c.attempt in succeeding), None)
        if first_ok is not None:  # once it succeeded, it never ran again
            assert [c.attempt for c in made if c.attempt >= first_ok] == [first_ok], made
        assert len({c.key for c in made}) == 1  # one key, whatever the attempt


@KINDS
@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(script=scripts())
def test_every_step_that_succeeded_runs_once_per_run(kind: str, script: dict[str, Any]) -> None:
    check_script(kind, script)
