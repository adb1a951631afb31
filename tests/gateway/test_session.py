"""Protocol v1 over real sockets: hello/welcome, every command and answer, event and batch frames,
the demo/crashy/slow agents, several sockets of one user, isolation between users."""

from __future__ import annotations

import asyncio
import uuid

from gwkit import Client, Server, assert_gapless, names, run_async


@run_async
async def test_welcome_then_demo_run_streams_every_event(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    assert client.welcome == {
        "type": "welcome", "protocol": 1, "user_id": user, "head_seq": 0, "features": ["deltas"],
    }  # fmt: skip
    run_id = await client.say("Add 2 and 40, please.")
    assert run_id.startswith("r_")
    assert await client.wait_run_end(run_id) == "completed"
    events = client.events
    assert_gapless(events)
    for event in events:
        assert set(event) == {"type", "seq", "run_id", "event", "ts", "data", "thread"}
        assert event["type"] == "event"
        assert isinstance(event["ts"], float)
    first = events[0]
    assert first["event"] == "message"
    assert first["data"]["message_id"].startswith("m_")
    assert first["data"] == {
        "role": "user",
        "text": "Add 2 and 40, please.",
        "message_id": first["data"]["message_id"],
    }
    assert first["run_id"] == run_id
    seen = names(client.run_events(run_id))
    for name in ("agent_started", "agent_thinking", "tool_executing", "tool_completed",
                 "message", "agent_completed"):  # fmt: skip
        assert name in seen, (name, seen)
    tool = next(e for e in events if e["event"] == "tool_executing")
    assert {"tool", "args", "call_id"} <= set(tool["data"])
    done = next(e for e in events if e["event"] == "tool_completed")
    assert done["data"]["call_id"] == tool["data"]["call_id"]
    assert "result" in done["data"]
    answer = [e for e in events if e["event"] == "message" and e["data"]["role"] == "assistant"]
    assert answer
    assert "42" in answer[0]["data"]["text"]
    states = [e["data"]["state"] for e in events if e["event"] == "run_state"]
    assert states == ["pending", "starting", "running", "completing", "completed"]
    assert next(e["data"]["previous"] for e in events if e["event"] == "run_state") is None
    await client.close()


@run_async
async def test_commands_answer_with_their_id(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    pong = await client.command({"type": "ping", "id": "p1"})
    assert pong == {"type": "pong", "id": "p1"}
    assert await client.command({"type": "ping"}) == {"type": "pong"}
    # an answer precedes every event committed while its command ran
    await client.send({"type": "say", "id": "first", "text": "hi"})
    ack = await client.next_frame()
    assert ack["type"] == "ack"
    assert ack["id"] == "first"
    assert await client.wait_run_end(ack["run_id"]) == "completed"
    run_id = await client.start("demo", "hello there")
    assert await client.wait_run_end(run_id) == "completed"
    runs = await client.command({"type": "get_runs", "id": "g1"})
    assert runs["type"] == "runs"
    assert runs["id"] == "g1"
    assert runs["head_seq"] == client.events[-1]["seq"]
    assert [r["run_id"] for r in runs["runs"]] == [run_id, ack["run_id"]]
    info = runs["runs"][0]
    assert info["agent"] == "demo"
    assert info["state"] == "completed"
    await client.close()


@run_async
async def test_crashy_restarts_with_visible_rollbacks(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    run_id = await client.start("crashy", {"crash_times": 2})
    assert await client.wait_run_end(run_id) == "completed"
    events = client.run_events(run_id)
    rollbacks = [e["data"] for e in events if e["event"] == "run_rolled_back"]
    assert [r["attempt"] for r in rollbacks] == [1, 2]
    assert all(r["reason"] == "crash" and r["will_restart"] is True for r in rollbacks)
    assert all(isinstance(r["error"], str) and r["error"] for r in rollbacks)
    # Staged events of crashed attempts are never delivered: only attempt 3 thinks.
    thinking = [e["data"]["text"] for e in events if e["event"] == "agent_thinking"]
    assert thinking == ["Attempt 3: staging work."]
    started = [e["data"]["attempt"] for e in events if e["event"] == "agent_started"]
    assert started == [1, 2, 3]
    assert_gapless(client.events)


@run_async
async def test_crashy_past_the_restart_limit_fails(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    run_id = await client.start("crashy", {"crash_times": 9})
    assert await client.wait_run_end(run_id, within=30) == "failed"
    rollbacks = [e["data"] for e in client.run_events(run_id) if e["event"] == "run_rolled_back"]
    assert rollbacks[-1]["will_restart"] is False
    assert all(r["will_restart"] for r in rollbacks[:-1])
    # the rollback comes before the terminal run_state
    events = client.run_events(run_id)
    assert names(events)[-2:] == ["run_rolled_back", "run_state"]


@run_async
async def test_cancel_slow_run_then_cancel_again_is_illegal(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    run_id = await client.start("slow", {"seconds": 30})
    await client.wait_for(lambda e: e["run_id"] == run_id and e["event"] == "agent_thinking")
    answer = await client.command({"type": "cancel_run", "id": "c1", "run_id": run_id})
    assert answer == {"type": "ack", "id": "c1"}
    assert await client.wait_run_end(run_id) == "cancelled"
    events = client.run_events(run_id)
    rolled = [e for e in events if e["event"] == "run_rolled_back"]
    assert len(rolled) == 1
    assert rolled[0]["data"]["reason"] == "cancelled"
    assert rolled[0]["data"]["will_restart"] is False
    assert names(events)[-2:] == ["run_rolled_back", "run_state"]
    again = await client.command({"type": "cancel_run", "id": "c2", "run_id": run_id})
    assert again["type"] == "error"
    assert again["code"] == "illegal_state"
    assert again["id"] == "c2"


@run_async
async def test_two_sockets_of_one_user_get_identical_streams(server: Server, user: str) -> None:
    a = await Client.open(server, user)
    b = await Client.open(server, user)
    assert a.welcome == b.welcome
    run_1 = await a.say("one two three")
    run_2 = await b.start("crashy", {"crash_times": 1})
    for client in (a, b):
        await client.wait_run_end(run_1)
        await client.wait_run_end(run_2)
    # read both up to the same head
    runs = await a.command({"type": "get_runs", "id": "g"})
    head = runs["head_seq"]
    for client in (a, b):
        await client.wait_for(lambda e: e["seq"] == head)
    assert a.events == b.events
    assert_gapless(a.events)


@run_async
async def test_users_are_isolated(server: Server, user: str) -> None:
    other = f"other-{uuid.uuid4().hex[:8]}"
    alice = await Client.open(server, user)
    mallory = await Client.open(server, other)
    run_id = await alice.start("slow", {"seconds": 30})
    await alice.wait_for(lambda e: e["run_id"] == run_id and e["event"] == "agent_thinking")
    stolen = await mallory.command({"type": "cancel_run", "id": "x", "run_id": run_id})
    made_up = await mallory.command({"type": "cancel_run", "id": "x", "run_id": "r_" + "0" * 26})
    assert stolen == made_up == {
        "type": "error", "id": "x", "code": "unknown_run", "message": stolen["message"],
    }  # fmt: skip
    runs = await mallory.command({"type": "get_runs"})
    assert runs["runs"] == []
    assert runs["head_seq"] == 0
    # Mallory saw nothing of Alice's; Alice's run is untouched and cancellable by her.
    ack = await alice.command({"type": "cancel_run", "id": "mine", "run_id": run_id})
    assert ack["type"] == "ack"
    await alice.wait_run_end(run_id)
    with_pong = await mallory.command({"type": "ping", "id": "sync"})
    assert with_pong["type"] == "pong"
    assert mallory.events == []
    assert all(e["run_id"] == run_id for e in alice.events)


@run_async
async def test_backlog_is_coalesced_into_batches(server: Server, user: str) -> None:
    writer = await Client.open(server, user)
    run_ids = [await writer.say(f"message {i}") for i in range(5)]
    for run_id in run_ids:
        await writer.wait_run_end(run_id)
    head = writer.events[-1]["seq"]
    # A resuming socket gets the backlog: coalesced into batch frames.
    reader = await Client.open(server, user, resume_from=0)
    await reader.wait_for(lambda e: e["seq"] == head)
    assert reader.batches >= 1
    assert reader.events == writer.events
    # Live events on an idle socket are never held back to coalesce: a unit of work that
    # commits several events arrives at once, and a lone event arrives as an event frame.
    run_id = await writer.start("slow", {"seconds": 2.5})
    frame = await reader.next_frame(within=2)
    assert frame["type"] in ("event", "batch")
    assert next(e["seq"] for e in reader.events[-len(frame.get("events", [frame])) :]) == head + 1
    await reader.wait_for(lambda e: e["run_id"] == run_id and e["event"] == "agent_thinking")
    last = reader.events[-1]["seq"]
    while True:
        frame = await reader.next_frame(within=3)
        if frame["type"] == "event" and frame["event"] == "agent_thinking":
            assert frame["seq"] > last
            break
    await reader.wait_run_end(run_id)


@run_async
async def test_concurrent_users_each_get_their_own_gapless_stream(server: Server) -> None:
    users = [f"c-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    clients = [await Client.open(server, u) for u in users]

    async def drive(client: Client) -> list[str]:
        run_ids = [await client.say(f"hello {i}") for i in range(3)]
        return [await client.wait_run_end(r) for r in run_ids]

    results = await asyncio.gather(*(drive(c) for c in clients))
    assert all(states == ["completed"] * 3 for states in results)
    for client in clients:
        assert_gapless(client.events)
        assert len({e["run_id"] for e in client.events}) == 3
