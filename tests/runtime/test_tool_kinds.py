"""Async and threaded agents drive the same tool-call protocol: for the same script, through the
real runtime and store, they commit the same events, in the same order, with the same data.

The script has a call that succeeds on its second try (a retry), one that fails every try of
its first attempt (an error recorded with its attempt count), a crash after a call (a restart
that replays what was committed), a changed call in the second attempt (a divergence) and a
replay of the diverged course in the third.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import make_config, stored_events

import netra_actors as na
from netra_actors.testing import guest_test

USER = "u"
RESTART = na.policies.RestartPolicy(
    max_restarts=5, window=60, backoff_initial=0.001, backoff_max=0.005
)
FAST = {"backoff_initial": 0.001, "jitter": 0.0}
DEPENDENCIES = [
    na.policies.Dependency("flaky", retry=na.policies.RetryPolicy(attempts=3, **FAST)),
    na.policies.Dependency("hard", retry=na.policies.RetryPolicy(attempts=2, **FAST)),
]
SCRIPT: list[dict[str, Any]] = [
    {"tool": "flaky", "arg": "a", "flaky": 1},  # fails once per attempt, then succeeds
    {"tool": "hard", "arg": "b", "fail": [1], "diverge": [2, 3]},
    {"tool": "plain", "arg": "c", "after": [1, 2]},  # the attempt crashes after it
    {"tool": "plain", "arg": "d"},
]

CALLS: dict[str, list[tuple[int, int, int]]] = {"async": [], "threaded": []}
"""(step, attempt, try) of every real call, by kind."""


class Crash(Exception):
    pass


def _arg(step: dict[str, Any], attempt: int) -> Any:
    return {"changed": step["arg"]} if attempt in step.get("diverge", ()) else step["arg"]


def _tool(kind: str, index: int, attempt: int, step: dict[str, Any]) -> Any:
    tries = 0

    def fn(arg: Any) -> Any:
        nonlocal tries
        tries += 1
        CALLS[kind].append((index, attempt, tries))
        if attempt in step.get("fail", ()) or tries <= step.get("flaky", 0):
            raise ValueError(f"step {index} try {tries} fails")
        return {"arg": arg, "attempt": attempt, "tries": tries}

    return fn


class AsyncScript(na.Agent):
    name = "script"
    restart_policy = RESTART

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        results: list[Any] = []
        for index, step in enumerate(SCRIPT):
            await ctx.think(f"step {index}")
            fn = _tool("async", index, ctx.attempt, step)
            try:
                results.append(await ctx.tool(step["tool"], fn, arg=_arg(step, ctx.attempt)))
            except na.ToolError as exc:
                results.append({"error": exc.error})
            if ctx.attempt in step.get("after", ()):
                raise Crash(f"after step {index}")
        return results


class ThreadedScript(na.ThreadedAgent):
    name = "script"
    restart_policy = RESTART

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        results: list[Any] = []
        for index, step in enumerate(SCRIPT):
            ctx.think(f"step {index}")
            fn = _tool("threaded", index, ctx.attempt, step)
            try:
                results.append(ctx.tool(step["tool"], fn, arg=_arg(step, ctx.attempt)))
            except na.ToolError as exc:
                results.append({"error": exc.error})
            if ctx.attempt in step.get("after", ()):
                raise Crash(f"after step {index}")
        return results


async def play(tmp_path: Path, kind: str) -> tuple[na.RunInfo, list[tuple[str, Any]]]:
    config = make_config(tmp_path / kind, dependencies=DEPENDENCIES)
    (tmp_path / kind).mkdir()
    agent = AsyncScript if kind == "async" else ThreadedScript
    async with na.open_runtime(config, agents=[agent]) as rt:
        run_id = await rt.start_run(USER, "script", None)
        info = await rt.wait_run(USER, run_id)
    events = [
        (event, json.loads(json.dumps(data).replace(run_id, "RUN")))
        for _seq, _run, event, data in stored_events(config, USER)
    ]
    return info, events


@guest_test()
async def test_both_kinds_commit_the_same_events_for_the_same_tool_script(
    tmp_path: Path,
) -> None:
    (a_info, a_events), (t_info, t_events) = [await play(tmp_path, k) for k in CALLS]
    assert a_info.state is t_info.state is na.RunState.COMPLETED
    assert a_info.attempt == t_info.attempt == 3
    assert a_info.result == t_info.result
    assert a_events == t_events
    assert CALLS["async"] == CALLS["threaded"] == [
        (0, 1, 1), (0, 1, 2), (1, 1, 1), (1, 1, 2), (2, 1, 1),  # attempt 1, then a crash
        (1, 2, 1), (2, 2, 1),  # step 0 replayed; step 1 diverged; a crash again
        (3, 3, 1),  # steps 0-2 replayed
    ]  # fmt: skip

    # what the protocol committed, seen once (the other kind committed the same)
    tools = [(e, d) for e, d in a_events if e.startswith("tool_")]
    assert [(e, d.get("tool"), d.get("attempts")) for e, d in tools] == [
        ("tool_executing", "flaky", None),
        ("tool_completed", "flaky", 2),  # a retry
        ("tool_executing", "hard", None),
        ("tool_completed", "hard", 2),  # an error after two tries
        ("tool_executing", "plain", None),
        ("tool_completed", "plain", 1),
        ("tool_replay_diverged", None, None),
        ("tool_executing", "hard", None),
        ("tool_completed", "hard", 1),
        ("tool_executing", "plain", None),
        ("tool_completed", "plain", 1),
        ("tool_executing", "plain", None),
        ("tool_completed", "plain", 1),
    ]
    assert tools[3][1]["error"] == "ValueError: step 1 try 2 fails"
    assert isinstance(tools[6][1].pop("position"), int)
    assert tools[6][1] == {
        "step": 2,
        "expected": {"tool": "hard", "args": {"arg": "b"}},
        "actual": {"tool": "hard", "args": {"arg": {"changed": "b"}}},
        "attempt": 2,
    }
    assert [d["call_id"] for e, d in tools if e == "tool_executing"] == [
        "RUN.1.1", "RUN.1.2", "RUN.1.3", "RUN.2.1", "RUN.2.2", "RUN.3.1",
    ]  # fmt: skip
    thinking = [d["text"] for e, d in a_events if e == "agent_thinking"]
    # a thought an earlier attempt committed is not committed again; attempt 2 diverged at
    # step 1's tool and went on live (its step 2 again); attempt 3 replayed all of it
    assert thinking == [f"step {i}" for i in (0, 1, 2, 2, 3)]
    assert a_info.result == [
        {"arg": "a", "attempt": 1, "tries": 2},
        {"arg": {"changed": "b"}, "attempt": 2, "tries": 1},
        {"arg": "c", "attempt": 2, "tries": 1},
        {"arg": "d", "attempt": 3, "tries": 1},
    ]
