"""``replay``: what a restarted attempt pays to replay its run's journal (issues 13 and 18).

An agent makes 100 tool calls of a no-op tool, one after the other, and times itself from the
start of ``run`` to after its last call (``time.perf_counter`` in the agent: the attempt's own
time, without the supervisor's start-up or restart backoff):

* ``first attempt, replay=False``: the baseline, the bookkeeping alone: each call commits
  ``tool_executing`` and ``tool_completed`` (two units through the group commit on a SQLite file)
  and takes no journal step;
* ``first attempt, journaled``: the same calls as journal steps (the same commits, plus the
  journal entries they carry); the attempt then crashes;
* ``restarted attempt, replayed``: the next attempt of that run makes the same 100 calls; every
  one is replayed from the journal (no call, no commit). The journal is the run's (durable
  runs, issue 18: ``Run.journal``, everything the run committed, fed to the new attempt as a
  snapshot whose cursor ``ctx.tool`` follows).

Issue 13's goal: the replaying attempt takes <= 1.2x the baseline. Issue 18's: replay costs
<= 5% of the first attempt's time (the journaled one). Both agent kinds are measured
(a threaded agent's replayed call does not leave its thread). Each figure is the median over the
runs of a repeat; the report gives the median of the repeats.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import netra_actors as na

from .harness.inprocess import run_trio, scratch_dir
from .harness.progress import Progress, measure_repeats
from .harness.report import Column, Goal, Options, Report, Row

TITLE = "a restarted attempt replaying a 100-step journal vs the first attempt's bookkeeping"
STEPS = 100
GOAL_RATIO = 1.2
GOAL_FIRST = 0.05
KINDS = ("async", "threaded")
BASELINE = "first attempt, replay=False"
JOURNALED = "first attempt, journaled"
REPLAYED = "restarted attempt, replayed"

_TIMES: dict[str, list[tuple[int, float]]] = {}
"""(attempt, seconds) of every timed attempt, by the run's key."""

_RESTART = na.policies.RestartPolicy(max_restarts=3, backoff_initial=0.001, backoff_max=0.001)


class Crash(Exception):
    """The journaled run's first attempt ends here."""


def _noop(i: int) -> None:
    return None


class ReplayBenchAgent(na.Agent):
    name = "bench_replay"
    restart_policy = _RESTART

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        replay: bool = input["replay"]
        t0 = time.perf_counter()
        for i in range(input["steps"]):
            await ctx.tool("noop", _noop, replay=replay, i=i)
        _TIMES.setdefault(input["key"], []).append((ctx.attempt, time.perf_counter() - t0))
        if input["crash"] and ctx.attempt == 1:
            raise Crash("the journaled attempt ends")
        return None


class ThreadedReplayBenchAgent(na.ThreadedAgent):
    name = "bench_replay"
    restart_policy = _RESTART

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        replay: bool = input["replay"]
        t0 = time.perf_counter()
        for i in range(input["steps"]):
            ctx.tool("noop", _noop, replay=replay, i=i)
        _TIMES.setdefault(input["key"], []).append((ctx.attempt, time.perf_counter() - t0))
        if input["crash"] and ctx.attempt == 1:
            raise Crash("the journaled attempt ends")
        return None


AGENTS: dict[str, type[na.types.AgentBase]] = {
    "async": ReplayBenchAgent,
    "threaded": ThreadedReplayBenchAgent,
}


async def _one_run(rt: Any, user: str, replay: bool, crash: bool) -> list[tuple[int, float]]:
    key = f"{user}-{time.monotonic_ns()}"
    run_id = await rt.start_run(
        user, "bench_replay", {"steps": STEPS, "replay": replay, "crash": crash, "key": key}
    )
    info = await rt.wait_run(user, run_id)
    if info.state is not na.RunState.COMPLETED:
        raise na.NetraError(f"the replay benchmark's run ended {info.state.value}")
    times = _TIMES.pop(key)
    if [a for a, _ in times] != ([1, 2] if crash else [1]):
        raise na.NetraError(f"unexpected attempts {times}")
    return times


