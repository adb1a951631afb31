"""AG-UI over HTTP (docs/protocol.md, "AG-UI over HTTP") through real sockets, against
``netra-actors serve`` and the ASGI adapter under uvicorn (the ``server`` fixture runs each test
on both), and dedicated servers where a scenario needs flags or a restart.

Every frame every test receives is validated against the ``ag-ui-protocol`` models (no extra
fields) and checked against the AG-UI ordering rules per run and the SSE id rules as it arrives
(``aguikit.StreamChecker``); the tests add what each scenario must show.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import trio
from aguikit import (
    SseFrame,
    StreamChecker,
    auth,
    check,
    customs,
    events,
    id_key,
    of_type,
    post,
    replay,
    request,
    run_input,
)
from gwkit import SECRET, Client, Server, UvicornServer, event_is, run_async, seq_is, token

from netra_actors import Delta, Event
from netra_actors.gateway import mint_token
from netra_actors.gateway._agui import AguiMapper
from netra_actors.gateway._agui_stream import KEEPALIVE, SseStream
from netra_actors.gateway._tokens import TokenClaims


async def committed(server: Server, user: str) -> list[dict[str, Any]]:
    """The user's committed events, over the WebSocket protocol (``resume_from`` 0)."""
    client = await Client.open(server, user, resume_from=0)
    assert client.welcome is not None
    head = client.welcome["head_seq"]
    if head:
        await client.wait_for(seq_is(head))
    await client.close()
    return client.events


def bare(frames: list[SseFrame], seq: int) -> SseFrame:
    return next(f for f in frames if f.id == str(seq))


def group(frames: list[SseFrame], seq: int) -> list[SseFrame]:
    return [f for f in frames if f.id is not None and id_key(f.id)[0] == seq]


def durable(frames: list[SseFrame]) -> list[SseFrame]:
    """The frames with an SSE id: without the ``RUN_STARTED`` that opens a resumed stream."""
    return [f for f in frames if f.id is not None]


# -- (a) POST /agui with the demo agent -------------------------------------------------------


