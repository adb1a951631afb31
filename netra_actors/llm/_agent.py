"""The agent: a run's conversation, its model calls under the runtime's policy, its tools."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

import outcome
import trio

from .._agent import Agent
from .._context import AgentContext
from .._core._journal import Step
from .._core._resilience import Dependency
from .._exceptions import (
    CircuitOpenError,
    ConfigError,
    DependencyFailedError,
    RunFailedError,
    RunFencedError,
    ToolError,
)
from .._journal_events import ModelStep, canonical_json
from .._message_stream import MessageStream
from .._resilience import Resilience
from .._tracing import model_span
from .._values import JSON, dumps
from ._config import LLMConfig, LLMStreamInterrupted, Tool, _httpx, _retryable, _tools
from ._history import history_messages
from ._stream import ModelResponse, ToolCall, stream_chat

if TYPE_CHECKING:
    import httpx

# -------------------------------------------------------------------------------- the agent


def resilience_of(ctx: AgentContext) -> Resilience:
    """The runtime's resilience, as the context holds it (until the context has ``ctx.call``)."""
    return ctx._resilience


async def _with_heartbeats(ctx: AgentContext, fn: Callable[[], Awaitable[Any]]) -> Any:
    """``await fn()``, heartbeating meanwhile (a model may think longer than the heartbeat
    timeout before its first token, and deltas are not heartbeats)."""

    async def beat() -> None:
        with contextlib.suppress(RunFencedError):
            while True:
                await trio.sleep(ctx.beat_every)
                await ctx.heartbeat()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(beat)
        result = await outcome.acapture(fn)  # raised outside the nursery: no ExceptionGroup
        nursery.cancel_scope.cancel()
    return result.unwrap()


def conversation(input: JSON, system_prompt: str | None) -> list[dict[str, JSON]]:
    """The messages a run starts with when its input is ``{"messages": [...]}`` in the
    chat-completions format (or the user's text: a string, or ``{"text": …}``). Runs started
    with text read their thread's conversation instead (``_history.py``)."""
    if isinstance(input, dict) and isinstance(input.get("text"), str):
        input = input["text"]
    if isinstance(input, str):
        messages: list[dict[str, JSON]] = [{"role": "user", "content": input}]
    elif isinstance(input, dict) and isinstance(input.get("messages"), list):
        messages = list(input["messages"])
        if not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise RunFailedError("input.messages must be a non-empty list of {role, content}")
    else:
        raise RunFailedError('the input must be a string or {"messages": [...]}')
    if system_prompt is not None and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


