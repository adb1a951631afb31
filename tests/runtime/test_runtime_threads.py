"""Threads and conversations through the runtime: every run and event in its thread, history
paged back per thread, the threads list, client message ids, and ``ctx.conversation()`` — the
same in every attempt of a run, for both agent kinds, on a SQLite file and on ``MemoryStore``."""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import make_config

import netra_actors as na
from netra_actors.testing import MemoryStore, guest_test

SEEN: dict[str, list[tuple[int, tuple[na.types.ConversationMessage, ...]]]] = {}
"""run_id -> (attempt, conversation) of every attempt of the recording agents."""
TOOLS: dict[str, list[tuple[int, tuple[na.types.ClientTool, ...]]]] = {}
"""run_id -> (attempt, ctx.client_tools()) of every attempt of the recording agents."""


class Echo(na.Agent):
    """Answers with a tool call and a message naming the input; crashes on attempt 1 when the
    input says ``crash``; records the conversation each attempt read."""

    name = "echo"
    restart_policy = na.policies.RestartPolicy(max_restarts=3, backoff_initial=0.01)

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        conversation = await ctx.conversation()
        SEEN.setdefault(ctx.run_id, []).append((ctx.attempt, conversation))
        TOOLS.setdefault(ctx.run_id, []).append((ctx.attempt, await ctx.client_tools()))
        await ctx.tool("length", lambda text: len(text), text=str(input))
        await ctx.say(f"echo: {input}")
        if "crash" in str(input) and ctx.attempt == 1:
            raise RuntimeError("the first attempt crashes")
        return len(conversation)


class ThreadedEcho(na.ThreadedAgent):
    name = "techo"
    restart_policy = na.policies.RestartPolicy(max_restarts=3, backoff_initial=0.01)

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        conversation = ctx.conversation()
        SEEN.setdefault(ctx.run_id, []).append((ctx.attempt, conversation))
        TOOLS.setdefault(ctx.run_id, []).append((ctx.attempt, ctx.client_tools()))
        ctx.say(f"echo: {input}")
        ctx.checkpoint()
        if "crash" in str(input) and ctx.attempt == 1:
            raise RuntimeError("the first attempt crashes")
        return len(conversation)


class Waits(na.Agent):
    """Waits for a message sent to the run (a live run until then), then answers with it."""

    name = "waits"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        got = await ctx.receive()
        await ctx.say(f"got: {got}")
        return got


AGENTS = [Echo, ThreadedEcho, Waits]


def opened(kind: str, tmp_path: Path) -> AbstractAsyncContextManager[na.Runtime]:
    """The runtime with the test agents (default ``echo``) on a SQLite file or in memory."""
    store = MemoryStore() if kind == "memory" else None
    return na.open_runtime(make_config(tmp_path), agents=AGENTS, default_agent="echo", store=store)


STORES = ["sqlite", "memory"]


async def said(rt: na.Runtime, text: str, **kw: Any) -> na.RunInfo:
    run_id = await rt.say("alice", text, **kw)
    with trio.fail_after(10):
        return await rt.wait_run("alice", run_id)


@pytest.mark.parametrize("kind", STORES)
@guest_test()
async def test_two_threads_are_views_of_one_log(kind: str, tmp_path: Path) -> None:
    async with opened(kind, tmp_path) as rt:
        sub = await rt.subscribe("alice", resume_from=0)
        for n in range(4):
            info = await said(rt, f"q{n}", thread="work" if n % 2 else None)
            assert info.thread == ("work" if n % 2 else "main")
        head = (await rt.get_runs("alice")).head_seq
        with trio.fail_after(10):
            live: list[na.Event] = []
            while len(live) < head:
                live.extend(await sub.receive_batch())
        assert [e.seq for e in live] == list(range(1, head + 1))  # one gapless log
        runs = {r.run_id: r.thread for r in (await rt.get_runs("alice")).runs}
        assert all(e.thread == runs[e.run_id] for e in live if e.run_id is not None)
        # each thread's history, paged back to its first event
        for thread in ("main", "work"):
            got: list[na.Event] = []
            before = None
            while True:
                page = await rt.history("alice", thread=thread, before_seq=before, limit=5)
                got[:0] = page.events
                if not page.more:
                    break
                before = page.first_seq
            assert got == [e for e in live if e.thread == thread]
        whole = await rt.history("alice", limit=500)
        assert list(whole.events) == live
        assert not whole.more