@run_async
async def test_post_streams_the_run_as_agui_events(server: Server, user: str) -> None:
    body = run_input("add 2 and 40 please")
    stream = await post(server, user, body)
    frames = await stream.to_end()  # the server ends the response after RUN_FINISHED
    await stream.close()
    run = frames[0].run
    assert run is not None
    assert all(f.run == run for f in frames)
    started, finished = frames[0].event, frames[-1].event
    assert started["type"] == "RUN_STARTED"
    assert (started["threadId"], started["runId"]) == (body["threadId"], body["runId"])
    assert finished["type"] == "RUN_FINISHED"
    assert (finished["threadId"], finished["runId"]) == (body["threadId"], body["runId"])
    assert finished["outcome"] == {"type": "success"}
    # the POST echoes none of its own messages: the client shows them already
    assert not any(f.event.get("role") == "user" for f in frames)

    history = [e for e in await committed(server, user) if e["run_id"] == run]
    by_seq = {e["seq"]: e for e in history}
    # every committed event of the run has its group, ending with the bare seq
    assert sorted({id_key(f.id)[0] for f in frames if f.id}) == sorted(by_seq)
    for frame in frames:
        if frame.id is not None:
            assert frame.event["timestamp"] == int(by_seq[frame.seq or 0]["ts"] * 1000)
    # the user's message: RUN_STARTED is its group; it carries the AG-UI ids (data.agui)
    user_message = history[0]
    assert user_message["event"] == "message"
    assert user_message["data"]["role"] == "user"
    assert user_message["data"]["agui"] == {"threadId": body["threadId"], "runId": body["runId"]}
    assert user_message["data"]["text"] == "add 2 and 40 please"
    assert user_message["data"]["message_id"] == body["messages"][-1]["id"]
    k = user_message["seq"]
    assert [(f.id, f.type) for f in group(frames, k)] == [(str(k), "RUN_STARTED")]
    # a replay does carry it, under the client's id
    replayed = await replay(server, user, str(k - 1), frames[-1].seq or 0)
    assert [(f.id, f.type) for f in group(replayed, k)][1:] == [
        (f"{k}.2", "TEXT_MESSAGE_START"),
        (f"{k}.3", "TEXT_MESSAGE_CONTENT"),
        (str(k), "TEXT_MESSAGE_END"),
    ]
    assert group(replayed, k)[1].event["messageId"] == body["messages"][-1]["id"]
    # the answer: streamed (provisional START and CONTENT, no id), ended by the committed message
    (answer,) = [e for e in history if e["event"] == "message" and e["data"]["role"] == "assistant"]
    mid = answer["data"]["message_id"]
    text = stream.checker.text[mid]
    assert text == answer["data"]["text"]
    provisional = [f for f in frames if f.id is None]
    assert [f.type for f in provisional][:2] == ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]
    assert len(of_type(provisional, "TEXT_MESSAGE_CONTENT")) >= 2
    assert all("seq" not in f.event["metadata"]["netra"] for f in provisional)
    # committed with the thinking staged before it: the thinking showed after the streamed
    # text, so two snapshots move the message after it, to its committed place (as a replay)
    ended = [f.type for f in group(frames, answer["seq"])]
    assert ended[-3:] == ["TEXT_MESSAGE_END", "MESSAGES_SNAPSHOT", "MESSAGES_SNAPSHOT"]
    drop, add = group(frames, answer["seq"])[-2:]
    added = [m["id"] for m in add.event["messages"]]
    assert added[-1] == mid
    assert [m["id"] for m in drop.event["messages"]] == added[:-1]
    thought = add.event["messages"][-2]
    assert thought["role"] == "reasoning"
    # the tool call
    (executing,) = [e for e in history if e["event"] == "tool_executing"]
    (completed,) = [e for e in history if e["event"] == "tool_completed"]
    call = executing["data"]["call_id"]
    holder, *tool = group(frames, executing["seq"])[1:]
    assert [f.type for f in tool] == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"]
    assert tool[0].event["toolCallName"] == executing["data"]["tool"] == "word_stats"
    assert {f.event["toolCallId"] for f in tool} == {call}
    # in an assistant message of its own (parentMessageId), opened and ended just before
    assert holder.type == "TEXT_MESSAGE_END"
    assert tool[0].event["parentMessageId"] == holder.event["messageId"] == f"{call}.call"
    assert json.loads(tool[1].event["delta"]) == executing["data"]["args"]
    (result,) = group(frames, completed["seq"])
    assert result.type == "TOOL_CALL_RESULT"
    assert result.event["messageId"] == f"{call}.result"
    assert result.event["toolCallId"] == call
    assert json.loads(result.event["content"]) == completed["data"]["result"]
    # thinking: a reasoning span of one reasoning message
    for event in [e for e in history if e["event"] == "agent_thinking"]:
        assert [f.type for f in group(frames, event["seq"])] == [
            "REASONING_START",
            "REASONING_MESSAGE_START",
            "REASONING_MESSAGE_CONTENT",
            "REASONING_MESSAGE_END",
            "REASONING_END",
        ]
        assert group(frames, event["seq"])[2].event["delta"] == event["data"]["text"]
    # RUN_FINISHED.result: the run's result
    (completed_agent,) = [e for e in history if e["event"] == "agent_completed"]
    assert finished["result"] == completed_agent["data"]["result"]
    # everything else is a CUSTOM netra.<event> with the v1 data as value
    for event in history:
        if event["event"] in ("run_state", "agent_started", "agent_completed"):
            if event["event"] == "run_state" and event["data"]["state"] == "completed":
                continue
            (custom,) = group(frames, event["seq"])
            assert custom.event["name"] == f"netra.{event['event']}"
            assert custom.event["value"] == event["data"]


# -- (b) rollback, (d) failure, (i) live-only stream ------------------------------------------


