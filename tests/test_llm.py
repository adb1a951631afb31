"""The OpenAI-compatible agent (``netra_actors.llm``) against a local stub of the API.

The stub is a threaded ``http.server`` on 127.0.0.1 that answers each ``POST /chat/completions``
with the next scripted reply: an HTTP error, or recorded ``chat.completion.chunk`` SSE events sent
one chunk at a time (chunked encoding), optionally cut off mid-stream (the socket closes without
the final chunk). Every run goes through the real runtime on a real SQLite file, in trio as a
guest of asyncio (``guest_test``), and is watched through a ``deltas=True`` subscription.
"""

from __future__ import annotations

import http.server
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel

import netra_actors as na
from netra_actors.llm import (
    LLMConfig,
    ModelResponse,
    Tool,
    llm_dependency,
    make_llm_agent,
)
from netra_actors.llm._stream import _SSE, _Accumulator
from netra_actors.testing import guest_test

KEY = "sk-test-0123456789"
FAST_RESTART = na.policies.RestartPolicy(max_restarts=3, backoff_initial=0.01, backoff_max=0.05)
FAST_RETRY = na.policies.RetryPolicy(attempts=3, backoff_initial=0.01, backoff_max=0.02, jitter=0.0)

# ------------------------------------------------------------------ recorded SSE fixtures
# Events as an OpenAI-compatible server sends them (one ``data:`` line each), recorded from the
# chat.completions chunk format: a role chunk, content deltas, a finish chunk, the usage chunk
# (``stream_options.include_usage``), ``[DONE]``.

_HEAD = '{"id":"chatcmpl-9x1","object":"chat.completion.chunk","created":1718000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_44709d6fcb",'

ANSWER = [
    _HEAD
    + '"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '"choices":[{"index":0,"delta":{"content":"It is"},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '"choices":[{"index":0,"delta":{"content":" 21 °C"},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '"choices":[{"index":0,"delta":{"content":" in Paris 🙂"},"logprobs":null,"finish_reason":null}]}',
    _HEAD + '"choices":[{"index":0,"delta":{"content":"."},"logprobs":null,"finish_reason":null}]}',
    _HEAD + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}',
    _HEAD + '"choices":[],"usage":{"prompt_tokens":31,"completion_tokens":9,"total_tokens":40}}',
    "[DONE]",
]
ANSWER_TEXT = "It is 21 °C in Paris 🙂."

# Two tool calls, their arguments split over several chunks (index 0, then index 1).
TOOL_CALLS = [
    _HEAD
    + '"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Wx1","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"ci"}}]},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\\": \\"Pa"}}]},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ris\\"}"}}]},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_Tz2","type":"function","function":{"name":"get_time","arguments":""}}]},"logprobs":null,"finish_reason":null}]}',
    _HEAD
    + '"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\\"tz\\": \\"Europe/Paris\\"}"}}]},"logprobs":null,"finish_reason":null}]}',
    _HEAD + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}',
    _HEAD + '"choices":[],"usage":{"prompt_tokens":52,"completion_tokens":37,"total_tokens":89}}',
    "[DONE]",
]


# ------------------------------------------------------------------------- the stub server


@attrs.frozen
class Reply:
    """One scripted answer: an HTTP ``status`` with ``body``, or (200) SSE ``events``."""

    status: int = 200
    events: tuple[str, ...] = ()
    body: str = ""
    cut_after: int | None = None
    """Close the connection after this many events (no final chunk: a broken stream)."""
    delay: float = 0.005
    """Seconds between events (so that tokens arrive one by one)."""
    first_byte_delay: float = 0.0


def sse(events: list[str], **kw: Any) -> Reply:
    return Reply(events=tuple(events), **kw)


def error(status: int, message: str = "") -> Reply:
    body = json.dumps({"error": {"message": message or f"status {status}", "type": "x"}})
    return Reply(status=status, body=body)