@pytest.mark.parametrize("kind", STORES)
@guest_test()
async def test_threads_most_recent_first_with_their_live_runs(kind: str, tmp_path: Path) -> None:
    async with opened(kind, tmp_path) as rt:
        await said(rt, "Plan the trip to Lisbon please", thread="trip")
        waiting = await rt.say("alice", "hold on", agent="waits", thread="idle")
        await said(rt, "latest", thread="main")
        page = await rt.threads("alice")
        assert [t.thread for t in page.threads] == ["main", "idle", "trip"]
        assert [t.live_runs for t in page.threads] == [0, 1, 0]
        assert page.threads[2].title == "Plan the trip to Lisbon please"
        assert page.next is None
        first = await rt.threads("alice", limit=2)
        assert [t.thread for t in first.threads] == ["main", "idle"]
        rest = await rt.threads("alice", before=first.next, limit=2)
        assert [t.thread for t in rest.threads] == ["trip"]
        await rt.send_to_run("alice", waiting, "go")
        with trio.fail_after(10):
            await rt.wait_run("alice", waiting)
        assert [t.live_runs for t in (await rt.threads("alice")).threads] == [0, 0, 0]


@pytest.mark.parametrize("agent", ["echo", "techo"])
@guest_test()
async def test_an_agent_sees_the_client_tools_of_its_message(agent: str, tmp_path: Path) -> None:
    """``say(client_tools=…)`` (an AG-UI request's ``tools``): ``ctx.client_tools()`` lists
    them in every attempt; they are kept with the run's own message only; a later run of the
    thread that offers none sees none."""
    weather = na.types.ClientTool(
        name="get_weather", description="The weather here", parameters={"type": "object"}
    )
    offered = [weather, {"name": "get_time"}]
    async with na.open_runtime(make_config(tmp_path), agents=AGENTS) as rt:
        info = await said(
            rt,
            "use them, crash",
            agent=agent,
            client_tools=offered,
            message_id="m-own",
            earlier=[("m-before", "before")],
        )
        assert info.state.value == "completed"
        expected = (weather, na.types.ClientTool(name="get_time"))
        assert TOOLS[info.run_id] == [(1, expected), (2, expected)]  # the same in each attempt
        page = await rt.history("alice", limit=50)
        users = {e.data["message_id"]: e.data for e in page.events if e.event == "message"}
        assert "client_tools" not in users["m-before"]
        assert users["m-own"]["client_tools"] == [
            {"name": "get_weather", "description": "The weather here", "parameters": {"type": "object"}},
            {"name": "get_time", "description": ""},
        ]  # fmt: skip
        later = await said(rt, "again", agent=agent)
        assert TOOLS[later.run_id] == [(1, ())]
        for bad in (
            [{"name": ""}],
            [{"description": "no name"}],
            [{"name": "x", "description": 1}],
        ):
            with pytest.raises(na.CommandError):
                await rt.say("alice", "bad", agent=agent, client_tools=bad)


@pytest.mark.parametrize("agent", ["echo", "techo"])
@guest_test()
async def test_the_conversation_is_the_same_in_every_attempt(agent: str, tmp_path: Path) -> None:
    async with na.open_runtime(make_config(tmp_path), agents=AGENTS) as rt:
        await said(rt, "first", agent=agent)
        await said(rt, "elsewhere", agent=agent, thread="other")
        info = await said(rt, "second, crash", agent=agent)
        assert info.state is na.RunState.COMPLETED
        assert info.attempt == 2
    attempts = SEEN[info.run_id]
    assert [a for a, _ in attempts] == [1, 2]
    assert attempts[0][1] == attempts[1][1]  # the same tuple, after a crash and a restart
    conversation = attempts[1][1]
    if agent == "echo":
        assert [(m.role, m.text) for m in conversation] == [
            ("user", "first"),
            ("tool", ""),
            ("assistant", "echo: first"),
            ("user", "second, crash"),
        ]
        tool = conversation[1].tool
        assert tool is not None
        assert (tool.name, tool.args, tool.result, tool.completed) == (
            "length",
            {"text": "first"},
            5,
            True,
        )
    else:
        assert [(m.role, m.text) for m in conversation] == [
            ("user", "first"),
            ("assistant", "echo: first"),
            ("user", "second, crash"),
        ]
    assert conversation[-1].run_id == info.run_id
    assert all(m.message_id for m in conversation if m.role != "tool")