@run_async
async def test_a_rollback_closes_what_its_attempt_left_open(server: Server, user: str) -> None:
    ws = await Client.open(server, user)
    async with await events(server, user) as live:
        run = await ws.start("crashy", {"crash_times": 1, "stream": True})
        await live.until_end(run)
        frames = live.checker.of_run(run)
    # the stream began before the run: RUN_STARTED is in the group of its first event
    assert (frames[0].type, frames[0].id) == ("RUN_STARTED", f"{frames[1].seq}.1")
    assert (frames[0].event["threadId"], frames[0].event["runId"]) == ("main", run)  # its thread
    (rollback,) = customs(frames, "netra.run_rolled_back")
    assert rollback.event["value"]["attempt"] == 1
    assert rollback.event["value"]["will_restart"]
    k = rollback.seq
    assert k is not None
    rolled = group(frames, k)
    assert [(f.id, f.type) for f in rolled] == [(f"{k}.1", "TEXT_MESSAGE_END"), (str(k), "CUSTOM")]
    retracted = rolled[0].event["messageId"]
    opened = [f for f in frames if f.id is None and f.event.get("messageId") == retracted]
    assert opened[0].type == "TEXT_MESSAGE_START"
    assert "crash" in live.checker.text[retracted]
    assert frames[-1].type == "RUN_FINISHED"
    assert frames[-1].event["outcome"] == {"type": "success"}
    answer = of_type(frames, "TEXT_MESSAGE_END")[-1]
    assert live.checker.text[answer.event["messageId"]] == "Succeeded on attempt 2."

    # replayed, the rollback's group is the CUSTOM alone (nothing provisional is stored) …
    head = frames[-1].seq
    assert head is not None
    full = await replay(server, user, "0", head)
    assert [(f.id, f.type) for f in group(full, k)] == [(str(k), "CUSTOM")]
    assert bare(full, k) == bare(frames, k)
    # … so resuming from the live stream's k.1 gives the bare k, then what follows
    index = [f.id for f in full].index(str(k))
    got = await replay(
        server,
        user,
        f"{k}.1",
        head,
        checker=StreamChecker(resumed=f"{k}.1", open_runs={run: ("main", run)}),
    )
    # (a stream resumed in the middle of a run opens with that run's RUN_STARTED, no SSE id)
    assert (got[0].type, got[0].id) == ("RUN_STARTED", None)
    assert got[1:] == full[index:]


@run_async
async def test_a_run_that_keeps_crashing_is_a_run_error(server: Server, user: str) -> None:
    ws = await Client.open(server, user)
    async with await events(server, user) as live:
        run = await ws.start("crashy", {"crash_times": 10})
        end = await live.until_end(run)
    assert end.event["type"] == "RUN_ERROR"
    assert end.event["code"] == "failed"
    assert end.event["message"].startswith("the run ended failed")
    rollbacks = customs(live.checker.of_run(run), "netra.run_rolled_back")
    assert [f.event["value"]["will_restart"] for f in rollbacks] == [True, True, True, False]


@run_async
async def test_a_live_stream_interleaves_runs_and_questions(server: Server, user: str) -> None:
    ws = await Client.open(server, user)
    before = await ws.say("before the stream")
    await ws.wait_run_end(before)
    head = ws.events[-1]["seq"]
    async with await events(server, user) as live:
        runs = [
            await ws.say("one two three"),
            await ws.start("slow", {"seconds": 0.6}),
            await ws.start("crashy", {"crash_times": 1, "stream": True}),
            await ws.start("ask", "Your name?"),
        ]
        posted = await post(server, user, run_input("posted", agent="demo"))
        await ws.wait_for(event_is(runs[3], "input_requested"))
        answer = await ws.command(
            {"type": "send_input", "id": "i", "run_id": runs[3], "input": "Bob"}
        )
        assert answer["type"] == "ack"
        await posted.to_end()
        await posted.close()
        runs.append(posted.frames[0].run or "")
        for run in runs:
            await live.until_end(run)
        frames = live.frames
    # only events committed after the request, and every run whole
    assert frames[0].id is not None
    assert id_key(frames[0].id)[0] == head + 1
    assert before not in {f.run for f in frames}
    for run in runs:
        assert live.checker.of_run(run)[0].type == "RUN_STARTED"
        assert live.checker.of_run(run)[0].id is not None  # not joined: a real group member
    assert live.checker.started[runs[-1]] == (
        posted.frames[0].event["threadId"],
        posted.frames[0].event["runId"],
    )
    order = [f.run for f in frames]
    assert any(
        order[i] != order[i + 1] and order[i + 1] in order[:i] for i in range(len(order) - 1)
    ), "runs did not interleave"
    (asked,) = customs(frames, "netra.input_requested")
    assert asked.event["value"]["prompt"] == "Your name?"
    assert asked.run == runs[3]
    (given,) = customs(frames, "netra.run_input")
    assert given.event["value"] == {"input": "Bob"}
    answers = [f for f in live.checker.of_run(runs[3]) if f.type == "TEXT_MESSAGE_END"]
    assert "Bob" in live.checker.text[answers[-1].event["messageId"]]


