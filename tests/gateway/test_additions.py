"""The protocol's compatible additions over real sockets (``protocol-v1.md``, "Additions"):
``features``/``delta`` frames, ``send_input`` and the ``ask`` agent, ``if_busy`` and
``--if-busy``, and deltas never being stored or replayed.

The server is the real subprocess on a real SQLite file (``gwkit``); the client is the independent
``websockets`` library.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gwkit import (
    FRAME_TIMEOUT,
    SECRET,
    STARTUP_TIMEOUT,
    Client,
    Server,
    events_of,
    is_final_state,
    names,
    run_async,
    token,
)

from netra_actors._cli import main
from netra_actors._cli_parser import build_parser

HERE = Path(__file__).resolve().parent


# -- a client that also reads deltas ------------------------------------------------------------


class DeltaClient(Client):
    """A :class:`~gwkit.Client` whose ``hello`` may ask for features; keeps every event *and*
    delta it saw, in arrival order, in :attr:`items`."""

    def __init__(self, ws: Any) -> None:
        super().__init__(ws)
        self.items: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls,
        server: Server,
        user: str,
        *,
        features: Any = ("deltas",),
        resume_from: int | None = None,
    ) -> DeltaClient:
        client = await cls.open(server, hello=False)
        assert isinstance(client, DeltaClient)
        hello: dict[str, Any] = {"type": "hello", "protocol": 1, "token": token(user)}
        if features is not None:
            hello["features"] = list(features) if isinstance(features, tuple) else features
        if resume_from is not None:
            hello["resume_from"] = resume_from
        await client.send(hello)
        client.welcome = await client.next_frame()
        assert client.welcome["type"] == "welcome", client.welcome
        return client

    async def next_frame(self, within: float = FRAME_TIMEOUT) -> dict[str, Any]:
        frame = await super().next_frame(within)
        if frame["type"] == "delta":
            assert set(frame) == {"type", "run_id", "attempt", "message_id", "offset", "text"}
            self.items.append(frame)
        else:
            self.items.extend(events_of(frame))
        return frame

    async def reply(self, within: float = FRAME_TIMEOUT) -> dict[str, Any]:
        while True:
            frame = await self.next_frame(within)
            if frame["type"] not in ("event", "batch", "delta"):
                return frame

    def deltas(self, run_id: str | None = None) -> list[dict[str, Any]]:
        return [i for i in self.items if i["type"] == "delta" and run_id in (None, i["run_id"])]

    def index(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        return next(n for n, item in enumerate(self.items) if predicate(item))


def is_event(run_id: str, name: str, **data: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda i: (
        i["type"] == "event"
        and i["run_id"] == run_id
        and i["event"] == name
        and all(i["data"].get(k) == v for k, v in data.items())
    )


def check_stream(deltas: list[dict[str, Any]]) -> str:
    """The text of one message's deltas, checking they are contiguous from offset 0."""
    text = ""
    for delta in deltas:
        assert delta["offset"] == len(text), (delta, text)
        text += delta["text"]
    return text


def assistant_messages(client: Client, run_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in client.run_events(run_id)
        if e["event"] == "message" and e["data"]["role"] == "assistant"
    ]


class StreamServer(Server):
    """The example server with the test-only ``drip`` agent (``streamserver.py``)."""

    def start(self) -> StreamServer:
        env = dict(os.environ, NETRA_HOME=str(self.tmp_path / "home"), PYTHONUNBUFFERED="1")
        env.pop("NETRA_SECRET", None)
        # the package of this checkout (as ``-m`` would give), and the wrapper's directory
        paths = [str(HERE.parents[1]), str(HERE), env.get("PYTHONPATH")]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        cmd = [
            sys.executable, str(HERE / "streamserver.py"), "serve",
            "--port", str(self.port), "--db", str(self.db), "--secret", SECRET,
            *self.args,
        ]  # fmt: skip
        with self.log_path.open("ab") as err, self.out_path.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)  # polling the health endpoint, bounded by the deadline
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")


