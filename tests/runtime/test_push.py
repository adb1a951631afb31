"""Push delivery (``Subscription.push_to``): committed events handed to a sink in the task that
delivers them, with no reader task woken per unit — and the invariants exactly as for a reader.

Commit before send (2): a pushed event's commit has returned and another connection sees its
row. Order (3): what a sink takes and what it leaves to the buffer and its reader form one
gapless stream. Backpressure (9): a sink that takes nothing is cut off at its capacity like a
slow reader, without holding anyone back. Resume (7): while a subscription replays, live events
wait behind the replay. A sink that raises closes its own subscription only.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import (
    WatermarkStore,
    as_tuples,
    assert_gapless,
    db_path,
    make_config,
    read_until_ended,
    stored_events,
)
from runtime_agents import AGENTS_BY_KIND, test_metadata

import netra_actors as na
from netra_actors._store import SqlStore
from netra_actors.testing import guest_test


def open_rt(config: na.RuntimeConfig, **kwargs: Any) -> Any:
    return na.open_runtime(
        config, agents=AGENTS_BY_KIND["async"], metadata=[test_metadata], **kwargs
    )


def ended(events: list[na.Event], run_ids: list[str]) -> bool:
    done = {
        e.run_id
        for e in events
        if e.event == "run_state" and e.data["state"] in ("completed", "failed", "cancelled")
    }
    return set(run_ids) <= done


class Collect:
    """A sink that takes everything (or refuses the calls in ``refuse``) and records which task
    called it."""

    def __init__(self, refuse: set[int] | None = None) -> None:
        self.events: list[na.Event] = []
        self.calls = 0
        self.taken = 0
        self.refuse = refuse or set()
        self.tasks: set[str] = set()
        self.arrived = trio.Event()

    def __call__(self, items: list[Any]) -> bool:
        self.calls += 1
        if self.calls in self.refuse:
            return False
        self.tasks.add(trio.lowlevel.current_task().name)
        self.events.extend(items)
        self.taken += 1
        self.arrived.set()
        return True


async def until(sink: Collect, done: Any) -> None:
    with trio.fail_after(20):
        while not done():
            sink.arrived = trio.Event()
            await sink.arrived.wait()


@guest_test()
async def test_pushed_events_are_committed_first_and_need_no_reader(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    inner = await SqlStore.open(config, extra_metadata=[test_metadata])
    store = WatermarkStore(inner)
    probe = sqlite3.connect(db_path(config))
    seen: list[tuple[int, int, bool]] = []  # (seq, committed watermark, row visible)

    class Checked(Collect):
        def __call__(self, items: list[Any]) -> bool:
            for e in items:
                row = probe.execute(
                    "SELECT 1 FROM netra_events WHERE user_id=? AND seq=?", ("alice", e.seq)
                ).fetchone()
                seen.append((e.seq, store.committed.get("alice", 0), row is not None))
            return super().__call__(items)

    try:
        async with na.open_runtime(config, agents=AGENTS_BY_KIND["async"], store=store) as rt:
            sub = await rt.subscribe("alice")
            sink = Checked()
            sub.push_to(sink)
            ids = [
                await rt.start_run("alice", "steps", {"steps": 12, "every": 3}) for _ in range(3)
            ]
            await until(sink, lambda: ended(sink.events, ids))
            stats = sub.statistics()
    finally:
        probe.close()
        await inner.aclose()
    assert seen
    assert all(seq <= mark and visible for seq, mark, visible in seen)
    assert_gapless(sink.events)
    assert as_tuples(sink.events) == stored_events(config, "alice")
    assert stats.buffered == 0
    assert stats.delivered == len(sink.events)
    # no task read the subscription: the supervisor and the agents' own tasks (their
    # checkpoints, in one hop) handed the events over as they committed them
    assert sink.tasks
    assert all(name.endswith(("agent_child", "run_user")) for name in sink.tasks), sink.tasks


@guest_test()
async def test_what_a_sink_refuses_its_reader_gets_in_order(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with open_rt(config) as rt:
        sub = await rt.subscribe("alice")
        sink = Collect(refuse={2, 3, 6})
        sub.push_to(sink)
        received: list[na.Event] = sink.events  # one stream: pushed and read, in arrival order
        run_ids = [await rt.start_run("alice", "steps", {"steps": 20, "every": 2})]

        async def reader() -> None:
            while True:
                received.extend(await sub.receive_batch())  # appended in the step it returns
                sink.arrived.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await until(sink, lambda: ended(received, run_ids))
            nursery.cancel_scope.cancel()
    assert_gapless(received)
    assert as_tuples(received) == stored_events(config, "alice")
    assert sink.calls > sink.taken > 0  # both paths were taken


@guest_test()
async def test_a_sink_that_takes_nothing_is_cut_off_at_capacity_alone(tmp_path: Path) -> None:
    """Invariant 9 for a sink: the same bound and overflow rule as a slow reader."""
    config = make_config(tmp_path)
    async with open_rt(config) as rt:
        stuck = await rt.subscribe("alice", capacity=5)
        stuck.push_to(lambda items: False)
        fast = await rt.subscribe("alice")
        sink = Collect()
        fast.push_to(sink)
        run_id = await rt.start_run("alice", "steps", {"steps": 30})
        await until(sink, lambda: ended(sink.events, [run_id]))
        with pytest.raises(na.exceptions.SlowConsumerError):
            await stuck.receive_batch()
    assert_gapless(sink.events)
    assert as_tuples(sink.events) == stored_events(config, "alice")


@guest_test()
async def test_a_pushing_subscription_resumes_exactly_at_the_seam(tmp_path: Path) -> None:
    """Invariant 7: replayed events first (read), then live ones (pushed), no gap, no
    duplicate, even while events keep coming during the replay."""
    config = make_config(tmp_path, replay_page=7)
    async with open_rt(config) as rt:
        first = await rt.start_run("alice", "steps", {"steps": 30})
        await rt.wait_run("alice", first)
        runner = await rt.start_run("alice", "steps", {"steps": 100, "every": 1})
        taken = 0
        for k in (0, 3, 17):
            sub = await rt.subscribe("alice", resume_from=k)
            sink = Collect()
            sub.push_to(sink)
            received = sink.events
            later = await rt.start_run("alice", "steps", {"steps": 40, "every": 1})
            with trio.fail_after(20):
                while not ended(received, [runner, later]):
                    if sub.pending():
                        received.extend(await sub.receive_batch())
                    else:
                        await trio.sleep(0.01)
            assert_gapless(received, start=k + 1)
            sub.close()
            taken += sink.taken
        assert taken > 0


@guest_test()
async def test_a_sink_that_raises_closes_its_own_subscription_only(tmp_path: Path) -> None:
    config = make_config(tmp_path)

    def broken(items: list[Any]) -> bool:
        raise RuntimeError("a bug in the sink")

    async with open_rt(config) as rt:
        bad = await rt.subscribe("alice")
        bad.push_to(broken)
        good = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "steps", {"steps": 10})
        events = await read_until_ended(good, [run_id])
        with pytest.raises(na.SubscriptionClosedError) as info:
            await bad.receive_batch()
        assert info.value.reason == "session_failed"
        assert (await rt.get_runs("alice")).runs[0].state.value == "completed"
    assert as_tuples(events) == stored_events(config, "alice")