async def _measure(kind: str, runs: int, db: str) -> list[Row]:
    config = na.RuntimeConfig(database_url=na.sqlite_url(db))
    baseline: list[float] = []
    journaled: list[float] = []
    replayed: list[float] = []
    async with na.open_runtime(config, agents=[AGENTS[kind]]) as rt:
        await _one_run(rt, "warm-up", False, True)  # the first run pays for imports, caches
        for n in range(runs):
            ((_, seconds),) = await _one_run(rt, f"base{n}", False, False)
            baseline.append(seconds)
            (_, first), (_, again) = await _one_run(rt, f"journal{n}", True, True)
            journaled.append(first)
            replayed.append(again)
    base = statistics.median(baseline)
    first = statistics.median(journaled)
    rows: list[Row] = []
    for case, samples in ((BASELINE, baseline), (JOURNALED, journaled), (REPLAYED, replayed)):
        seconds = statistics.median(samples)
        rows.append(
            {
                "case": f"{kind} | {case}",
                "kind": kind,
                "attempt": case,
                "steps": STEPS,
                "runs": len(samples),
                "ms": seconds * 1000,
                "us_per_step": seconds / STEPS * 1e6,
                "ratio": seconds / base if base > 0 else float("nan"),
                "of_first": seconds / first if first > 0 else float("nan"),
            }
        )
    return rows


def run_once(kind: str, runs: int, directory: str | None) -> list[Row]:
    """One repeat for one agent kind (a fresh runtime on a fresh SQLite file)."""
    with scratch_dir(directory) as tmp:
        return run_trio(_measure, kind, runs, os.path.join(tmp, "replay.db"))


COLUMNS = [
    Column(key="kind", title="agent"),
    Column(key="attempt", title="attempt"),
    Column(key="steps", title="tool calls"),
    Column(key="runs", title="runs"),
    Column(key="ms", title="attempt ms", fmt="{:,.2f}"),
    Column(key="us_per_step", title="us/call", fmt="{:,.1f}"),
    Column(key="ratio", title="x baseline", fmt="{:.3f}"),
    Column(key="of_first", title="x first attempt", fmt="{:.3f}"),
]


def run(options: Options, progress: Progress) -> Report:
    """The scenario."""
    runs = 3 if options.quick else 20
    per_repeat = measure_repeats(
        options,
        progress,
        KINDS,
        lambda kind: run_once(kind, runs, options.directory),
        label=lambda kind: f"{kind} agent",
    )
    repeats = [[row for rows in one for row in rows] for one in per_repeat]
    report = Report.of(TITLE, options, COLUMNS, repeats, "case")
    ratios = [r["ratio"] for r in report.rows if r["attempt"] == REPLAYED]
    of_first = [r["of_first"] for r in report.rows if r["attempt"] == REPLAYED]
    report.goals = [
        Goal.at_most(
            f"an attempt replaying a {STEPS}-step journal of instant tools takes <= "
            f"{GOAL_RATIO:g}x the first attempt's bookkeeping alone (replay=False, no-op "
            "tools; the worse agent kind)",
            max(ratios) if ratios else None,
            GOAL_RATIO,
            "x",
        ),
        Goal.at_most(
            f"replay costs <= {GOAL_FIRST:.0%} of the first attempt's time for a {STEPS}-step "
            "run (the journaled first attempt; the worse agent kind)",
            max(of_first) if of_first else None,
            GOAL_FIRST,
            "x",
        ),
    ]
    report.notes = [
        "times are taken by the agent itself, from the start of run() to after its last "
        "tool call (perf_counter): the attempt's work, not the supervisor's start-up or the "
        "restart backoff",
        "the baseline and the journaled first attempt commit tool_executing and "
        "tool_completed for every call (200 group commits on a SQLite file); a replayed "
        "call commits nothing",
        f"each figure is the median of {runs} runs per repeat; a warm-up run is not counted",
    ]
    return report
