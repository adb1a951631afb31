"""``delete_thread`` at the wire (docs/protocol.md, "Deleting a thread, retention, erasure"),
through real sockets against ``netra-actors serve`` and the ASGI adapter: its ``ack``, the one
``thread_deleted`` event every socket of the user gets, ``erased`` placeholders at the same seqs
in a later resume and in ``history``, and its bad requests."""

from __future__ import annotations

from gwkit import Client, Server, run_async


@run_async
async def test_delete_thread_acks_and_later_replays_show_placeholders(
    server: Server, user: str
) -> None:
    client = await Client.open(server, user)
    watcher = await Client.open(server, user)
    run_id = await client.say("private words", agent="demo", thread="work")
    assert await client.wait_run_end(run_id) == "completed"
    kept = await client.say("hello", agent="demo")
    assert await client.wait_run_end(kept) == "completed"
    work_seqs = [e["seq"] for e in client.events if e.get("thread") == "work"]
    head = client.events[-1]["seq"]
    ack = await client.command({"type": "delete_thread", "id": "d1", "thread": "work"})
    assert ack == {"type": "ack", "id": "d1"}
    for socket in (client, watcher):
        deleted = await socket.wait_for(lambda e: e["event"] == "thread_deleted")
        assert deleted["seq"] == head + 1
        assert deleted["data"] == {"thread": "work", "reason": "deleted"}
    resumed = await Client.open(server, user, resume_from=0)
    await resumed.wait_for(lambda e: e["seq"] == head + 1)
    assert [e["seq"] for e in resumed.events] == list(range(1, head + 2))  # no gap
    placeholders = [e for e in resumed.events if e["seq"] in work_seqs]
    assert {(e["event"], str(e["data"])) for e in placeholders} == {("erased", "{}")}
    assert "private words" not in str(resumed.events)
    page = await client.command({"type": "history", "before_seq": head + 2, "limit": 500})
    assert page["events"] == resumed.events
    listed = await client.command({"type": "threads"})
    assert [t["thread"] for t in listed["threads"]] == ["main"]
    for socket in (client, watcher, resumed):
        await socket.close()


@run_async
async def test_delete_thread_needs_a_thread(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    for frame in (
        {"type": "delete_thread", "id": "a"},
        {"type": "delete_thread", "id": "b", "thread": "has space"},
    ):
        answer = await client.command(frame)
        assert (answer["type"], answer["code"]) == ("error", "bad_request"), answer
    await client.close()