# -- (c) cancellation, 409 busy, a live-only stream joining a run -----------------------------


@run_async
async def test_busy_join_and_cancel_a_posted_run(server: Server, user: str) -> None:
    body = run_input("take your time", agent="slow")  # a string input: slow runs 5 s
    posted = await post(server, user, body)
    await posted.until(lambda f: f.type == "REASONING_MESSAGE_CONTENT")
    run = posted.frames[0].run
    assert run is not None
    # if_busy reject while that run is live: 409, nothing committed
    busy = await request(
        server, "POST", "/agui", headers=auth(user), body=run_input("no", if_busy="reject")
    )
    assert busy.status == 409
    assert busy.json()["error"] == "busy"
    # a live-only stream joining the run: a provisional RUN_STARTED with the POST's ids
    async with await events(server, user) as joined:
        first = await joined.until(lambda f: f.run == run)
        assert (first.type, first.id) == ("RUN_STARTED", None)
        assert (first.event["threadId"], first.event["runId"]) == (body["threadId"], body["runId"])
        ws = await Client.open(server, user)
        assert (await ws.command({"type": "cancel_run", "id": "c", "run_id": run}))["type"] == "ack"
        for stream in (posted, joined):
            end = await stream.until_end(run)
            assert end.event["type"] == "RUN_FINISHED"
            assert end.event["outcome"] == {"type": "cancelled"}
            assert (end.event["threadId"], end.event["runId"]) == (body["threadId"], body["runId"])
            (rollback,) = customs(stream.checker.of_run(run), "netra.run_rolled_back")
            assert rollback.event["value"]["reason"] == "cancelled"
    await posted.to_end()
    await posted.close()
    messages = [e for e in await committed(server, user) if e["event"] == "message"]
    assert [m["data"]["text"] for m in messages] == ["take your time"]  # the 409 committed nothing


# -- (e) resume, (h) a closed POST stream -------------------------------------------------------


