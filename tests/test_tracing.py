"""OpenTelemetry spans (``RuntimeConfig.tracing``), read back from the SDK's in-memory exporter.

A real runtime on a SQLite file runs an agent whose first attempt makes two tool calls and
crashes, and whose second replays them and completes: the span tree must be run -> attempts ->
tools, with the attributes the docs promise, under the ``traceparent`` the command carried. The
LLM agent's model calls get their spans against the stub of ``test_llm``. With tracing off,
``opentelemetry`` is never imported.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from test_llm import ANSWER, TOOL_CALLS, Stub, llm_config, sse
from test_logs import run_script

import netra_actors as na
from netra_actors._cluster_codec import command_of, message_of
from netra_actors._messages import Reply, StartRun
from netra_actors._tracing import trace_carrier
from netra_actors.llm import make_llm_agent
from netra_actors.testing import MemoryStore, guest_test

FAST_RESTART = na.policies.RestartPolicy(max_restarts=3, backoff_initial=0.01, backoff_max=0.05)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    yield provider, exported
    provider.shutdown()


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


def config(tmp_path: Path, provider: TracerProvider, **changes: Any) -> na.RuntimeConfig:
    return na.RuntimeConfig(
        database_url=na.sqlite_url(tmp_path / "netra.db"),
        restart=FAST_RESTART,
        tracing=provider,
        **changes,
    )


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    return sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id),
        key=lambda s: s.start_time or 0,
    )


class Booker(na.Agent):
    """Two tool calls, then a crash in the first attempt; the second replays them."""

    name = "booker"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        flight = await ctx.tool("find_flight", lambda city: f"AF{len(city)}", city="Paris")
        seat = await ctx.tool("book_seat", lambda flight: "12A", flight=flight)
        if ctx.attempt == 1:
            raise RuntimeError("the booking system hiccupped")
        return {"flight": flight, "seat": seat}


@guest_test()
async def test_a_run_is_a_tree_of_attempts_and_tools_under_the_callers_trace(
    tmp_path: Path, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exported = exporter
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    async with na.open_runtime(config(tmp_path, provider), agents=[Booker]) as rt:
        run_id = await rt.say(
            "alice", "book me to Paris", agent="booker", trace_context={"traceparent": traceparent}
        )
        info = await rt.wait_run("alice", run_id)
    assert info.state is na.RunState.COMPLETED
    assert info.attempt == 2
    spans = exported.get_finished_spans()

    [run] = named(spans, "netra.run")
    assert f"{run.context.trace_id:032x}" == TRACE_ID  # the caller's trace
    assert run.parent is not None
    assert f"{run.parent.span_id:016x}" == PARENT_ID
    assert run.parent.is_remote
    assert dict(run.attributes or {}) == {
        "netra.user_id": "alice",
        "netra.run_id": run_id,
        "netra.agent": "booker",
        "netra.state": "completed",
        "netra.attempts": 2,
    }
    assert run.status.status_code is StatusCode.UNSET

    first, second = children(spans, run)
    assert [s.name for s in (first, second)] == ["netra.attempt"] * 2
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["netra.attempt"] == 1
    assert first.attributes["netra.outcome"] == "rolled_back"
    assert first.attributes["netra.rollback_reason"] == "crash"
    assert first.attributes["netra.will_restart"] is True
    assert first.status.status_code is StatusCode.ERROR
    assert "the booking system hiccupped" in (first.status.description or "")
    assert second.attributes["netra.attempt"] == 2
    assert second.attributes["netra.outcome"] == "completed"
    assert (first.end_time or 0) <= (second.start_time or 0)

    tools = [children(spans, attempt) for attempt in (first, second)]
    for made in tools:
        assert [t.name for t in made] == ["netra.tool"] * 2
        assert [t.attributes["netra.tool.name"] for t in made] == ["find_flight", "book_seat"]  # type: ignore[index]
    assert [t.attributes["netra.tool.call_id"] for t in tools[0]] == [  # type: ignore[index]
        f"{run_id}.1.1",
        f"{run_id}.1.2",
    ]
    assert [t.attributes["netra.replayed"] for t in tools[0]] == [False, False]  # type: ignore[index]
    assert [t.attributes["netra.replayed"] for t in tools[1]] == [True, True]  # type: ignore[index]
    assert all(t.context.trace_id == run.context.trace_id for t in tools[0] + tools[1])

    commits = named(spans, "netra.group_commit")
    assert commits
    assert all(c.parent is None for c in commits)
    attributes = [dict(c.attributes or {}) for c in commits]
    assert sum(a["netra.batch.units"] for a in attributes) >= 6  # type: ignore[misc]
    assert all(a["netra.batch.failed"] == 0 for a in attributes)
    assert all(a["netra.batch.users"] == 1 for a in attributes if a["netra.batch.units"])
    assert any(a["netra.batch.ops"] for a in attributes)  # the lease taken at activation
    assert all((c.end_time or 0) >= (c.start_time or 0) for c in commits)


class Fails(na.Agent):
    name = "fails"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        try:
            await ctx.tool("charge", _declined, amount=5)
        except na.ToolError:
            raise na.exceptions.RunFailedError("payment declined") from None
        return None


def _declined(amount: int) -> None:
    raise ValueError(f"card declined for {amount}")


@guest_test()
async def test_a_failed_tool_and_run_are_errors_and_a_run_without_context_is_a_root(
    tmp_path: Path, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exported = exporter
    async with na.open_runtime(config(tmp_path, provider), agents=[Fails]) as rt:
        run_id = await rt.start_run("bob", "fails")
        assert (await rt.wait_run("bob", run_id)).state is na.RunState.FAILED
    spans = exported.get_finished_spans()
    [run] = named(spans, "netra.run")
    assert run.parent is None
    assert run.attributes is not None
    assert run.attributes["netra.state"] == "failed"
    assert run.status.status_code is StatusCode.ERROR
    [attempt] = children(spans, run)
    assert attempt.attributes is not None
    assert attempt.attributes["netra.rollback_reason"] == "error"
    [tool] = children(spans, attempt)
    assert tool.attributes is not None
    assert tool.attributes["netra.tool.error"] == "ValueError: card declined for 5"
    assert tool.status.status_code is StatusCode.ERROR


@guest_test()
async def test_model_calls_are_spans_of_their_attempt(
    tmp_path: Path, stub: Stub, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exported = exporter
    stub.replies = [sse(TOOL_CALLS), sse(ANSWER)]
    agent = make_llm_agent(
        llm_config(stub),
        tools={"get_weather": lambda city: {"city": city}, "get_time": lambda tz: "14:05"},
    )
    async with na.open_runtime(config(tmp_path, provider), agents=[agent]) as rt:
        run_id = await rt.start_run("alice", "llm", "Weather and time in Paris?")
        assert (await rt.wait_run("alice", run_id)).state is na.RunState.COMPLETED
    spans = exported.get_finished_spans()
    [attempt] = named(spans, "netra.attempt")
    steps = children(spans, attempt)
    assert [s.name for s in steps] == ["netra.model", "netra.tool", "netra.tool", "netra.model"]
    for model in (steps[0], steps[3]):
        assert model.attributes is not None
        assert model.attributes["netra.model"] == "gpt-4o-mini"
        assert model.attributes["netra.replayed"] is False
        assert model.attributes["netra.response_model"] == "gpt-4o-mini-2024-07-18"


def test_a_tracing_setting_is_checked() -> None:
    with pytest.raises(na.exceptions.ConfigError, match="TracerProvider"):
        na.RuntimeConfig(tracing="yes")
    assert na.RuntimeConfig(tracing=True).tracing is True


async def test_tracing_on_without_opentelemetry_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if it were not installed
    config = na.RuntimeConfig(tracing=True)
    with pytest.raises(na.exceptions.ConfigError, match=r"netra-actors\[otel\]"):
        async with na.open_runtime(config, store=MemoryStore()):
            pass


NOT_IMPORTED = """
import sys
import time
import netra_actors as na

