"""Threads at the wire (docs/protocol.md, "Threads and history"), through real sockets against
``netra-actors serve`` and the ASGI adapter (the ``server`` fixture runs each test on both): the
``thread`` of ``say``/``start_run`` and of every event frame, the ``threads`` and ``history``
commands, and AG-UI's threads (``POST /agui`` commits only what the thread lacks,
``threadId`` on runs started over ``/ws``, ``GET /agui/events?threadId=``)."""

from __future__ import annotations

from typing import Any

from aguikit import auth, events, post, request, run_input
from gwkit import Client, Server, run_async, seq_is


async def said(client: Client, text: str, **extra: Any) -> str:
    run_id = await client.say(text, agent="demo", **extra)
    assert await client.wait_run_end(run_id) == "completed"
    return run_id


@run_async
async def test_events_carry_their_thread_and_history_pages_back(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    first = await said(client, "hello 1 2")
    second = await said(client, "hello 3 4", thread="side:1")
    assert {e["thread"] for e in client.run_events(first)} == {"main"}
    assert {e["thread"] for e in client.run_events(second)} == {"side:1"}
    head = client.events[-1]["seq"]
    # the last page of one thread, then the one before it
    page = await client.command({"type": "history", "id": "h1", "thread": "main", "limit": 3})
    assert (page["type"], page["id"], page["more"]) == ("history", "h1", True)
    mains = [e for e in client.events if e["thread"] == "main"]
    assert page["events"] == mains[-3:]
    earlier = await client.command(
        {"type": "history", "thread": "main", "before_seq": page["events"][0]["seq"], "limit": 500}
    )
    assert earlier["events"] + page["events"] == mains
    assert earlier["more"] is False
    # the whole log (no thread), before a seq
    whole = await client.command({"type": "history", "before_seq": head + 1, "limit": 500})
    assert whole["events"] == client.events
    # a new socket that only shows the last page goes live without a replay
    other = await Client.open(server, user)
    assert other.welcome is not None
    assert other.welcome["head_seq"] == head
    last = await other.command({"type": "history", "before_seq": head + 1, "limit": 2})
    assert [e["seq"] for e in last["events"]] == [head - 1, head]
    await client.close()
    await other.close()


@run_async
async def test_the_threads_command_lists_recent_threads_first(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    await said(client, "hello old thread", thread="old")
    await client.command({"type": "start_run", "agent": "slow", "input": {"seconds": 30},
                          "thread": "busy"})  # fmt: skip
    await said(client, "hello newest")
    listed = await client.command({"type": "threads", "id": "t1"})
    assert (listed["type"], listed["id"], listed["next"]) == ("threads", "t1", None)
    assert [t["thread"] for t in listed["threads"]] == ["main", "busy", "old"]
    main, busy, old = listed["threads"]
    assert (main["live_runs"], busy["live_runs"], old["live_runs"]) == (0, 1, 0)
    assert (old["title"], busy["title"]) == ("hello old thread", None)
    assert main["last_seq"] == client.events[-1]["seq"]
    assert set(main) == {"thread", "title", "created_ts", "last_seq", "last_ts", "live_runs"}
    first = await client.command({"type": "threads", "limit": 2})
    assert [t["thread"] for t in first["threads"]] == ["main", "busy"]
    rest = await client.command({"type": "threads", "before": first["next"], "limit": 2})
    assert ([t["thread"] for t in rest["threads"]], rest["next"]) == (["old"], None)
    await client.close()


@run_async
async def test_bad_thread_fields_are_bad_requests(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    for frame in (
        {"type": "say", "id": "a", "text": "x", "thread": "has space"},
        {"type": "start_run", "id": "b", "agent": "demo", "thread": ""},
        {"type": "history", "id": "c", "limit": 501},
        {"type": "history", "id": "d", "thread": 7},
        {"type": "threads", "id": "e", "limit": 0},
        {"type": "threads", "id": "f", "before": "x"},
    ):
        answer = await client.command(frame)
        assert (answer["type"], answer["code"]) == ("error", "bad_request"), (frame, answer)
    ping = await client.command({"type": "ping", "id": "p"})
    assert ping["type"] == "pong"  # the socket stays open
    await client.close()


@run_async
async def test_agui_commits_only_the_messages_the_thread_lacks(server: Server, user: str) -> None:
    body = run_input("add 2 and 40 please", message_id="u1")
    first = await post(server, user, body)
    frames = await first.to_end()
    await first.close()
    assert frames[0].event["threadId"] == body["threadId"]
    # the client's next request carries the whole conversation: only the new message commits
    history = [
        *body["messages"],
        {"id": "a1", "role": "assistant", "content": "42"},
    ]
    again = run_input("and 3 more?", thread=body["threadId"], before=history, message_id="u2")
    second = await post(server, user, again)
    await second.to_end()
    await second.close()
    client = await Client.open(server, user, resume_from=0)
    assert client.welcome is not None
    await client.wait_for(seq_is(client.welcome["head_seq"]))
    users = [e for e in client.events if e["event"] == "message" and e["data"]["role"] == "user"]
    assert [(m["data"]["message_id"], m["data"]["text"]) for m in users] == [
        ("u1", "add 2 and 40 please"),
        ("u2", "and 3 more?"),
    ]
    assert {m["thread"] for m in users} == {body["threadId"]}
    # the same messages again answer nothing: a 400 that says so, and nothing is committed
    repeat = await request(server, "POST", "/agui", headers=auth(user), body=again)
    assert repeat.status == 400
    assert "already" in repeat.json()["message"]
    head = client.welcome["head_seq"]
    after = await Client.open(server, user)
    assert after.welcome is not None
    assert after.welcome["head_seq"] == head
    await client.close()
    await after.close()


@run_async
async def test_ws_runs_carry_their_thread_as_thread_id(server: Server, user: str) -> None:
    ws = await Client.open(server, user)
    async with (
        await events(server, user, thread="t-1") as thread_only,
        await events(server, user) as everything,
    ):
        other = await ws.say("hello main", agent="demo")
        run = await ws.say("hello 1 2", agent="demo", thread="t-1")
        await everything.until_end(other)
        await everything.until_end(run)
        await thread_only.until_end(run)
        mine = thread_only.checker.of_run(run)
        seen_runs = {f.run for f in thread_only.frames if f.run is not None}
        main = everything.checker.of_run(other)
    assert (mine[0].type, mine[0].event["threadId"], mine[0].event["runId"]) == (
        "RUN_STARTED",
        "t-1",
        run,
    )
    assert seen_runs == {run}  # the other thread's run is not on the thread's stream
    assert main[0].event["threadId"] == "main"
    await ws.close()