@guest_test()
async def test_a_queued_run_sees_the_answers_of_the_runs_it_waited_for(tmp_path: Path) -> None:
    async with na.open_runtime(make_config(tmp_path), agents=AGENTS) as rt:
        blocker = await rt.say("alice", "wait", agent="waits")
        queued = await rt.say("alice", "after", agent="echo", if_busy="enqueue")
        later = await rt.say("alice", "later still", agent="echo", if_busy="enqueue")
        await rt.send_to_run("alice", blocker, "done")
        with trio.fail_after(10):
            await rt.wait_run("alice", later)
    ((_, conversation),) = SEEN[queued]
    # its own message, and what committed before its turn came (the answer it waited for) —
    # not the later run's message
    assert [(m.role, m.text) for m in conversation] == [
        ("user", "wait"),
        ("user", "after"),
        ("assistant", "got: done"),
    ]
    ((_, last),) = SEEN[later]  # in seq order: its own message was committed before the answers
    assert [(m.role, m.text) for m in last if m.role != "tool"] == [
        ("user", "wait"),
        ("user", "after"),
        ("user", "later still"),
        ("assistant", "got: done"),
        ("assistant", "echo: after"),
    ]


@guest_test()
async def test_a_scheduled_run_sees_what_was_said_before_it_started(tmp_path: Path) -> None:
    async with na.open_runtime(make_config(tmp_path), agents=AGENTS) as rt:
        before = await rt.say("alice", "before", agent="waits")  # live when the next is said
        scheduled = await rt.say("alice", "later", agent="echo", start_at=time.time() + 1.0)
        await rt.send_to_run("alice", before, "done")
        await said(rt, "meanwhile", agent="echo")
        with trio.fail_after(10):
            await rt.wait_run("alice", scheduled)
    ((_, conversation),) = SEEN[scheduled]
    # the turns before its own, with the answers they had when it started; not the exchange
    # that came after it was said (neither the question nor its answer)
    assert [(m.role, m.text) for m in conversation if m.role != "tool"] == [
        ("user", "before"),
        ("user", "later"),
        ("assistant", "got: done"),
    ]


@pytest.mark.parametrize("kind", STORES)
@guest_test()
async def test_client_message_ids_are_kept_and_unique(kind: str, tmp_path: Path) -> None:
    async with opened(kind, tmp_path) as rt:
        run_id = await rt.say(
            "alice", "two", message_id="c-2", earlier=[("c-1", "one")], thread="t"
        )
        with trio.fail_after(10):
            await rt.wait_run("alice", run_id)
        first = await rt.first_event("alice", run_id)
        assert first is not None
        assert first.data["message_id"] == "c-1"
        assert await rt.message_ids("alice", ["c-1", "c-2", "c-3"]) == {"c-1": "t", "c-2": "t"}
        head = (await rt.get_runs("alice")).head_seq
        with pytest.raises(na.CommandError, match="already used"):
            await rt.say("alice", "again", message_id="c-2")
        with pytest.raises(na.CommandError, match="distinct"):
            await rt.say("alice", "x", message_id="d", earlier=[("d", "y")])
        assert (await rt.get_runs("alice")).head_seq == head  # nothing committed


@guest_test()
async def test_bad_threads_and_pages_are_command_errors(tmp_path: Path) -> None:
    async with na.open_runtime(make_config(tmp_path), agents=AGENTS, default_agent="echo") as rt:
        for bad in ("", "a b", "x" * 129, "ü", 5):
            with pytest.raises(na.CommandError, match="thread"):
                await rt.say("alice", "hi", thread=bad)  # type: ignore[arg-type]
            with pytest.raises(na.CommandError, match="thread"):
                await rt.start_run("alice", "echo", "hi", thread=bad)  # type: ignore[arg-type]
        with pytest.raises(na.CommandError, match="message_id"):
            await rt.say("alice", "hi", message_id="no spaces allowed")
        with pytest.raises(na.CommandError, match="limit"):
            await rt.history("alice", limit=501)
        with pytest.raises(na.CommandError, match="limit"):
            await rt.threads("alice", limit=101)
        with pytest.raises(na.CommandError, match="before_seq"):
            await rt.history("alice", before_seq=0)
        assert (await rt.get_runs("alice")).head_seq == 0


def test_a_command_keeps_its_thread_and_message_ids_through_the_cluster_inbox() -> None:
    from netra_actors._cluster_codec import command_of, message_of
    from netra_actors._messages import Reply, StartRun
    from netra_actors._values import dumps, loads

    sent = StartRun(
        agent="echo",
        input="hi",
        user_text="hi",
        reply=Reply(),
        thread="t.1",
        message_id="c-2",
        earlier=(("c-1", "before"),),
    )
    encoded = command_of(sent)
    assert encoded is not None
    got = message_of(encoded[0], loads(dumps(encoded[1])))
    assert isinstance(got, StartRun)
    assert (got.thread, got.message_id, got.earlier) == ("t.1", "c-2", (("c-1", "before"),))