@pytest.fixture(scope="module")
def stream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServer]:
    srv = StreamServer(tmp_path_factory.mktemp("stream-server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# -- features and the v1 stream -----------------------------------------------------------------


@run_async
async def test_welcome_lists_features_for_every_client(server: Server, user: str) -> None:
    v1 = await Client.open(server, user)
    assert v1.welcome is not None
    assert "deltas" in v1.welcome["features"]
    assert all(isinstance(f, str) for f in v1.welcome["features"])
    asking = await DeltaClient.connect(server, user, features=["nope", "deltas", "nope"])
    assert asking.welcome == v1.welcome  # what the server offers, whatever was asked
    assert set(asking.welcome) == {"type", "protocol", "user_id", "head_seq", "features"}
    # unknown features are ignored; an empty list is fine
    for features in (["time-travel"], []):
        other = await DeltaClient.connect(server, user, features=features)
        assert await other.command({"type": "ping", "id": "p"}) == {"type": "pong", "id": "p"}


@pytest.mark.parametrize("features", ["deltas", ["deltas", 1], {"deltas": True}, 7, True])
def test_features_must_be_a_list_of_strings(server: Server, user: str, features: Any) -> None:
    @run_async
    async def scenario() -> None:
        client = await Client.open(server, hello=False)
        await client.send(
            {"type": "hello", "protocol": 1, "token": token(user), "features": features}
        )
        error = await client.next_frame()
        assert error["type"] == "error"
        assert error["code"] == "bad_request"
        assert "id" not in error
        assert await client.closed() == 4400

    scenario()


@run_async
async def test_without_features_the_stream_is_v1(server: Server, user: str) -> None:
    v1 = await Client.open(server, user)
    streaming = await DeltaClient.connect(server, user)
    run_1 = await v1.say("one two three")
    run_2 = await v1.start("crashy", {"crash_times": 1, "stream": True})
    for run_id in (run_1, run_2):
        await v1.wait_run_end(run_id)
        await streaming.wait_run_end(run_id)
    head = (await v1.command({"type": "get_runs", "id": "g"}))["head_seq"]
    await streaming.wait_for(lambda e: e["seq"] == head)
    assert streaming.deltas(run_1)  # deltas were there to be had
    assert streaming.deltas(run_2)
    assert {f["type"] for f in v1.frames} <= {"welcome", "event", "batch", "ack", "runs"}
    assert v1.events == [i for i in streaming.items if i["type"] == "event"]
    for event in v1.events:  # every message carries a message_id
        if event["event"] == "message":
            assert event["data"]["message_id"].startswith("m_")


# -- deltas -------------------------------------------------------------------------------------


@run_async
async def test_demo_streams_deltas_that_the_message_supersedes(server: Server, user: str) -> None:
    client = await DeltaClient.connect(server, user)
    await client.send({"type": "say", "id": "s1", "text": "Add 2 and 40, please."})
    ack = await client.next_frame()
    assert ack["type"] == "ack"
    assert ack["id"] == "s1"  # the ack precedes its run's deltas and events
    run_id = ack["run_id"]
    assert await client.wait_run_end(run_id) == "completed"
    [message] = assistant_messages(client, run_id)
    deltas = client.deltas(run_id)
    assert len(deltas) >= 2, deltas
    assert {d["message_id"] for d in deltas} == {message["data"]["message_id"]}
    assert {d["attempt"] for d in deltas} == {1}
    offsets = [d["offset"] for d in deltas]
    assert offsets == sorted(set(offsets))
    assert check_stream(deltas) == message["data"]["text"]
    assert "42" in message["data"]["text"]
    at_message = client.index(lambda i: i is message)
    assert all(client.items.index(d) < at_message for d in deltas)
    # the committed stream is what it was: gapless, and a message as in v1
    assert [e["seq"] for e in client.events] == list(range(1, len(client.events) + 1))
    assert set(message["data"]) == {"role", "text", "message_id"}


@run_async
async def test_deltas_of_a_rolled_back_attempt_precede_its_rollback(
    server: Server, user: str
) -> None:
    client = await DeltaClient.connect(server, user)
    run_id = await client.start("crashy", {"crash_times": 2, "stream": True})
    assert await client.wait_run_end(run_id) == "completed"
    deltas = client.deltas(run_id)
    assert {d["attempt"] for d in deltas} == {1, 2, 3}
    ids: set[str] = set()
    for attempt in (1, 2):
        mine = [d for d in deltas if d["attempt"] == attempt]
        rollback = client.index(is_event(run_id, "run_rolled_back", attempt=attempt))
        assert client.items[rollback]["data"]["reason"] == "crash"
        assert all(client.items.index(d) < rollback for d in mine)
        assert check_stream(mine)
        (message_id,) = {d["message_id"] for d in mine}
        ids.add(message_id)
    # the successful attempt streams under a new id, and its message supersedes the stream
    [message] = assistant_messages(client, run_id)
    last = [d for d in deltas if d["attempt"] == 3]
    assert check_stream(last) == message["data"]["text"] == "Succeeded on attempt 3."
    assert {d["message_id"] for d in last} == {message["data"]["message_id"]}
    ids.add(message["data"]["message_id"])
    assert len(ids) == 3
    at_message = client.index(lambda i: i is message)
    assert all(client.items.index(d) < at_message for d in last)
    # nothing of a rolled-back attempt was committed
    texts = [e["data"].get("text", "") for e in client.run_events(run_id)]
    assert not any("about to crash" in t for t in texts)


@run_async
async def test_a_socket_opened_mid_stream_gets_the_text_so_far(
    stream_server: StreamServer, user: str
) -> None:
    first = await DeltaClient.connect(stream_server, user)
    v1 = await Client.open(stream_server, user)
    run_id = await first.start("drip", {"parts": ["Hel", "lo, ", "wörld 😀"]})
    await first.wait_for(is_event(run_id, "input_requested"))
    assert check_stream(first.deltas(run_id)) == "Hello, wörld 😀"
    await v1.wait_for(is_event(run_id, "input_requested"))
    head = v1.events[-1]["seq"]
    # a reload in the middle of the answer: with or without resume_from
    late = await DeltaClient.connect(stream_server, user)
    resumed = await DeltaClient.connect(stream_server, user, resume_from=0)
    assert late.welcome is not None
    assert late.welcome["head_seq"] == head
    snapshot = await late.next_frame()
    assert snapshot["type"] == "delta"
    assert snapshot["offset"] == 0
    assert snapshot["text"] == "Hello, wörld 😀"
    assert snapshot["message_id"] == first.deltas(run_id)[0]["message_id"]
    assert snapshot["run_id"] == run_id
    assert snapshot["attempt"] == 1
    await resumed.wait_for(lambda e: e["seq"] == head)
    frame = await resumed.next_frame()  # right after the replay, before anything live
    assert frame == snapshot
    assert [i for i in resumed.items if i["type"] == "event"] == v1.events
    # the run goes on: every socket gets the rest, from where it is, then the message
    ack = await first.command({"type": "send_input", "id": "more", "run_id": run_id, "input": "!"})
    assert ack == {"type": "ack", "id": "more"}
    for client in (first, late, resumed):
        assert await client.wait_run_end(run_id) == "completed"
        [message] = assistant_messages(client, run_id)
        assert message["data"]["text"] == "Hello, wörld 😀!"
        assert check_stream(client.deltas(run_id)) == "Hello, wörld 😀!"
        at_message = client.index(lambda i, m=message: i is m)  # type: ignore[misc]
        assert all(client.items.index(d) < at_message for d in client.deltas(run_id))
    assert late.deltas(run_id)[-1]["offset"] == len("Hello, wörld 😀")


# -- send_input and the ask agent ---------------------------------------------------------------


@pytest.mark.parametrize("answer", ["forty-two", {"text": "forty-two"}])
def test_send_input_answers_the_ask_agent(server: Server, user: str, answer: Any) -> None:
    @run_async
    async def scenario() -> None:
        client = await DeltaClient.connect(server, user)
        v1 = await Client.open(server, user)
        run_id = await client.start("ask", "What is six times seven?")
        asked = await client.wait_for(is_event(run_id, "input_requested"))
        assert asked["data"]["prompt"] == "What is six times seven?"
        runs = await client.command({"type": "get_runs", "id": "g"})
        assert runs["runs"][0]["state"] == "running"  # waiting is running
        await client.send({"type": "send_input", "id": "in-1", "run_id": run_id, "input": answer})
        assert await client.reply() == {"type": "ack", "id": "in-1"}
        given = await client.wait_for(is_event(run_id, "run_input"))
        assert given["data"]["input"] == answer
        assert given["seq"] > asked["seq"]
        assert await client.wait_run_end(run_id) == "completed"
        [message] = assistant_messages(client, run_id)
        assert "forty-two" in message["data"]["text"]
        assert check_stream(client.deltas(run_id)) == message["data"]["text"]
        assert client.index(lambda i: i is given) < client.index(lambda i: i is message)
        await v1.wait_run_end(run_id)
        assert v1.events == [i for i in client.items if i["type"] == "event"]
        assert names(v1.run_events(run_id)).count("run_input") == 1

    scenario()


@run_async
async def test_send_input_errors(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    other = await Client.open(server, f"{user}-other")
    made_up = await client.command(
        {"type": "send_input", "id": "x1", "run_id": "r_" + "0" * 26, "input": "hi"}
    )
    assert made_up["type"] == "error"
    assert made_up["code"] == "unknown_run"
    assert made_up["id"] == "x1"
    run_id = await client.start("ask", "Anyone there?")
    await client.wait_for(is_event(run_id, "input_requested"))
    stolen = await other.command({"type": "send_input", "id": "x1", "run_id": run_id, "input": 1})
    assert stolen == made_up  # another user's run: existence is never revealed
    missing = await client.command({"type": "send_input", "id": "x2", "input": "hi"})
    assert missing["type"] == "error"
    assert missing["code"] == "bad_request"
    assert missing["id"] == "x2"
    mistyped = await client.command({"type": "send_input", "id": "x3", "run_id": 7})
    assert (mistyped["code"], mistyped["id"]) == ("bad_request", "x3")
    ack = await client.command({"type": "send_input", "id": "x4", "run_id": run_id, "input": "me"})
    assert ack == {"type": "ack", "id": "x4"}
    assert await client.wait_run_end(run_id) == "completed"
    late = await client.command({"type": "send_input", "id": "x5", "run_id": run_id, "input": 2})
    assert late["type"] == "error"
    assert late["code"] == "illegal_state"
    assert late["id"] == "x5"
    # a finished demo run too; and the connection still works
    demo = await client.say("hello")
    await client.wait_run_end(demo)
    again = await client.command({"type": "send_input", "id": "x6", "run_id": demo})
    assert (again["code"], again["id"]) == ("illegal_state", "x6")
    assert await client.command({"type": "ping", "id": "p"}) == {"type": "pong", "id": "p"}


# -- if_busy ------------------------------------------------------------------------------------


async def _slow_running(client: Client, seconds: float) -> str:
    run_id = await client.start("slow", {"seconds": seconds})
    await client.wait_for(is_event(run_id, "agent_thinking"))
    return run_id


@run_async
async def test_if_busy_reject_commits_nothing(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    # with nothing live, reject starts the run
    first = await client.say("nothing is live", if_busy="reject")
    assert await client.wait_run_end(first) == "completed"
    slow = await _slow_running(client, 30)
    before = await client.command({"type": "get_runs", "id": "g1"})
    said = await client.command({"type": "say", "id": "s", "text": "hi", "if_busy": "reject"})
    assert said["type"] == "error"
    assert (said["code"], said["id"]) == ("busy", "s")
    started = await client.command(
        {"type": "start_run", "id": "t", "agent": "demo", "input": "x", "if_busy": "reject"}
    )
    assert (started["type"], started["code"], started["id"]) == ("error", "busy", "t")
    after = await client.command({"type": "get_runs", "id": "g2"})
    assert after["head_seq"] == before["head_seq"]
    assert [r["run_id"] for r in after["runs"]] == [r["run_id"] for r in before["runs"]]
    bad = await client.command({"type": "say", "id": "b", "text": "hi", "if_busy": "later"})
    assert (bad["type"], bad["code"], bad["id"]) == ("error", "bad_request", "b")
    await client.command({"type": "cancel_run", "id": "c", "run_id": slow})
    assert await client.wait_run_end(slow) == "cancelled"


async def _check_enqueued(client: Client, first: str, queued: str) -> None:
    """``queued`` stays pending (and nothing else) until ``first`` ends, then runs."""
    assert await client.wait_run_end(first) == "completed"
    end_of_first = client.events.index(next(e for e in client.events if is_final_state(e, first)))
    assert await client.wait_run_end(queued) == "completed"
    events = client.run_events(queued)
    states = [e["data"]["state"] for e in events if e["event"] == "run_state"]
    assert states == ["pending", "starting", "running", "completing", "completed"]
    pending = next(e for e in events if e["event"] == "run_state")
    assert client.events.index(pending) < end_of_first
    for event in events:
        if event is not pending and event["event"] != "message":
            assert client.events.index(event) > end_of_first, event


@run_async
async def test_if_busy_enqueue_waits_for_the_live_run(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    slow = await _slow_running(client, 1.5)
    queued = await client.say("after you", if_busy="enqueue")
    runs = await client.command({"type": "get_runs", "id": "g"})
    assert {r["run_id"]: r["state"] for r in runs["runs"]}[queued] == "pending"
    await _check_enqueued(client, slow, queued)
    # the user's message was committed at once, before the queued run ran
    said = next(e for e in client.run_events(queued) if e["event"] == "message")
    assert said["data"]["role"] == "user"


@run_async
async def test_if_busy_interrupt_cancels_the_live_run(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    slow = await _slow_running(client, 30)
    new = await client.say("stop that", if_busy="interrupt")
    assert await client.wait_run_end(slow) == "cancelled"
    assert await client.wait_run_end(new) == "completed"
    mine = client.run_events(slow)
    assert names(mine)[-2:] == ["run_rolled_back", "run_state"]
    rollback = mine[-2]["data"]
    assert rollback["reason"] == "cancelled"
    assert rollback["error"] == "interrupted"
    assert rollback["will_restart"] is False
    assert len([e for e in mine if e["event"] == "run_rolled_back"]) == 1
    cancelled = client.events.index(mine[-1])
    starting = next(
        e
        for e in client.run_events(new)
        if e["event"] == "run_state" and e["data"]["state"] == "starting"
    )
    assert cancelled < client.events.index(starting)


@pytest.mark.parametrize("agent_kind", ["say", "start_run"])
def test_server_default_if_busy_enqueue(
    make_server: Callable[..., Server], user: str, agent_kind: str
) -> None:
    srv = make_server("--if-busy", "enqueue")

    @run_async
    async def scenario() -> None:
        client = await Client.open(srv, user)
        slow = await _slow_running(client, 1.5)
        if agent_kind == "say":
            queued = await client.say("queued by default")
        else:
            queued = await client.start("demo", "queued by default")
        # the command's own if_busy wins over the default
        alongside = await client.start("slow", {"seconds": 0.2})
        ack = await client.command(
            {"type": "start_run", "id": "p", "agent": "demo", "input": "now", "if_busy": "parallel"}
        )
        assert ack["type"] == "ack"
        assert await client.wait_run_end(ack["run_id"]) == "completed"
        assert not any(is_final_state(e, slow) for e in client.events)
        await _check_enqueued(client, slow, queued)
        assert await client.wait_run_end(alongside) == "completed"

    scenario()


# -- deltas are never stored ---------------------------------------------------------------------


@run_async
async def test_deltas_are_never_stored_or_replayed(server: Server, user: str) -> None:
    live = await DeltaClient.connect(server, user)
    run_ids = [
        await live.say("stream this, please"),
        await live.start("crashy", {"crash_times": 1, "stream": True}),
    ]
    for run_id in run_ids:
        await live.wait_run_end(run_id)
    assert all(live.deltas(r) for r in run_ids)
    head = (await live.command({"type": "get_runs", "id": "g"}))["head_seq"]
    await live.wait_for(lambda e: e["seq"] == head)
    committed = [i for i in live.items if i["type"] == "event"]
    assert [e["seq"] for e in committed] == list(range(1, head + 1))
    for features in (("deltas",), None):
        replay = await DeltaClient.connect(server, user, resume_from=0, features=features)
        await replay.wait_for(lambda e: e["seq"] == head)
        assert await replay.command({"type": "ping", "id": "p"}) == {"type": "pong", "id": "p"}
        assert replay.deltas() == []
        assert replay.items == committed


# -- the --if-busy flag --------------------------------------------------------------------------


def test_if_busy_flag_parses_and_refuses_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["serve"]).if_busy == "parallel"
    for policy in ("parallel", "reject", "enqueue", "interrupt"):
        assert parser.parse_args(["serve", "--if-busy", policy]).if_busy == policy
    with pytest.raises(SystemExit) as info:
        main(["serve", "--if-busy", "later", "--secret", SECRET])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--if-busy" in err
    assert "invalid choice: 'later'" in err
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--if-busy {parallel,reject,enqueue,interrupt}" in out
    assert "(default parallel)" in " ".join(out.split())
