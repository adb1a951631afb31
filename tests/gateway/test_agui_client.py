"""The stock AG-UI client against netra: ``@ag-ui/client`` 1.0 ``HttpAgent`` (what CopilotKit
runs), in Node, on both servers (``netra-actors serve`` and the ASGI adapter).

Each test drives the client through a scenario (``tests/agui_client/drive.mjs``) and asserts what
it ends up showing (``agent.messages``): equal to what the same client shows after replaying the
thread (``GET /agui/events?threadId=`` from ``Last-Event-ID: 0``). Every stream the client got is
checked by ``aguikit`` (the package's models, the ordering and id rules) and by
``ag-ui-validate``: no findings.

The client is installed by ``npm ci`` from ``tests/agui_client/package-lock.json`` (pinned
versions) into ``tests/agui_client/node_modules`` once; the tests skip, saying why, where Node
20+ or npm is missing or the install fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aguikit import StreamChecker, findings, parse_sse
from gwkit import Client, Server, UvicornServer, run_async, token

CLIENT_DIR = Path(__file__).resolve().parent.parent / "agui_client"
EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "agui_client"
NODE_MAJOR = 20


@pytest.fixture(scope="session")
def node() -> str:
    """The path of ``node`` once the pinned client is installed (skips when it cannot be)."""
    found, npm = shutil.which("node"), shutil.which("npm")
    if found is None or npm is None:
        pytest.skip("the stock AG-UI client needs Node.js 20+ and npm, which are not installed")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    major = version.stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < NODE_MAJOR:
        pytest.skip(f"the stock AG-UI client needs Node.js 20+, not {version.stdout.strip()}")
    for where in (CLIENT_DIR, EXAMPLE_DIR):
        lock = where / "package-lock.json"
        stamp = where / "node_modules" / ".package-lock.json"
        if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if done.returncode != 0:
                pytest.skip(f"npm ci in {where.name} failed: {done.stderr[-500:]}")
    return found


def test_the_node_example_runs_a_turn(node: str, server: Server, user: str) -> None:
    """examples/agui_client/turn.mjs, as docs/agui.md runs it."""
    env = {**os.environ, "NETRA_URL": server.http, "NETRA_TOKEN": token(user)}
    env["NETRA_THREAD"] = thread_id()
    done = subprocess.run(
        [node, "turn.mjs", "add 2 and 40 please"],
        cwd=EXAMPLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    messages = json.loads(done.stdout)
    assert messages[0]["role"] == "user"
    answers = [m["content"] for m in messages if m["role"] == "assistant" and m.get("content")]
    assert "add up to 42" in answers[-1]
    assert "add up to 42" in done.stderr  # streamed as it came


def drive(
    node: str, server: Server, user: str, thread: str, steps: list[dict[str, Any]]
) -> list[Any]:
    """Run the client through ``steps``; every stream it got must pass both checkers."""
    scenario = {"base": server.http, "token": token(user), "threadId": thread, "steps": steps}
    done = subprocess.run(
        [node, str(CLIENT_DIR / "drive.mjs")],
        input=json.dumps(scenario),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    for step, result in zip(steps, results, strict=True):
        frames = parse_sse(result["raw"].encode())
        resumed = step.get("lastEventId") if step["kind"] == "follow" else None
        StreamChecker(resumed=resumed if resumed != "0" else None).feed_all(frames)
        assert findings(frames) == [], step
        result["frames"] = frames
    return results


def shown(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a page shows of the client's messages (not the events' metadata)."""
    out = []
    for message in messages:
        kept = {k: v for k, v in message.items() if k not in ("metadata", "encryptedValue")}
        if "toolCalls" in kept:
            kept["toolCalls"] = [
                {k: v for k, v in c.items() if k != "metadata"} for c in kept["toolCalls"]
            ]
        out.append(kept)
    return out