class Tool(na.Agent):
    name = "tool"

    async def run(self, ctx, input):
        return await ctx.tool("echo", lambda text: text, text="hi")

async def main():
    config = na.RuntimeConfig(database_url=na.sqlite_url(sys.argv[1]))
    async with na.open_runtime(config, agents=[Tool]) as rt:
        run_id = await rt.say("alice", "hi", agent="tool", trace_context={"traceparent": "x"})
        print((await rt.wait_run("alice", run_id)).state.value)

na.run(main)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
assert not loaded, loaded
print("not imported")
"""


def test_with_tracing_off_opentelemetry_is_not_imported(tmp_path: Path) -> None:
    out = run_script(tmp_path, NOT_IMPORTED)
    assert out.stdout.split() == ["completed", "not", "imported"]


def test_the_trace_context_of_a_request_and_across_the_cluster_inbox() -> None:
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "x" * 513}
    carrier = trace_carrier(headers.get)
    assert carrier == {"traceparent": headers["traceparent"]}  # an oversized value is left out
    assert trace_carrier(lambda name: None) is None
    # A command forwarded to the user's owner on another node keeps its trace context.
    msg = StartRun(agent="a", input="hi", user_text="hi", reply=Reply(), trace_context=carrier)
    encoded = command_of(msg)
    assert encoded is not None
    kind, payload = encoded
    decoded = message_of(kind, json.loads(json.dumps(payload)))
    assert isinstance(decoded, StartRun)
    assert decoded.trace_context == carrier


@guest_test(timeout=30)
async def test_a_post_agui_requests_trace_context_is_its_runs_parent(
    tmp_path: Path, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    import httpx
    import trio

    from netra_actors._bridge import Bridge
    from netra_actors.gateway import Gateway, GatewayConfig, mint_token

    provider, exported = exporter
    secret = b"tracing-secret-0123456789abcdef"
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    async with na.open_runtime(config(tmp_path, provider), agents=[Booker]) as rt:
        gateway = Gateway(rt, GatewayConfig(secret=secret, port=0))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)

            async def post() -> str:
                body = {
                    "threadId": "t1",
                    "runId": "r1",
                    "state": {},
                    "messages": [{"id": "m1", "role": "user", "content": "book me to Paris"}],
                    "tools": [],
                    "context": [],
                    "forwardedProps": {"agent": "booker"},
                }
                headers = {
                    "Authorization": f"Bearer {mint_token(secret, 'alice', 60, now=time.time())}",
                    "traceparent": traceparent,
                }
                url = f"http://127.0.0.1:{gateway.port}/agui"
                async with (
                    httpx.AsyncClient(timeout=20) as client,
                    client.stream("POST", url, json=body, headers=headers) as response,
                ):
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if '"RUN_FINISHED"' in line or '"RUN_ERROR"' in line:
                            return line
                return ""

            last = await Bridge.current().run_on_host(post())
            assert "RUN_FINISHED" in last
            nursery.cancel_scope.cancel()
    (run,) = named(exported.get_finished_spans(), "netra.run")
    assert run.parent is not None
    assert run.parent.is_remote
    assert format(run.context.trace_id, "032x") == TRACE_ID
    assert format(run.parent.span_id, "016x") == PARENT_ID
