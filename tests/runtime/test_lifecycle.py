"""The data lifecycle through the runtime: deleting a thread (erased placeholders at the same
seqs, one ``thread_deleted``, live runs cancelled first, resume gapless across it), retention
(only idle threads, in bounded batches), erasing a user (every row gone, sockets closed
``erased``, the next session at seq 1) and the export — on a SQLite file and on MemoryStore."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import db_path, make_config

import netra_actors as na
from netra_actors._core._erasure import DAY
from netra_actors.testing import MemoryStore, guest_test


class Echo(na.Agent):
    name = "echo"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.say(f"echo: {input}")
        return "ok"


class Waits(na.Agent):
    """Live until a message is sent to the run."""

    name = "waits"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.say("waiting")
        await ctx.checkpoint()
        return await ctx.receive()


STORES = ["sqlite", "memory"]


def opened(kind: str, tmp_path: Path, **changes: Any) -> AbstractAsyncContextManager[na.Runtime]:
    store = MemoryStore() if kind == "memory" else None
    config = make_config(tmp_path, **changes)
    return na.open_runtime(config, agents=[Echo, Waits], default_agent="echo", store=store)


async def said(rt: na.Runtime, text: str, user: str = "alice", **kw: Any) -> None:
    run_id = await rt.say(user, text, **kw)
    with trio.fail_after(10):
        await rt.wait_run(user, run_id)


async def everything(rt: na.Runtime, user: str = "alice") -> list[na.Event]:
    return [e async for e in rt.replay(user, 0)]


@pytest.mark.parametrize("kind", STORES)
@guest_test()
async def test_delete_thread_keeps_the_seqs_as_erased_placeholders(
    kind: str, tmp_path: Path
) -> None:
    async with opened(kind, tmp_path) as rt:
        await said(rt, "secret plans", thread="work")
        await said(rt, "hello", thread="main")
        await said(rt, "more secrets", thread="work")
        before = await everything(rt)
        sub = await rt.subscribe("alice")
        await rt.delete_thread("alice", "work")
        after = await everything(rt)
        # the same seqs, plus one thread_deleted; nothing of "work" is readable any more
        assert [e.seq for e in after] == [e.seq for e in before] + [before[-1].seq + 1]
        for old, new in zip(before, after, strict=False):
            if old.thread == "work":
                assert (new.event, dict(new.data), new.run_id, new.thread) == (
                    "erased",
                    {},
                    None,
                    None,
                )
                assert new.ts == old.ts
            else:
                assert new == old
        last = after[-1]
        assert (last.event, dict(last.data), last.thread) == (
            "thread_deleted",
            {"thread": "work", "reason": "deleted"},
            None,
        )
        assert "secret" not in repr(after)
        with trio.fail_after(5):
            live = await sub.receive_batch()
        assert [e.event for e in live] == ["thread_deleted"]
        threads = [t.thread for t in (await rt.threads("alice")).threads]
        assert threads == ["main"]
        assert not (await rt.history("alice", thread="work")).events
        runs = (await rt.get_runs("alice")).runs
        assert all(r.input is None for r in runs if r.thread == "work")
        assert all(r.input is not None for r in runs if r.thread == "main")
        # a resume from before the deletion meets placeholders, never a gap
        resumed = await rt.subscribe("alice", resume_from=1)
        with trio.fail_after(5):
            got: list[na.Event] = []
            while len(got) < len(after) - 1:
                got.extend(await resumed.receive_batch())
        assert [e.seq for e in got] == list(range(2, len(after) + 1))
        # deleting it again commits nothing
        await rt.delete_thread("alice", "work")
        assert len(await everything(rt)) == len(after)


@pytest.mark.parametrize("kind", STORES)
@guest_test()
async def test_delete_thread_cancels_its_live_runs_first(kind: str, tmp_path: Path) -> None:
    async with opened(kind, tmp_path) as rt:
        doomed = await rt.say("alice", "wait here", agent="waits", thread="work")
        kept = await rt.say("alice", "wait there", agent="waits", thread="main")
        await rt.delete_thread("alice", "work")
        with trio.fail_after(5):
            info = await rt.wait_run("alice", doomed)
        assert info.state.value == "cancelled"
        assert rt.is_active("alice")
        events = await everything(rt)
        assert [e.event for e in events].count("thread_deleted") == 1
        assert not [e for e in events if e.run_id == doomed]  # its rollback was erased too
        await rt.send_to_run("alice", kept, "done")
        with trio.fail_after(5):
            assert (await rt.wait_run("alice", kept)).state.value == "completed"


@pytest.mark.parametrize("kind", STORES)
@guest_test()
async def test_retention_erases_only_idle_threads_in_batches(kind: str, tmp_path: Path) -> None:
    async with opened(
        kind, tmp_path, retention_days=1.0, retention_batch=2, retention_pause=0
    ) as rt:
        for n in range(3):
            await said(rt, f"old {n}", thread="old")
        await said(rt, "recent", thread="new")
        live = await rt.say("alice", "live", agent="waits", thread="busy")
        retention = rt.retention
        assert retention is not None
        before = await everything(rt)
        old_seqs = [e.seq for e in before if e.thread == "old"]
        retention.clock = lambda: before[-1].ts + 0.5 * DAY  # nothing is a day old yet
        assert await retention.sweep() == 0
        # the cutoff (now - 1 day) falls between the last event of "old" and the first of "new"
        old_last = max(e.ts for e in before if e.thread == "old")
        new_first = min(e.ts for e in before if e.thread == "new")
        assert old_last < new_first
        retention.clock = lambda: (old_last + new_first) / 2 + DAY
        assert await retention.sweep() == 1
        assert retention.batches >= len(old_seqs) // 2
        after = await everything(rt)
        for e in after:
            if e.seq in old_seqs:
                assert e.event == "erased"
        deleted = [e for e in after if e.event == "thread_deleted"]
        assert [dict(e.data) for e in deleted] == [{"thread": "old", "reason": "retention"}]
        assert {t.thread for t in (await rt.threads("alice")).threads} == {"new", "busy"}
        # a second sweep finds nothing more to do, and commits nothing
        assert await retention.sweep() == 0
        assert len(await everything(rt)) == len(after)
        await rt.send_to_run("alice", live, "x")


@pytest.mark.parametrize("kind", STORES)
@guest_test()
async def test_erase_user_deletes_everything_and_closes_the_sockets(
    kind: str, tmp_path: Path
) -> None:
    async with opened(kind, tmp_path) as rt:
        await said(rt, "my data", thread="work")
        waiting = await rt.say("alice", "wait", agent="waits")
        await said(rt, "bob's", user="bob")
        sub = await rt.subscribe("alice", resume_from=0)
        exported = [e async for e in rt.export_user("alice")]
        assert exported == await everything(rt)
        await rt.erase_user("alice")
        with pytest.raises(na.exceptions.SubscriptionClosedError, match="erased"):
            with trio.fail_after(5):
                while True:
                    await sub.receive_batch()
        assert await everything(rt) == []
        assert (await rt.get_runs("alice")).runs == ()
        assert await rt.get_run("alice", waiting) is None
        assert not (await rt.threads("alice")).threads
        assert await everything(rt, "bob")  # another user is untouched
        if kind == "sqlite":
            with sqlite3.connect(db_path(rt.config)) as conn:
                for table in ("netra_events", "netra_runs", "netra_threads", "netra_message_ids"):
                    n = conn.execute(
                        f"SELECT count(*) FROM {table} WHERE user_id = 'alice'"
                    ).fetchone()[0]
                    assert n == 0, table
        # a later session starts at seq 1
        await said(rt, "again")
        assert next(e.seq for e in await everything(rt)) == 1