def same(live: list[dict[str, Any]], replayed: list[dict[str, Any]]) -> None:
    """The client shows after a live run exactly what it shows after a replay: the same
    messages, in the same order (thinking committed with a streamed message included: it
    shows before the message, where the agent committed it)."""
    assert live == replayed


def head_of(server: Server, user: str) -> int:
    @run_async
    async def read() -> int:
        client = await Client.open(server, user)
        assert client.welcome is not None
        head: int = client.welcome["head_seq"]
        await client.close()
        return head

    return read()


def replay(node: str, server: Server, user: str, thread: str) -> list[dict[str, Any]]:
    """What the client shows after replaying the whole thread."""
    step = {"kind": "follow", "lastEventId": "0", "untilId": str(head_of(server, user))}
    (result,) = drive(node, server, user, thread, [step])
    assert result["error"] is None, result["error"]
    return shown(result["messages"])


def user_message(text: str) -> dict[str, Any]:
    return {"id": f"m-{uuid.uuid4().hex[:10]}", "role": "user", "content": text}


def run_step(*add: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"kind": "run", "runId": f"ar-{uuid.uuid4().hex[:8]}", "add": list(add), **params}


def thread_id() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def test_plain_runs_two_turns_with_history(node: str, server: Server, user: str) -> None:
    thread = thread_id()
    first, second = user_message("hello 1 2"), user_message("add 2 and 40 please")
    one, two = drive(node, server, user, thread, [run_step(first), run_step(second)])
    assert one["error"] is None
    assert two["error"] is None
    messages = shown(two["messages"])
    users = [m for m in messages if m["role"] == "user"]
    assert users == [first, second]  # each once, under the client's ids: no echo
    tools = [m for m in messages if m.get("toolCalls")]
    assert [c["function"]["name"] for m in tools for c in m["toolCalls"]] == ["word_stats"] * 2
    assert [m["role"] for m in messages].count("tool") == 2
    assert any(m["role"] == "reasoning" for m in messages)  # agent_thinking: REASONING_*
    assert two["result"] is not None  # RUN_FINISHED.result: the run's result
    same(messages, replay(node, server, user, thread))
    # the stream of the second turn answered the second message only
    assert two["frames"][0].event["type"] == "RUN_STARTED"


def test_crash_and_restart_with_streamed_text(node: str, server: Server, user: str) -> None:
    thread = thread_id()
    props = {"agent": "crashy", "input": {"crash_times": 1, "stream": True}}
    (out,) = drive(node, server, user, thread, [run_step(user_message("go"), forwardedProps=props)])
    assert out["error"] is None
    kinds = [f.event["type"] for f in out["frames"]]
    assert "MESSAGES_SNAPSHOT" in kinds  # the retraction, as the stock client understands it
    messages = shown(out["messages"])
    assert not any("crash" in str(m.get("content")) for m in messages if m["role"] == "assistant")
    assert "Succeeded on attempt 2." in [m.get("content") for m in messages]
    same(messages, replay(node, server, user, thread))


def test_resume_inside_a_rollback_group_retracts_the_text(
    node: str, server: Server, user: str
) -> None:
    """A page that got the rollback's first frame (the END of the text it retracts) and not
    the snapshot resumes with ``Last-Event-ID: k.1``: it ends up showing what a replay shows."""
    thread = thread_id()
    props = {"agent": "crashy", "input": {"crash_times": 1, "stream": True}}
    said = user_message("go")
    (out,) = drive(node, server, user, thread, [run_step(said, forwardedProps=props)])
    frames = out["frames"]
    rollback = next(
        f
        for f in frames
        if f.type == "CUSTOM" and f.event["name"] == "netra.run_rolled_back" and f.id
    )
    k = rollback.seq
    first = next(f for f in frames if f.id == f"{k}.1")
    assert first.type == "TEXT_MESSAGE_END"
    retracted = first.event["messageId"]
    text = "".join(
        f.event["delta"]
        for f in frames
        if f.type == "TEXT_MESSAGE_CONTENT" and f.event["messageId"] == retracted
    )
    assert text
    held = [said, {"id": retracted, "role": "assistant", "content": text}]
    head = str(head_of(server, user))
    step = {"kind": "follow", "lastEventId": f"{k}.1", "untilId": head, "add": held}
    (resumed,) = drive(node, server, user, thread, [step])
    assert resumed["error"] is None, resumed["error"]
    kinds = [(f.type, f.id) for f in resumed["frames"]][:2]
    assert kinds == [("RUN_STARTED", None), ("MESSAGES_SNAPSHOT", f"{k}.2")]
    shown_now = shown(resumed["messages"])
    assert retracted not in [m["id"] for m in shown_now]
    same(shown_now, replay(node, server, user, thread))


