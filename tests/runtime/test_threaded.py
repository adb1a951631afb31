"""What is particular to threaded (pykka) agents: bounded threads, fencing, fresh actors, processes.

The shared guarantees (ordering, commit before send, gapless seq, rollback, restart, cancel,
deadline, heartbeat) are proven for threaded agents by the parametrised invariant suite in
``test_invariants.py``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import trio
from helpers import make_config, read_until_ended, stored_events
from runtime_agents import Steps, test_metadata

import netra_actors as na
from netra_actors._core import RunState
from netra_actors.testing import guest_test


def cpu_work(n: int) -> dict[str, int]:
    """CPU-bound work for the process pool (module level, so it pickles)."""
    total = 0
    for i in range(n):
        total += i * i
    return {"total": total, "pid": os.getpid()}


class Nap(na.ThreadedAgent):
    """Blocks in a tool for ``seconds`` (cooperatively checking for cancellation)."""

    name = "nap"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        seconds = float(input["seconds"]) if isinstance(input, dict) else 0.2

        def nap() -> float:
            end = time.monotonic() + seconds
            while time.monotonic() < end and not ctx.cancelled:
                time.sleep(0.01)
            return seconds

        return ctx.tool("nap", nap)


class Stubborn(na.ThreadedAgent):
    """Ignores cancellation: blocks, then tries to publish anyway."""

    name = "stubborn"
    release = threading.Event()
    late_errors: list[str] = []

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        ctx.think("started")
        ctx.checkpoint()
        Stubborn.release.wait(timeout=10)  # blocking, and never looks at ctx.cancelled
        for attempt in (lambda: ctx.think("LATE"), ctx.checkpoint, lambda: ctx.say("LATE")):
            try:
                attempt()
            except na.exceptions.RunFencedError as exc:
                Stubborn.late_errors.append(type(exc).__name__)
        return "LATE RESULT"


class WhoAmI(na.ThreadedAgent):
    """Records its instance and thread, crashing on the first two attempts."""

    name = "whoami"
    restart_policy = na.policies.RestartPolicy(max_restarts=3, backoff_initial=0.01)
    seen: list[str] = []

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        WhoAmI.seen.append(threading.current_thread().name)
        if ctx.attempt <= 2:
            raise RuntimeError("crash")
        return ctx.attempt


class Cruncher(na.ThreadedAgent):
    name = "cruncher"

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        return ctx.run_in_process(cpu_work, 200_000)


class AsyncCruncher(na.Agent):
    name = "async_cruncher"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        result: dict[str, int] = await trio.to_thread.run_sync(na.run_in_process, cpu_work, 1000)
        return result


AGENTS = (Nap, Stubborn, WhoAmI, Cruncher, AsyncCruncher, Steps)


async def wait_threads_ended(rt: na.Runtime) -> None:
    """Poll (threads end on their own schedule; nothing in trio can be awaited for it)."""
    with trio.fail_after(10):
        while rt.statistics().threads_live:  # noqa: ASYNC110
            await trio.sleep(0.01)


@guest_test()
async def test_threads_are_capped_and_queued_runs_wait_in_pending(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_threads=2)
    baseline = threading.active_count()
    max_waiting = 0
    async with na.open_runtime(config, agents=AGENTS, metadata=[test_metadata]) as rt:
        sub = await rt.subscribe("alice")
        ids = [await rt.start_run("alice", "nap", {"seconds": 0.15}) for _ in range(6)]
        with trio.fail_after(20):
            async with trio.open_nursery() as n:

                async def watch() -> None:
                    nonlocal max_waiting
                    while True:
                        max_waiting = max(max_waiting, rt.statistics().threads_waiting)
                        await trio.sleep(0.01)

                n.start_soon(watch)
                events = await read_until_ended(sub, ids)
                n.cancel_scope.cancel()
        await wait_threads_ended(rt)
        stats = rt.statistics()
    running: set[str] = set()
    peak = 0
    for e in events:
        if e.event == "run_state":
            state = RunState(e.data["state"])
            if state is RunState.RUNNING:
                running.add(e.run_id or "")
            elif state.is_terminal or state is RunState.COMPLETING:
                running.discard(e.run_id or "")
            peak = max(peak, len(running))
    assert peak == 2  # never more running threaded agents than max_threads
    assert max_waiting >= 1  # the others waited (in ``pending``) for a thread
    firsts = {
        rid: [e.data["state"] for e in events if e.run_id == rid and e.event == "run_state"][:2]
        for rid in ids
    }
    assert all(states == ["pending", "starting"] for states in firsts.values())
    assert stats.threads_live == 0  # idle users hold no threads
    assert threading.active_count() <= baseline + 1


@guest_test()
async def test_an_abandoned_thread_can_never_publish(tmp_path: Path) -> None:
    Stubborn.release.clear()
    Stubborn.late_errors.clear()
    config = make_config(tmp_path)
    async with na.open_runtime(config, agents=AGENTS, metadata=[test_metadata]) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "stubborn", None)
        with trio.fail_after(10):
            while "started" not in [e.data.get("text") for e in await sub.receive_batch()]:
                pass
        await rt.cancel_run("alice", run_id)
        events = await read_until_ended(sub, [run_id])
        assert rt.statistics().threads_abandoned == 1  # still blocked, ignoring cancellation
        Stubborn.release.set()
        await wait_threads_ended(rt)
        assert rt.statistics().threads_abandoned == 0
        follow_up = await rt.start_run("alice", "steps", {"steps": 2})
        events += await read_until_ended(sub, [follow_up])
    assert Stubborn.late_errors == ["RunFencedError"] * 3
    stored = stored_events(config, "alice")
    assert not any("LATE" in str(data) for _, _, _, data in stored)
    assert not any("LATE" in str(dict(e.data)) for e in events)
    final = [e for e in events if e.run_id == run_id][-1]
    assert final.data["state"] == "cancelled"


@guest_test()
async def test_each_attempt_gets_a_fresh_actor_and_thread(tmp_path: Path) -> None:
    WhoAmI.seen.clear()
    config = make_config(tmp_path)
    async with na.open_runtime(config, agents=AGENTS, metadata=[test_metadata]) as rt:
        info = await rt.wait_run("alice", await rt.start_run("alice", "whoami", None))
    assert info.state is RunState.COMPLETED
    assert info.attempt == 3
    assert len(WhoAmI.seen) == 3
    assert len(set(WhoAmI.seen)) == 3  # a stopped pykka actor is not reused: a new one each time
    assert all("AgentActor" in name for name in WhoAmI.seen)


@guest_test()
async def test_a_blocking_thread_never_blocks_the_event_loop(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with na.open_runtime(config, agents=AGENTS, metadata=[test_metadata]) as rt:
        alice = await rt.subscribe("alice")
        blocker = await rt.start_run("alice", "nap", {"seconds": 1.0})
        with trio.fail_after(5):
            while "tool_executing" not in [e.event for e in await alice.receive_batch()]:
                pass
        quick = await rt.start_run("bob", "steps", {"steps": 20})
        assert (await rt.wait_run("bob", quick)).state is RunState.COMPLETED
        blocker_info = await rt.get_run("alice", blocker)
        assert blocker_info is not None
        assert blocker_info.state is RunState.RUNNING  # bob finished while alice's thread blocked
        await rt.wait_run("alice", blocker)


@guest_test()
async def test_cpu_work_runs_in_another_process(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with na.open_runtime(config, agents=AGENTS, metadata=[test_metadata]) as rt:
        threaded = await rt.wait_run("alice", await rt.start_run("alice", "cruncher", None))
        from_async = await rt.wait_run("alice", await rt.start_run("alice", "async_cruncher", None))
    assert threaded.result == {
        "total": sum(i * i for i in range(200_000)),
        "pid": threaded.result["pid"],
    }
    assert threaded.result["pid"] != os.getpid()
    assert from_async.result is not None
    assert from_async.result["pid"] != os.getpid()