class Stub:
    """The stub API: replies in order; every request's headers and JSON body are recorded."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                with stub._lock:
                    stub.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    reply = stub.replies.pop(0) if stub.replies else error(500, "no reply left")
                stub.answer(self, reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, h: http.server.BaseHTTPRequestHandler, reply: Reply) -> None:
        time.sleep(reply.first_byte_delay)
        if reply.status != 200:
            data = reply.body.encode()
            h.send_response(reply.status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for n, event in enumerate(reply.events):
            if reply.cut_after is not None and n == reply.cut_after:
                h.close_connection = True
                return  # no terminating chunk: the client sees an incomplete body
            data = f"data: {event}\n\n".encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()
            time.sleep(reply.delay)
        h.wfile.write(b"0\r\n\r\n")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


# ------------------------------------------------------------------------------ helpers

Item = na.Event | na.Delta


def runtime_config(tmp_path: Path, **changes: Any) -> na.RuntimeConfig:
    base: dict[str, Any] = {
        "database_url": na.sqlite_url(tmp_path / "netra.db"),
        "restart": FAST_RESTART,
        "dependencies": [llm_dependency(retry=FAST_RETRY)],
    }
    base.update(changes)
    return na.RuntimeConfig(**base)


def llm_config(stub: Stub, **changes: Any) -> LLMConfig:
    return LLMConfig(base_url=stub.url, model="gpt-4o-mini", api_key=KEY, **changes)


async def read_until_ended(sub: na.types.Subscription, run_id: str) -> list[Item]:
    items: list[Item] = []
    with trio.fail_after(20):
        while True:
            for item in await sub.receive_items():
                items.append(item)
                if (
                    isinstance(item, na.Event)
                    and item.run_id == run_id
                    and item.event == "run_state"
                    and na.RunState(item.data["state"]).is_terminal
                ):
                    return items


def deltas(items: list[Item]) -> list[na.Delta]:
    return [i for i in items if isinstance(i, na.Delta)]


def events(items: list[Item], name: str) -> list[na.Event]:
    return [i for i in items if isinstance(i, na.Event) and i.event == name]


def assistant_messages(items: list[Item]) -> list[na.Event]:
    return [e for e in events(items, "message") if e.data.get("role") == "assistant"]


def stored_event_names(config: na.RuntimeConfig) -> list[str]:
    path = config.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT event FROM netra_events ORDER BY seq")]


async def one_run(
    config: na.RuntimeConfig, agent: type[na.Agent], input: na.JSON
) -> tuple[na.RunInfo, list[Item], na.statistics.ResilienceStatistics]:
    async with na.open_runtime(config, agents=[agent]) as rt:
        sub = await rt.subscribe("alice", deltas=True)
        run_id = await rt.start_run("alice", agent.name, input)
        items = await read_until_ended(sub, run_id)
        info = await rt.wait_run("alice", run_id)
        return info, items, rt.resilience.statistics()


# -------------------------------------------------------------------------------- tests


@guest_test()
async def test_tokens_arrive_as_deltas_then_one_committed_message(
    tmp_path: Path, stub: Stub
) -> None:
    stub.replies = [sse(ANSWER)]
    config = runtime_config(tmp_path)
    agent = make_llm_agent(llm_config(stub, system_prompt="Be brief."))
    info, items, stats = await one_run(config, agent, "Weather in Paris?")

    assert info.state is na.RunState.COMPLETED
    assert info.result == {
        "text": ANSWER_TEXT,
        "model": "gpt-4o-mini-2024-07-18",
        "usage": {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40},
    }
    [message] = assistant_messages(items)
    assert message.data["text"] == ANSWER_TEXT
    ds = deltas(items)
    assert len(ds) >= 2  # streamed, not committed token by token
    assert {d.message_id for d in ds} == {message.data["message_id"]}
    assert "".join(d.text for d in ds) == ANSWER_TEXT
    assert [d.offset for d in ds] == [sum(len(x.text) for x in ds[:k]) for k in range(len(ds))]
    assert max(items.index(d) for d in ds) < items.index(message)
    # the request: key, model, stream, the conversation with the system prompt first
    [request] = stub.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert "tools" not in body
    assert stats.dependencies["llm"].calls == 1
    assert stats.dependencies["llm"].retries == 0
    names = stored_event_names(config)
    assert "delta" not in names
    assert names.count("message") == 1  # the committed answer, once


@guest_test()
async def test_a_tool_call_round_trip(tmp_path: Path, stub: Stub) -> None:
    stub.replies = [sse(TOOL_CALLS), sse(ANSWER)]
    seen: list[tuple[str, Any]] = []

    async def get_weather(city: str) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        seen.append(("get_weather", city))
        return {"city": city, "celsius": 21}

    def get_time(tz: str) -> str:
        """The local time in a time zone."""
        seen.append(("get_time", tz))
        return "14:05"

    weather = Tool(
        get_weather,
        "The current weather in a city.",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    agent = make_llm_agent(llm_config(stub), tools={"get_weather": weather, "get_time": get_time})
    config = runtime_config(tmp_path)
    info, items, _ = await one_run(config, agent, {"messages": [{"role": "user", "content": "?"}]})

    assert info.state is na.RunState.COMPLETED, info
    assert seen == [("get_weather", "Paris"), ("get_time", "Europe/Paris")]
    executing = events(items, "tool_executing")
    completed = events(items, "tool_completed")
    assert [(e.data["tool"], e.data["args"]) for e in executing] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "Europe/Paris"}),
    ]
    assert [(e.data["result"], e.data["attempts"]) for e in completed] == [
        ({"city": "Paris", "celsius": 21}, 1),
        ("14:05", 1),
    ]
    assert [e.data["call_id"] for e in completed] == [e.data["call_id"] for e in executing]
    # the tool-only first answer streamed no text and committed no message
    [message] = assistant_messages(items)
    assert message.data["text"] == ANSWER_TEXT
    assert items.index(completed[-1]) < items.index(message)
    assert all(items.index(d) > items.index(completed[-1]) for d in deltas(items))
    # the first request offered both tools; the second carries the calls and their results
    first, second = (r["body"] for r in stub.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather", "get_time"]
    assert first["tools"][0]["function"]["parameters"]["required"] == ["city"]
    assert first["tools"][1]["function"]["description"] == "The local time in a time zone."
    assert second["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_Wx1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_Tz2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_Wx1", "content": '{"city":"Paris","celsius":21}'},
        {"role": "tool", "tool_call_id": "call_Tz2", "content": "14:05"},
    ]
    assert isinstance(info.result, dict)
    assert info.result["usage"] == {
        "prompt_tokens": 83,
        "completion_tokens": 46,
        "total_tokens": 129,
    }


@guest_test()
async def test_a_failing_tool_goes_back_to_the_model_as_an_error(
    tmp_path: Path, stub: Stub
) -> None:
    stub.replies = [sse(TOOL_CALLS), sse(ANSWER)]

    def get_weather(city: str) -> str:
        raise ConnectionError("weather service down")

    agent = make_llm_agent(llm_config(stub), tools={"get_weather": get_weather})
    info, items, _ = await one_run(runtime_config(tmp_path), agent, "?")

    assert info.state is na.RunState.COMPLETED
    [done] = events(items, "tool_completed")  # get_time is unknown: not run, not recorded
    assert done.data["error"] == "ConnectionError: weather service down"
    tool_messages = [m for m in stub.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert [json.loads(m["content"]) for m in tool_messages] == [
        {"error": "ConnectionError: weather service down"},
        {"error": "there is no tool named 'get_time'"},
    ]


@guest_test()
async def test_a_disconnect_before_any_text_is_retried_within_the_attempt(
    tmp_path: Path, stub: Stub
) -> None:
    stub.replies = [sse(ANSWER, cut_after=1), sse(ANSWER)]  # only the role chunk, then cut
    info, items, stats = await one_run(
        runtime_config(tmp_path), make_llm_agent(llm_config(stub)), "?"
    )

    assert info.state is na.RunState.COMPLETED
    assert info.attempt == 1
    assert events(items, "run_rolled_back") == []
    [message] = assistant_messages(items)
    assert message.data["text"] == ANSWER_TEXT
    assert "".join(d.text for d in deltas(items)) == ANSWER_TEXT
    assert len(stub.requests) == 2
    assert stats.dependencies["llm"].retries == 1
    assert stats.dependencies["llm"].failures == 1


@guest_test()
async def test_a_disconnect_mid_answer_rolls_back_and_the_restart_answers_once(
    tmp_path: Path, stub: Stub
) -> None:
    stub.replies = [sse(ANSWER, cut_after=3), sse(ANSWER)]  # "It is", " 21 °C", then cut
    config = runtime_config(tmp_path)
    info, items, stats = await one_run(config, make_llm_agent(llm_config(stub)), "?")

    assert info.state is na.RunState.COMPLETED
    assert info.attempt == 2
    [rollback] = events(items, "run_rolled_back")
    assert rollback.data["attempt"] == 1
    assert rollback.data["reason"] == "crash"
    assert "LLMStreamInterrupted" in rollback.data["error"]
    first = [d for d in deltas(items) if d.attempt == 1]
    assert "".join(d.text for d in first) == "It is 21 °C"  # shown, then retracted
    assert max(items.index(d) for d in first) < items.index(rollback)
    [message] = assistant_messages(items)  # the user has one committed answer
    assert message.data["text"] == ANSWER_TEXT
    assert {d.message_id for d in deltas(items) if d.attempt == 2} == {message.data["message_id"]}
    assert message.data["message_id"] not in {d.message_id for d in first}
    assert len(stub.requests) == 2
    assert stats.dependencies["llm"].retries == 0  # not retried inside the attempt
    assert stored_event_names(config).count("message") == 1


@guest_test()
async def test_a_429_500_burst_trips_the_breaker_and_later_runs_fail_fast(
    tmp_path: Path, stub: Stub
) -> None:
    stub.replies = [error(429, "Rate limit reached"), error(500), error(503)]
    breaker = na.policies.BreakerPolicy(failure_threshold=3, window=30.0, reset_timeout=60.0)
    config = runtime_config(
        tmp_path, dependencies=[llm_dependency(retry=FAST_RETRY, breaker=breaker)]
    )
    agent = make_llm_agent(llm_config(stub))
    async with na.open_runtime(config, agents=[agent]) as rt:
        sub = await rt.subscribe("alice")
        first = await rt.start_run("alice", "llm", "one")
        items = await read_until_ended(sub, first)
        second = await rt.start_run("alice", "llm", "two")
        items += await read_until_ended(sub, second)
        infos = [await rt.wait_run("alice", r) for r in (first, second)]
        stats = rt.resilience.statistics().dependencies["llm"]

    assert [i.state for i in infos] == [na.RunState.FAILED, na.RunState.FAILED]
    assert [i.attempt for i in infos] == [1, 1]  # RunFailedError: no restart
    one, two = events(items, "run_rolled_back")
    assert one.data["reason"] == two.data["reason"] == "error"
    assert "failed after 3 attempts" in one.data["error"]
    assert "HTTP 503" in one.data["error"]
    assert "circuit breaker for 'llm' is open after 3 failures" in two.data["error"]
    assert len(stub.requests) == 3  # the second run never reached the API
    assert stats.state is na.statistics.BreakerState.OPEN
    assert stats.opened_total == 1
    assert stats.failures == 3
    assert stats.fast_failures == 1


@guest_test()
async def test_401_is_not_retried(tmp_path: Path, stub: Stub) -> None:
    stub.replies = [error(401, "Incorrect API key provided")]
    info, items, stats = await one_run(
        runtime_config(tmp_path), make_llm_agent(llm_config(stub)), "?"
    )

    assert info.state is na.RunState.FAILED
    [rollback] = events(items, "run_rolled_back")
    assert "HTTP 401 from the model API: Incorrect API key provided" in rollback.data["error"]
    assert len(stub.requests) == 1
    assert stats.dependencies["llm"].retries == 0
    assert stats.dependencies["llm"].state is na.statistics.BreakerState.CLOSED


@guest_test()
async def test_a_slow_first_token_keeps_the_run_alive(tmp_path: Path, stub: Stub) -> None:
    stub.replies = [sse(ANSWER, first_byte_delay=1.2)]
    config = runtime_config(tmp_path, liveness=na.policies.LivenessPolicy(heartbeat_timeout=0.4))
    info, _, _ = await one_run(config, make_llm_agent(llm_config(stub)), "?")
    assert info.state is na.RunState.COMPLETED
    assert info.attempt == 1


@guest_test()
async def test_cancelling_a_run_mid_answer_retracts_it(tmp_path: Path, stub: Stub) -> None:
    stub.replies = [sse(ANSWER, delay=0.3)]
    agent = make_llm_agent(llm_config(stub))
    async with na.open_runtime(runtime_config(tmp_path), agents=[agent]) as rt:
        sub = await rt.subscribe("alice", deltas=True)
        run_id = await rt.start_run("alice", "llm", "?")
        items: list[Item] = []
        with trio.fail_after(10):
            while not any(isinstance(i, na.Delta) for i in items):
                items += await sub.receive_items()
        await rt.cancel_run("alice", run_id)
        items += await read_until_ended(sub, run_id)
        info = await rt.wait_run("alice", run_id)
        stats = rt.resilience.statistics().dependencies["llm"]
    assert info.state is na.RunState.CANCELLED
    [rollback] = events(items, "run_rolled_back")
    assert rollback.data["reason"] == "cancelled"
    assert assistant_messages(items) == []
    assert stats.failures == 0  # a cancelled call is no verdict on the API


@guest_test()
async def test_after_max_tool_rounds_the_model_is_asked_without_tools(
    tmp_path: Path, stub: Stub
) -> None:
    stub.replies = [sse(TOOL_CALLS), sse(TOOL_CALLS)]
    agent = make_llm_agent(
        llm_config(stub, max_tool_rounds=1), tools={"get_weather": lambda city: "sunny"}
    )
    info, items, _ = await one_run(runtime_config(tmp_path), agent, "?")
    assert info.state is na.RunState.FAILED
    assert "max_tool_rounds=1" in events(items, "run_rolled_back")[0].data["error"]
    assert "tools" in stub.requests[0]["body"]
    assert "tools" not in stub.requests[1]["body"]


# ------------------------------------------------------------------- units: no runtime


def test_sse_and_chunk_parsing() -> None:
    sse_ = _SSE()
    lines = [": keep-alive", "event: message", 'data: {"a":', "data: 1}", "", "data:[DONE]", ""]
    assert [d for d in map(sse_.line, lines) if d is not None] == ['{"a":\n1}', "[DONE]"]

    acc = _Accumulator()  # a server that omits tool call indexes and repeats the name
    parts = [
        {"id": "call_1", "function": {"name": "f", "arguments": '{"x"'}},
        {"id": "call_1", "function": {"name": "f", "arguments": ": 1}"}},
        {"id": "call_2", "function": {"name": "g", "arguments": "{}"}},
    ]
    for part in parts:
        acc.feed({"choices": [{"index": 0, "delta": {"tool_calls": [part]}}]})
    acc.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    response = acc.response()
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_1", "f", '{"x": 1}'),
        ("call_2", "g", "{}"),
    ]
    assert ModelResponse.from_json(json.loads(json.dumps(response.to_json()))) == response


def test_config_is_validated_and_the_key_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NETRA_LLM_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert LLMConfig(base_url="http://h/v1", model="m").api_key is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert LLMConfig(base_url="http://h/v1", model="m").api_key == "sk-openai"
    monkeypatch.setenv("NETRA_LLM_API_KEY", "sk-netra")
    config = LLMConfig(base_url="http://h/v1/", model="m")
    assert config.api_key == "sk-netra"
    assert config.base_url == "http://h/v1"
    assert LLMConfig(base_url="http://h/v1", model="m", api_key="sk-arg").api_key == "sk-arg"
    assert "sk-netra" not in repr(config)
    bads: list[dict[str, Any]] = [
        {"base_url": "127.0.0.1:11434"},
        {"model": ""},
        {"timeout": 0},
        {"max_tool_rounds": -1},
        {"temperature": -1},
        {"extra_body": {"x": object()}},
    ]
    for bad in bads:
        with pytest.raises(na.exceptions.ConfigError):
            LLMConfig(**{"base_url": "http://h/v1", "model": "m", **bad})
    with pytest.raises(na.exceptions.ConfigError):
        make_llm_agent(config, tools={"bad name": lambda: None})
    with pytest.raises(na.exceptions.ConfigError):
        make_llm_agent(config, tools={"ok": 42})  # type: ignore[dict-item]
    dep = llm_dependency()
    assert dep.name == "llm"
    assert dep.retry.attempts == 3
    assert dep.breaker is not None


def test_the_module_imports_without_httpx_and_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import netra_actors.llm as llm\n"
        "config = llm.LLMConfig(base_url='http://h/v1', model='m')\n"
        "try:\n"
        "    llm.make_llm_agent(config)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert "pip install 'netra-actors[llm]'" in out.stdout


@guest_test()
async def test_a_crash_after_the_model_answered_does_not_pay_for_it_again(
    tmp_path: Path, stub: Stub
) -> None:
    """Issue 13: completed model responses are journaled; a restarted attempt replays them."""
    stub.replies = [sse(TOOL_CALLS), sse(ANSWER)]

    def get_weather(city: str) -> dict[str, Any]:
        return {"city": city, "celsius": 21}

    def get_time(tz: str) -> str:
        return "14:05"

    base = make_llm_agent(
        llm_config(stub), tools={"get_weather": get_weather, "get_time": get_time}
    )

    class CrashesOnce(base):  # type: ignore[valid-type,misc]
        async def run_tool(self, ctx: na.AgentContext, call: Any) -> str:
            if ctx.attempt == 1:
                raise RuntimeError("crash after the model answered")
            result: str = await super().run_tool(ctx, call)
            return result

    config = runtime_config(tmp_path)
    info, items, _ = await one_run(
        config, CrashesOnce, {"messages": [{"role": "user", "content": "?"}]}
    )

    assert info.state is na.RunState.COMPLETED, info
    assert info.attempt == 2
    # The first model response (the tool calls) was paid for once: attempt 2 replayed it.
    assert len(stub.requests) == 2
    [message] = assistant_messages(items)
    assert message.data["text"] == ANSWER_TEXT
    assert [r.data["reason"] for r in events(items, "run_rolled_back")] == ["crash"]
    # The responses are kept beside the events, not in the user's stream.
    db = config.database_url.split(":///", 1)[1]
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT attempt, step, name FROM netra_model_calls ORDER BY attempt, step"
        ).fetchall()
    assert rows == [(1, 1, "model:llm"), (2, 4, "model:llm")]  # steps 2, 3: the tools


# ------------------------------------------------------- the conversation sent to the model


async def say_and_wait(rt: na.Runtime, text: str, *, thread: str | None = None) -> na.RunInfo:
    run_id = await rt.say("alice", text, agent="llm", thread=thread)
    with trio.fail_after(20):
        return await rt.wait_run("alice", run_id)


@guest_test()
async def test_the_model_gets_the_threads_conversation(tmp_path: Path, stub: Stub) -> None:
    """A second message in a thread sends the first turn (question and answer) before it; a
    message in another thread sends only that thread's."""
    stub.replies = [sse(ANSWER), sse(ANSWER), sse(ANSWER)]
    agent = make_llm_agent(llm_config(stub, system_prompt="Be brief."))
    async with na.open_runtime(runtime_config(tmp_path), agents=[agent]) as rt:
        first = await say_and_wait(rt, "Weather in Paris?")
        second = await say_and_wait(rt, "And tomorrow?")
        other = await say_and_wait(rt, "Hello elsewhere", thread="trip.2")
    assert first.state is second.state is other.state is na.RunState.COMPLETED
    assert [r["body"]["messages"] for r in stub.requests] == [
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": ANSWER_TEXT},
            {"role": "user", "content": "And tomorrow?"},
        ],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello elsewhere"},
        ],
    ]