class OpenAIChatAgent(Agent):
    """The agent; :func:`make_llm_agent` makes a configured subclass (or subclass it and set
    ``config``, ``tools`` and ``dependency`` yourself)."""

    name = "llm"
    config: ClassVar[LLMConfig]
    tools: ClassVar[Mapping[str, Tool]] = {}
    dependency: ClassVar[str] = "llm"
    """The dependency (``RuntimeConfig.dependencies``) whose policy the model calls follow."""

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        httpx_ = _httpx()
        config = getattr(self, "config", None)
        if not isinstance(config, LLMConfig):
            raise RunFailedError(f"{type(self).__qualname__} has no LLMConfig: use make_llm_agent")
        if isinstance(input, dict) and "messages" in input:  # the chat itself, as given
            messages = conversation(input, config.system_prompt)
        else:  # the thread's stored conversation, within the budget
            messages = history_messages(
                await ctx.conversation(),
                input,
                run_id=ctx.run_id,
                system_prompt=config.system_prompt,
                max_chars=config.max_history_chars,
            )
        headers = {"Accept": "text/event-stream"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        usage: dict[str, JSON] = {}
        model = config.model
        async with httpx_.AsyncClient(timeout=config.timeout, headers=headers) as client:
            for round_ in range(config.max_tool_rounds + 1):
                body = self.request(messages, tools=round_ < config.max_tool_rounds)
                response = await self._journaled_answer(ctx, client, body)
                model = response.model or model
                _add_usage(usage, response.usage)
                if not response.tool_calls:
                    return {"text": response.text, "model": model, "usage": usage or None}
                if round_ == config.max_tool_rounds:
                    break
                messages.append(_assistant_turn(response))
                for call in response.tool_calls:
                    content = await self.run_tool(ctx, call)
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        raise RunFailedError(
            f"the model still asked for tools after max_tool_rounds={config.max_tool_rounds}"
        )

    async def _journaled_answer(
        self, ctx: AgentContext, client: httpx.AsyncClient, body: dict[str, JSON]
    ) -> ModelResponse:
        """One model response, journaled: an attempt that asks the same thing at the same point
        of the run gets the recorded response (and its message, committed once already, is
        neither streamed nor committed again) instead of paying for the call again. The
        response is kept beside the events (``netra_model_calls``), not in the user's stream,
        and commits with its streamed text (one unit)."""
        name = f"model:{self.dependency}"
        request_sha256 = hashlib.sha256(canonical_json(body).encode()).hexdigest()
        args_json = canonical_json({"request_sha256": request_sha256})
        step = ctx._cursor.step(name, args_json)
        with model_span(ctx._tools.trace, self.config.model, replayed=step.replayed) as span:
            response = await self._journaled_step(
                ctx, client, body, step, request_sha256, args_json
            )
            if span is not None and response.model:
                span.set_attribute("netra.response_model", response.model)
        return response

    async def _journaled_step(
        self,
        ctx: AgentContext,
        client: httpx.AsyncClient,
        body: dict[str, JSON],
        step: Step,
        request_sha256: str,
        args_json: str,
    ) -> ModelResponse:
        """The model call of ``step``: replayed, or made and then recorded."""
        name = f"model:{self.dependency}"
        cursor = ctx._cursor
        if step.replay_json is not None:
            response = ModelResponse.from_json(json.loads(step.replay_json))
            if response.text:
                async with ctx.message() as replayed:  # the journal's message: not again
                    await replayed.write(response.text)
            return response
        try:
            async with contextlib.AsyncExitStack() as stack:
                response = await self._answer(ctx, client, body, stack)
                if step.step is not None:  # rides the commit of its streamed text
                    response_json = dumps(response.to_json())
                    ctx._model = ModelStep(
                        step.step, name, args_json, request_sha256, response_json
                    )
            # (leaving the stack committed the streamed text as one message)
        finally:
            cursor.end()
        if ctx._model is not None:  # no text was streamed: the model call commits alone
            events, rows = ctx._staging.take()
            await ctx._commit_staged(events, rows)
        return response

    async def _answer(
        self, ctx: AgentContext, client: httpx.AsyncClient, body: dict[str, JSON], stack: Any
    ) -> ModelResponse:
        stream: MessageStream | None = None

        async def on_text(text: str) -> None:
            nonlocal stream
            if stream is None:  # a message only if there is text (not for tool-only answers)
                stream = await stack.enter_async_context(ctx.message())
            await stream.write(text)

        response = await _with_heartbeats(ctx, lambda: self.complete(ctx, client, body, on_text))
        return cast(ModelResponse, response)

    def request(self, messages: list[dict[str, JSON]], *, tools: bool) -> dict[str, JSON]:
        """The request body of a model call (override to add fields)."""
        config = self.config
        body: dict[str, JSON] = {"model": config.model, "messages": list(messages), "stream": True}
        if config.include_usage:
            body["stream_options"] = {"include_usage": True}
        if tools and self.tools:
            body["tools"] = [
                {"type": "function", "function": {"name": name, "description": t.description,
                                                  "parameters": dict(t.parameters)}}
                for name, t in self.tools.items()
            ]  # fmt: skip
        if config.temperature is not None:
            body["temperature"] = config.temperature
        body.update(config.extra_body)
        return body

    async def complete(
        self,
        ctx: AgentContext,
        client: httpx.AsyncClient,
        body: dict[str, JSON],
        on_text: Callable[[str], Awaitable[None]],
    ) -> ModelResponse:
        """One model call, under the dependency's retries and breaker (see the module doc)."""
        url = f"{self.config.base_url}/chat/completions"
        wrote = False

        async def sink(text: str) -> None:
            nonlocal wrote
            wrote = True
            await on_text(text)

        async def attempt() -> ModelResponse:
            if wrote:  # e.g. a RetryPolicy.timeout that struck mid-answer
                raise LLMStreamInterrupted("an earlier attempt of this model call streamed text")
            return await stream_chat(client, url, body, sink)

        try:
            response, _attempts = await resilience_of(ctx).call(
                self.dependency, attempt, {}, retryable=_retryable
            )
        except CircuitOpenError as exc:
            raise RunFailedError(f"the model API is unavailable: {exc}") from exc
        except DependencyFailedError as exc:
            if isinstance(exc.last_error, LLMStreamInterrupted):
                raise exc.last_error from None  # a crash: the rollback retracts the text
            raise RunFailedError(f"the model call failed: {exc}") from exc
        return cast(ModelResponse, response)

    async def run_tool(self, ctx: AgentContext, call: ToolCall) -> str:
        """Run one tool call through ``ctx.tool``; the tool message's content (JSON text).

        An unknown tool or arguments that are not a JSON object are not run (nothing is
        recorded); a tool that fails is recorded by ``ctx.tool``. Either way the model gets
        ``{"error": …}`` and may answer differently.
        """
        tool = self.tools.get(call.name)
        if tool is None:
            return dumps({"error": f"there is no tool named {call.name!r}"})
        try:
            args = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError as exc:
            return dumps({"error": f"the arguments are not valid JSON: {exc}"})
        if not isinstance(args, dict):
            return dumps({"error": "the arguments must be a JSON object"})
        try:
            result = await ctx.tool(call.name, tool.fn, **args)
        except ToolError as exc:
            return dumps({"error": exc.error})
        return result if isinstance(result, str) else dumps(result)


def _assistant_turn(response: ModelResponse) -> dict[str, JSON]:
    calls: list[JSON] = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in response.tool_calls
    ]
    return {"role": "assistant", "content": response.text or None, "tool_calls": calls}


