"""One HTTP attempt of a model call: the SSE stream of ``chat.completion.chunk`` objects."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._values import JSON
from ._config import LLMResponseError, LLMStatusError, LLMStreamError, LLMStreamInterrupted, _httpx

if TYPE_CHECKING:
    import httpx

# ---------------------------------------------------------------------- one model response


@attrs.frozen
class ToolCall:
    """A tool call the model asked for (``arguments`` as the model wrote it: JSON text)."""

    id: str
    name: str
    arguments: str


@attrs.frozen(kw_only=True)
class ModelResponse:
    """What one model call produced."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    model: str | None = None
    usage: Mapping[str, JSON] | None = attrs.field(default=None, hash=False)

    def to_json(self) -> dict[str, JSON]:
        calls: list[JSON] = [attrs.asdict(c) for c in self.tool_calls]
        usage = dict(self.usage) if self.usage is not None else None
        return {"text": self.text, "tool_calls": calls, "finish_reason": self.finish_reason,
                "model": self.model, "usage": usage}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelResponse:
        return cls(
            text=data["text"],
            tool_calls=tuple(ToolCall(**c) for c in data["tool_calls"]),
            finish_reason=data["finish_reason"],
            model=data["model"],
            usage=data["usage"],
        )


class _Accumulator:
    """Folds ``chat.completion.chunk`` objects into a :class:`ModelResponse`."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.usage: dict[str, JSON] | None = None
        self.done = False

    def feed(self, chunk: Any) -> str:
        """Take one chunk; return its content text (``""`` if none)."""
        if not isinstance(chunk, dict):
            raise LLMResponseError(f"a stream chunk is not a JSON object: {chunk!r}"[:300])
        if chunk.get("error") is not None:
            error = chunk["error"]
            detail = error.get("message", error) if isinstance(error, dict) else error
            raise LLMResponseError(f"the model API reported an error: {detail}"[:500])
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        text = ""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                text += delta["content"]
            for part in delta.get("tool_calls") or ():
                self._tool_part(part)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        self.parts.append(text)
        return text

    def _tool_part(self, part: Any) -> None:
        if not isinstance(part, dict):
            raise LLMResponseError(f"a tool call chunk is not a JSON object: {part!r}"[:300])
        index = part.get("index")
        if not isinstance(index, int):  # servers that omit it: a new id starts a new call
            new = part.get("id") and all(c["id"] != part["id"] for c in self.calls.values())
            index = len(self.calls) if new or not self.calls else max(self.calls)
        call = self.calls.setdefault(index, {"id": "", "name": "", "arguments": []})
        function = part.get("function") or {}
        if part.get("id") and not call["id"]:
            call["id"] = str(part["id"])
        if function.get("name") and not call["name"]:  # sent once (some servers repeat it)
            call["name"] = str(function["name"])
        if isinstance(function.get("arguments"), str):
            call["arguments"].append(function["arguments"])

    @property
    def ended(self) -> bool:
        return self.done or self.finish_reason is not None

    def response(self) -> ModelResponse:
        calls = tuple(
            ToolCall(c["id"] or f"call_{i}", c["name"], "".join(c["arguments"]))
            for i, c in sorted(self.calls.items())
        )
        return ModelResponse(
            text="".join(self.parts),
            tool_calls=calls,
            finish_reason=self.finish_reason,
            model=self.model,
            usage=self.usage,
        )


class _SSE:
    """Server-sent events, line by line: ``data:`` fields joined, dispatched at a blank line."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def line(self, line: str) -> str | None:
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        data, self._data = self._data, []
        return "\n".join(data) if data else None


async def _error_detail(response: httpx.Response) -> str:
    text = (await response.aread())[:4096].decode("utf-8", "replace")
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        error = json.loads(text)["error"]
        return str(error.get("message", error) if isinstance(error, dict) else error)
    return text.strip()[:300] or response.reason_phrase


DRAIN_SECONDS = 2.0
"""After ``[DONE]``, how long the rest of the response may take to end (it is read to its end,
not abandoned: httpx's nested async generators must finish, not be garbage-collected)."""


async def stream_chat(
    client: httpx.AsyncClient,
    url: str,
    body: Mapping[str, JSON],
    on_text: Callable[[str], Awaitable[None]],
) -> ModelResponse:
    """One HTTP attempt: POST ``body`` to ``url``, pass each content token to ``on_text``."""
    httpx_ = _httpx()
    acc = _Accumulator()
    wrote = False
    sse = _SSE()

    async def event(data: str) -> bool:
        """Handle one event; True if it was the last (``[DONE]``)."""
        nonlocal wrote
        if data.strip() == "[DONE]":
            acc.done = True
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            raise LLMResponseError(f"a stream event is not JSON: {data!r}"[:300]) from None
        text = acc.feed(chunk)
        if text:
            wrote = True
            await on_text(text)
        return False

    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                raise LLMStatusError(response.status_code, await _error_detail(response))
            with trio.CancelScope() as drain:
                async for line in response.aiter_lines():
                    data = sse.line(line)
                    if data is not None and not acc.done and await event(data):
                        drain.deadline = trio.current_time() + DRAIN_SECONDS
            last = sse.flush()  # an event the server did not end with a blank line
            if last is not None and not acc.done:
                await event(last)
    except httpx_.TransportError as exc:  # connect, timeouts, a broken or truncated stream
        if acc.done:
            return acc.response()  # the answer was complete: what came after it does not matter
        what = f"{type(exc).__name__}: {exc}"
        if wrote:
            raise LLMStreamInterrupted(f"the model's stream broke mid-answer ({what})") from exc
        raise LLMStreamError(f"the model API did not answer ({what})") from exc
    if not acc.ended:
        if wrote:
            raise LLMStreamInterrupted("the model's stream ended mid-answer (no [DONE])")
        raise LLMStreamError("the model's stream ended before the answer (no [DONE])")
    return acc.response()