@guest_test()
async def test_an_over_budget_conversation_drops_the_oldest_turns(
    tmp_path: Path, stub: Stub
) -> None:
    """With room for about two turns, the third message is sent after the second turn only;
    the system prompt is kept."""
    stub.replies = [sse(ANSWER) for _ in range(3)]
    turn = len(json.dumps({"role": "user", "content": "question number 1"}, separators=(",", ":")))
    turn += len(json.dumps({"role": "assistant", "content": ANSWER_TEXT}, ensure_ascii=False))
    agent = make_llm_agent(
        llm_config(stub, system_prompt="Be brief.", max_history_chars=2 * turn + 5)
    )
    async with na.open_runtime(runtime_config(tmp_path), agents=[agent]) as rt:
        for n in (1, 2, 3):
            await say_and_wait(rt, f"question number {n}")
    assert stub.requests[-1]["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "question number 2"},
        {"role": "assistant", "content": ANSWER_TEXT},
        {"role": "user", "content": "question number 3"},
    ]


def test_max_history_chars_is_validated() -> None:
    with pytest.raises(na.exceptions.ConfigError, match="max_history_chars"):
        LLMConfig(base_url="http://127.0.0.1:1/v1", model="m", max_history_chars=0)


@guest_test()
async def test_a_run_of_a_lost_process_resumes_without_paying_for_its_answers(
    tmp_path: Path, stub: Stub
) -> None:
    """Issue 18: the next process rebuilds the run's journal from the store (its events and
    ``netra_model_calls``): the model's first answer is not paid for again, the tool that was
    in flight runs again under its call_id, and the run completes."""
    stub.replies = [sse(TOOL_CALLS), sse(ANSWER)]
    first_process = trio.Event()  # set while the first runtime runs
    first_process.set()

    async def get_weather(city: str) -> dict[str, Any]:
        if first_process.is_set():
            await trio.sleep_forever()  # in flight when the process goes
        return {"city": city, "celsius": 21}

    def get_time(tz: str) -> str:
        return "14:05"

    agent = make_llm_agent(
        llm_config(stub), tools={"get_weather": get_weather, "get_time": get_time}
    )
    config = runtime_config(tmp_path)
    async with na.open_runtime(config, agents=[agent]) as rt:
        sub = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", agent.name, "weather?")
        with trio.fail_after(10):
            while not any(e.event == "tool_executing" for e in await sub.receive_batch()):
                pass
        head = (await rt.get_runs("alice")).head_seq
    first_process = trio.Event()  # the next process: the tool answers
    assert len(stub.requests) == 1
    async with na.open_runtime(config, agents=[agent]) as rt:
        sub = await rt.subscribe("alice", resume_from=head, deltas=True)
        items = await read_until_ended(sub, run_id)
        info = await rt.wait_run("alice", run_id)

    assert info.state is na.RunState.COMPLETED, info
    assert len(stub.requests) == 2  # the first answer was replayed from the store
    assert [r.data["reason"] for r in events(items, "run_rolled_back")] == ["lost"]
    executing = [e.data["tool"] for e in events(items, "tool_executing")]
    assert executing == ["get_time"]  # get_weather was begun already: not again
    completed = {e.data["tool"]: e.data for e in events(items, "tool_completed")}
    assert completed["get_weather"]["call_id"].endswith(".1.1")  # the call of attempt 1
    [message] = assistant_messages(items)
    assert message.data["text"] == ANSWER_TEXT