def _add_usage(total: dict[str, JSON], usage: Mapping[str, JSON] | None) -> None:
    for key, value in (usage or {}).items():
        if isinstance(value, int) and not isinstance(value, bool):
            before = total.get(key, 0)
            total[key] = (before if isinstance(before, int) else 0) + value


def make_llm_agent(
    config: LLMConfig,
    *,
    name: str = "llm",
    tools: Mapping[str, Tool | Callable[..., Any]] | None = None,
    dependency: str = "llm",
) -> type[OpenAIChatAgent]:
    """The agent class to register: ``open_runtime(cfg, agents=[make_llm_agent(...)])``.

    ``tools`` maps each tool's name (also its dependency name for ``ctx.tool``) to a
    :class:`Tool` or a plain function (described by its docstring, arguments unspecified).
    Declare ``llm_dependency(dependency)`` in ``RuntimeConfig.dependencies`` for retries and
    a breaker (undeclared: one attempt, no breaker). Raises ``ImportError`` without httpx.
    """
    _httpx()
    if not isinstance(config, LLMConfig):
        raise ConfigError(f"config must be an LLMConfig, got {config!r}")
    checked = _tools(tools or {})
    Dependency(dependency)  # validates the name
    attributes = {"name": name, "config": config, "tools": checked, "dependency": dependency}
    cls = type(f"OpenAIChatAgent_{name}", (OpenAIChatAgent,), attributes)
    cls.__doc__ = f"An OpenAI-compatible chat agent for {config.model!r} at {config.base_url}."
    return cls