def test_cancel_by_closing_the_stream(node: str, server: Server, user: str) -> None:
    thread = thread_id()
    props = {"agent": "slow", "onDisconnect": "cancel"}
    step = run_step(user_message("take your time"), forwardedProps=props)
    step["abortOn"] = "REASONING_MESSAGE_END"
    (out,) = drive(node, server, user, thread, [step])
    closed = time.monotonic()
    run = out["frames"][0].run

    @run_async
    async def ended() -> dict[str, Any]:
        client = await Client.open(server, user, resume_from=0)
        state = await client.wait_run_end(run)
        await client.close()
        return {"state": state, "at": time.monotonic()}

    end = ended()
    assert end["state"] == "cancelled"
    assert end["at"] - closed < 2.0  # Stop: cancelled within 2 s of the stream closing
    shown_after = replay(node, server, user, thread)
    assert [m["role"] for m in shown_after if m["role"] != "reasoning"] == ["user"]


def test_resume_in_the_middle_of_a_run(node: str, server: Server, user: str) -> None:
    thread = thread_id()
    step = run_step(user_message("take your time"), forwardedProps={"agent": "slow", "input": 1})
    step["abortOn"] = "REASONING_MESSAGE_END"  # the page closed: the run goes on
    (cut,) = drive(node, server, user, thread, [step])
    last = next(f.id for f in reversed(cut["frames"]) if f.id is not None)
    follow = {"kind": "follow", "lastEventId": last}
    (resumed,) = drive(node, server, user, thread, [follow])
    assert resumed["error"] is None  # the stock verifier takes a stream resumed mid-run
    frames = resumed["frames"]
    assert (frames[0].event["type"], frames[0].id) == ("RUN_STARTED", None)
    assert frames[0].event["runId"] == step["runId"]
    assert frames[-1].event["type"] == "RUN_FINISHED"
    everything = replay(node, server, user, thread)
    after = shown(resumed["messages"])
    assert after
    assert all(m in everything for m in after)


def test_interrupts_resolved_and_cancelled(node: str, server: Server, user: str) -> None:
    thread = thread_id()
    ask = run_step(user_message("?"), forwardedProps={"agent": "ask", "input": "Your name?"})
    (asked,) = drive(node, server, user, thread, [ask])
    assert asked["error"] is None
    (interrupt,) = asked["pendingInterrupts"]
    assert (interrupt["reason"], interrupt["message"]) == ("input_requested", "Your name?")
    end = asked["frames"][-1].event
    assert end["outcome"]["type"] == "interrupt"
    resume = [{"interruptId": interrupt["id"], "status": "resolved", "payload": "Bob"}]
    answer = run_step(*shown(asked["messages"]), resume=resume)  # the page, reloaded
    (answered,) = drive(node, server, user, thread, [answer])
    assert answered["error"] is None, answered["error"]
    started = answered["frames"][0].event
    assert (started["runId"], started["parentRunId"]) == (answer["runId"], ask["runId"])
    assert answered["pendingInterrupts"] == []
    texts = [m.get("content") for m in shown(answered["messages"]) if m["role"] == "assistant"]
    assert "You answered: Bob" in texts
    # a cancelled interrupt cancels the netra run
    ask_2 = run_step(user_message("??"), forwardedProps={"agent": "ask"})
    (asked_2,) = drive(node, server, user, thread, [ask_2])
    (pending,) = asked_2["pendingInterrupts"]
    cancel = run_step(
        *shown(asked_2["messages"]), resume=[{"interruptId": pending["id"], "status": "cancelled"}]
    )
    (cancelled,) = drive(node, server, user, thread, [cancel])
    assert cancelled["error"] is None, cancelled["error"]
    assert cancelled["frames"][-1].event["outcome"] == {"type": "cancelled"}
    everything = replay(node, server, user, thread)
    assert [m for m in everything if m["role"] == "user"] == [
        ask["add"][0],
        ask_2["add"][0],
    ]