@run_async
async def test_resume_with_last_event_id_is_exact(server: Server, user: str) -> None:
    body = run_input("resume me 1 2")
    posted = await post(server, user, body)
    # (h) close the POST stream early (in the middle of a group): the run goes on, completes
    tool_start = await posted.until(lambda f: f.type == "TOOL_CALL_START")
    await posted.close()
    run = tool_start.run
    assert run is not None
    ws = await Client.open(server, user, resume_from=0)
    assert await ws.wait_run_end(run) == "completed"
    crashy = await ws.start("crashy", {"crash_times": 1, "stream": True})
    await ws.wait_run_end(crashy)
    history = await committed(server, user)
    head = history[-1]["seq"]
    full = await replay(server, user, "0", head)
    assert [f.id for f in full if f.id and "." not in f.id] == [str(e["seq"]) for e in history]
    assert all(f.id is not None for f in full)  # a replay has nothing provisional
    for event in history:
        if event["event"] == "message" and event["data"]["role"] == "assistant":
            k = event["seq"]
            assert [(f.id, f.type) for f in group(full, k)] == [
                (f"{k}.1", "TEXT_MESSAGE_START"),
                (f"{k}.2", "TEXT_MESSAGE_CONTENT"),
                (str(k), "TEXT_MESSAGE_END"),
            ]
            assert group(full, k)[1].event["delta"] == event["data"]["text"]
    # the closed POST stream resumes from the last id it received (k.1), as one stream
    received = posted.frames[: posted.frames.index(tool_start) + 1]
    last = tool_start.id
    assert last is not None
    assert last.endswith(".3")  # (.1 and .2 open and end the call's assistant message)
    rest = await replay(server, user, last, head, checker=check(received))
    assert [(f.type, f.id) for f in rest[:1]] == [("RUN_STARTED", None)]  # mid-run: announced
    assert [f.type for f in rest[1:3]] == ["TOOL_CALL_ARGS", "TOOL_CALL_END"]
    assert rest[1:] == full[[f.id for f in full].index(last) + 1 :]
    end = next(f for f in rest if f.run == run and f.type == "RUN_FINISHED")
    assert (end.event["threadId"], end.event["runId"]) == (body["threadId"], body["runId"])
    # resume after every bare id and a few k.i: exactly the frames after it
    ids = [f.id for f in full if f.id is not None]
    # (at most 10: the trio gateway notices a closed idle stream only at its next keepalive, and
    # a user has at most 16 sockets; see test_a_closed_stream_frees_its_socket_slot)
    whole, parts = [i for i in ids if "." not in i], [i for i in ids if "." in i]
    points = whole[:: max(1, len(whole) // 6)][:6] + parts[:: max(1, len(parts) // 4)][:4]
    for point in points:
        index = ids.index(point)
        got = await replay(server, user, point, head, checker=check(full[: index + 1]))
        assert durable(got) == full[index + 1 :], point
        opened = [f for f in got if f.id is None]  # a RUN_STARTED when resumed inside a run
        assert [f.type for f in opened] in ([], ["RUN_STARTED"]), point
        assert got[: len(opened)] == opened
    # at the head: nothing, until a new event; then exactly what follows
    async with await events(server, user, str(head), checker=check(full)) as at_head:
        await at_head.quiet(0.3)
        run_3 = await ws.start("slow", {"seconds": 0})
        await at_head.until_end(run_3)
        assert at_head.frames[0].id == f"{head + 1}.1"
        assert {f.run for f in at_head.frames} == {run_3}


@run_async
async def test_a_closed_stream_frees_its_socket_slot(server: Server, user: str) -> None:
    """A client that goes away frees its stream's place among the user's 16 sockets at once
    (an EventSource reconnecting in a loop must not lock its user out)."""
    for n in range(20):
        answer = await request(server, "GET", "/agui/events", headers=auth(user), stream=True)
        assert answer.status == 200, f"stream {n + 1}: {answer.status} {answer.body!r}"


# -- (f) resume across a server restart, from netra-actors serve to uvicorn --------------------


def test_resume_across_a_restart_on_the_same_database(
    make_server: Callable[..., Server], tmp_path: Path, user: str
) -> None:
    first = make_server()
    second = UvicornServer(tmp_path)

    @run_async
    async def before() -> tuple[list[SseFrame], list[SseFrame], str]:
        posted = await post(first, user, run_input("before the restart"))
        await posted.to_end()
        await posted.close()
        head = posted.frames[-1].seq
        assert head is not None
        replayed = await replay(first, user, "0", head)
        # a stream is open while the server stops with a run still going
        ws = await Client.open(first, user)
        live = await events(first, user, str(head), checker=check(replayed))
        run = await ws.start("slow", {"seconds": 1.5})
        await live.until(lambda f: f.run == run and f.type == "REASONING_MESSAGE_CONTENT")
        await ws.close()
        # SIGTERM: drains (the run is handed over at its next commit), exits
        await asyncio.to_thread(first.terminate)
        await asyncio.wait_for(live._reader, 10)  # the server ended the stream
        frames = list(live.checker.frames)
        await live.close()
        return replayed, frames, run

    replayed, received, run = before()
    second.start()
    try:

        @run_async
        async def after() -> None:
            last = next(f.id for f in reversed(received) if f.id is not None)
            assert last is not None
            async with asyncio.timeout(15):  # the new server resumes the run and completes it
                while True:
                    history = await committed(second, user)
                    if history[-1]["run_id"] == run and history[-1]["data"].get("state") == (
                        "completed"
                    ):
                        break
                    await asyncio.sleep(0.1)
            head = history[-1]["seq"]
            assert history[-1]["run_id"] == run
            assert history[-1]["data"]["state"] == "completed"
            full = await replay(second, user, "0", head)
            assert full[: len(replayed)] == replayed  # the same frames, on another transport
            rest = await replay(second, user, last, head, checker=check(received))
            assert durable(rest) == full[[f.id for f in full].index(last) + 1 :]
            assert rest[-1].run == run
            assert rest[-1].type == "RUN_FINISHED"
            # and the new server goes on from there
            posted_2 = await post(second, user, run_input("after the restart"))
            await posted_2.to_end()
            await posted_2.close()
            assert posted_2.frames[0].id == f"{head + 1}"  # RUN_STARTED: no echo of the message

        after()
    finally:
        second.stop()


# -- (g) HTTP answers ---------------------------------------------------------------------------


@run_async
async def test_http_answers(server: Server, user: str) -> None:
    good = run_input("hi")
    for path, method, body in (("/agui", "POST", good), ("/agui/events", "GET", None)):
        expired = mint_token(SECRET.encode(), user, 1, now=time.time() - 10)
        foreign = mint_token(b"another-secret-0123456789abcdef", user, 60, now=time.time())
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": token(user)},
            {"Authorization": f"Bearer {expired}"},
            {"Authorization": f"Bearer {foreign}"},
        ):
            answer = await request(server, method, path, headers=headers, body=body)
            assert answer.status == 401, (path, headers, answer)
            assert answer.json()["error"] == "unauthorized"
    bad_bodies: list[Any] = [
        b"not json",
        b"[1]",
        {},
        {**good, "threadId": ""},
        {**good, "runId": 7},
        {**good, "messages": "hi"},
        {**good, "messages": [{"role": "assistant", "content": "x"}]},
        {**good, "messages": [{"id": "1", "role": "user", "content": 5}]},
        {**good, "tools": {}},
        {**good, "tools": [{"description": "a tool with no name"}]},
        {**good, "tools": [{"name": "t", "description": 1}]},
        {**good, "tools": [{"name": "t" * 200}]},
        {**good, "forwardedProps": {"agent": 1}},
        {**good, "forwardedProps": {"if_busy": "never"}},
        {**good, "forwardedProps": {"agent": "nobody"}},
        {**good, "messages": [{"id": "1", "role": "user", "content": "x" * 20000}]},
    ]
    for bad in bad_bodies:
        answer = await request(server, "POST", "/agui", headers=auth(user), body=bad)
        assert answer.status == 400, (bad, answer)
        assert answer.json()["error"] in ("bad_request", "unknown_agent"), bad
    # a user message as content parts is a RunAgentInput too
    parts = {
        **good,
        "messages": [
            {
                "id": "1",
                "role": "user",
                "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}],
            }
        ],
    }
    stream = await post(server, user, parts)
    await stream.to_end()
    await stream.close()
    (message,) = [e for e in await committed(server, user) if e["event"] == "message"][:1]
    assert (message["data"]["message_id"], message["data"]["text"]) == ("1", "hello")
    head = stream.frames[-1].seq
    assert head is not None
    for last in (
        "abc",
        "1.0",
        "-1",
        "1.",
        ".1",
        "1.2.3",
        str(head + 1),
        f"{head + 1}.1",
        "99999999999",
    ):
        answer = await request(
            server, "GET", "/agui/events", headers={**auth(user), "Last-Event-ID": last}
        )
        assert answer.status == 400, (last, answer)
        assert answer.json()["error"] == "bad_request"
    # Origin: refused unless on the allowlist; CORS for an allowed one
    evil = {"Origin": "http://evil.example"}
    for path, method in (("/agui", "POST"), ("/agui/events", "GET"), ("/agui", "OPTIONS")):
        answer = await request(
            server,
            method,
            path,
            headers={**auth(user), **evil},
            body=good if method == "POST" else None,
        )
        assert answer.status == 403, (path, method, answer)
        assert "access-control-allow-origin" not in answer.headers
    origin = f"http://127.0.0.1:{server.port}"
    for path in ("/agui", "/agui/events"):
        preflight = await request(
            server,
            "OPTIONS",
            path,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST" if path == "/agui" else "GET",
                "Access-Control-Request-Headers": "authorization, content-type, last-event-id",
            },
        )
        assert preflight.status in (200, 204), preflight
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "last-event-id"} <= allowed
    refused = await request(server, "POST", "/agui", headers={"Origin": origin}, body=good)
    assert refused.status == 401
    assert refused.headers["access-control-allow-origin"] == origin
    stream = await post(server, user, run_input("cors"), headers={"Origin": origin})
    assert stream.response.headers["access-control-allow-origin"] == origin
    assert stream.response.headers.get_list("cache-control") == ["no-store"]
    await stream.to_end()
    await stream.close()
    wrong = await request(server, "GET", "/agui", headers=auth(user))
    assert wrong.status == 405


def test_rate_and_stream_limits_answer_429(make_server: Callable[..., Server], user: str) -> None:
    srv = make_server(
        "--rate", "0.01", "--burst", "2", "--max-sockets-per-user", "2", "--ping-interval", "0.2"
    )

    @run_async
    async def scenario() -> None:
        for n in range(2):  # the burst: exactly two runs
            stream = await post(srv, user, run_input(f"run {n}"))
            await stream.to_end()
            await stream.close()
        limited = await request(srv, "POST", "/agui", headers=auth(user), body=run_input("three"))
        assert limited.status == 429
        assert limited.json()["error"] == "rate_limited"
        # streams count as the user's sockets
        async with await events(srv, user) as one, await events(srv, user) as two:
            over = await request(srv, "GET", "/agui/events", headers=auth(user))
            assert over.status == 429
            assert over.json()["error"] == "rate_limited"
            # an idle stream gets keepalive comments (every --ping-interval), no frames
            await asyncio.sleep(0.7)
            for stream in (one, two):
                assert len(stream.parser.comments) >= 2
                assert set(stream.parser.comments) == {"keepalive"}
                assert stream.frames == []
        # another user has a bucket of its own
        stream = await post(srv, f"{user}-2", run_input("mine"))
        await stream.to_end()
        await stream.close()

    scenario()