def test_frontend_tools(node: str, server: Server, user: str) -> None:
    thread = thread_id()
    tools = [
        {"name": "get_weather", "description": "The weather here", "parameters": {}},
        {"name": "get_time", "description": "The time in the browser", "parameters": {}},
    ]
    props = {"agent": "browser"}  # the agent picks the offered tool the message names
    call = run_step(user_message("get_time, please"), tools=tools, forwardedProps=props)
    (called,) = drive(node, server, user, thread, [call])
    assert called["error"] is None
    assert called["frames"][-1].event["outcome"] == {"type": "success"}
    holder = shown(called["messages"])[-1]
    (tool_call,) = holder["toolCalls"]
    assert tool_call["function"] == {"name": "get_time", "arguments": "{}"}
    result = {"id": "tool-1", "role": "tool", "toolCallId": tool_call["id"], "content": "12:00"}
    steps = [run_step(*shown(called["messages"]), result, tools=tools)]
    (answered,) = drive(node, server, user, thread, steps)
    assert answered["error"] is None, answered["error"]
    messages = shown(answered["messages"])
    assert [m for m in messages if m["role"] == "user"] == [call["add"][0]]  # not run again
    assert messages[-1]["content"] == "Your get_time says: 12:00"
    same(messages, replay(node, server, user, thread))


def test_an_interrupt_survives_a_server_restart(
    node: str, make_server: Callable[..., Server], tmp_path: Path, user: str
) -> None:
    first = make_server()
    thread = thread_id()
    ask = run_step(user_message("?"), forwardedProps={"agent": "ask", "input": "Your name?"})
    (asked,) = drive(node, first, user, thread, [ask])
    (interrupt,) = asked["pendingInterrupts"]
    first.terminate()
    second = UvicornServer(tmp_path)
    second.start()
    try:
        resume = [{"interruptId": interrupt["id"], "status": "resolved", "payload": "Bob"}]
        steps = [run_step(*shown(asked["messages"]), resume=resume)]
        (answered,) = drive(node, second, user, thread, steps)
        assert answered["error"] is None, answered["error"]
        messages = shown(answered["messages"])
        said = [m["content"] for m in messages if m["role"] == "assistant" and m.get("content")]
        assert said[-1] == "You answered: Bob"
        same(messages, replay(node, second, user, thread))
    finally:
        second.stop()


def test_a_server_default_of_cancel_stops_a_run_whose_stream_closed(
    node: str, tmp_path: Path, user: str
) -> None:
    """``--agui-on-disconnect cancel``: a request that does not say still gets Stop."""
    srv = Server(tmp_path, "--agui-on-disconnect", "cancel").start()
    try:
        thread = thread_id()
        step = run_step(user_message("take your time"), forwardedProps={"agent": "slow"})
        step["abortOn"] = "REASONING_MESSAGE_END"
        (out,) = drive(node, srv, user, thread, [step])
        run = out["frames"][0].run

        @run_async
        async def ended() -> str:
            client = await Client.open(srv, user, resume_from=0)
            state: str = await client.wait_run_end(run)
            await client.close()
            return state

        assert ended() == "cancelled"
    finally:
        srv.stop()