# -- the stream's sends (no sockets) --------------------------------------------------------


class _Deps:
    def __init__(self) -> None:
        self.config = type("Config", (), {"ping_interval": 0.001, "command_timeout": 5.0})()
        self.limits = self
        self.runtime = self
        self.store = None  # no per-run reads: a run's first event tells its AG-UI ids

    def close_socket(self, user: str, now: float | None = None) -> None:
        pass

    async def first_event(self, user: str, run_id: str) -> Event | None:
        return None


class _Subscription:
    def __init__(self) -> None:
        self.n = 0

    async def receive_items(self, max_items: int = 256) -> list[Event | Delta]:
        await trio.sleep(0.0005)
        self.n += 1
        return [Delta("r", 1, "m", self.n - 1, "x")]

    def close(self) -> None:
        pass


async def test_keepalive_and_frames_never_send_at_once() -> None:
    """The keepalive task and the pump share the transport's ``send``: never concurrently
    (``trio.SocketStream.send_all`` refuses a second sender)."""
    claims = TokenClaims(user="alice", expires_at=1e12)
    stream = SseStream(
        cast(Any, _Deps()),
        claims,
        cast(Any, _Subscription()),
        AguiMapper(),
        only_run=None,
        skip=None,
    )
    busy, overlaps = False, 0
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        nonlocal busy, overlaps
        overlaps += busy
        busy = True
        await trio.sleep(0.002)
        sent.append(data)
        busy = False

    with trio.move_on_after(0.3):
        await stream.run(send)
    assert overlaps == 0
    assert KEEPALIVE in sent
    assert any(b"TEXT_MESSAGE_CONTENT" in chunk for chunk in sent)
