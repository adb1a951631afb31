"""A thread's committed conversation as AG-UI messages: what a ``MESSAGES_SNAPSHOT`` carries.

Pure. :func:`thread_messages` maps the thread's committed events with the stream mapping
(:class:`~._agui.AguiMapper`, as a replay from the start would) and folds the frames into
messages the way the stock client (``@ag-ui/client``'s message-applying pipeline) folds them —
so a client that applies the snapshot shows exactly what a client that replayed the thread
shows. Only the events the mapping makes are folded (text, reasoning, tool calls and results).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._values import Event
from ._agui import AguiMapper


def thread_messages(events: Iterable[Event]) -> list[dict[str, Any]]:
    """The AG-UI messages of a thread's committed ``events`` (all of them, in ``seq`` order)."""
    mapper = AguiMapper()
    messages: list[dict[str, Any]] = []
    for event in events:
        for frame in mapper.event(event):
            apply(messages, frame.event)
    return messages


def _find(messages: list[dict[str, Any]], message_id: str) -> dict[str, Any] | None:
    return next((m for m in messages if m["id"] == message_id), None)


def _holding(messages: list[dict[str, Any]], call: str) -> int:
    """The index of the assistant message holding tool call ``call`` (-1: none)."""
    for i, message in enumerate(messages):
        if any(c["id"] == call for c in message.get("toolCalls", ())):
            return i
    return -1


def apply(messages: list[dict[str, Any]], event: dict[str, Any]) -> None:
    """Fold one AG-UI event into ``messages`` as the stock client does."""
    kind = event["type"]
    if kind == "RUN_STARTED":  # the messages of its input the client does not have
        for message in event.get("input", {}).get("messages", ()):
            if _find(messages, message["id"]) is None:
                messages.append(dict(message))
    elif kind in ("TEXT_MESSAGE_START", "REASONING_MESSAGE_START"):
        if _find(messages, event["messageId"]) is None:
            messages.append({"id": event["messageId"], "role": event["role"], "content": ""})
    elif kind in ("TEXT_MESSAGE_CONTENT", "REASONING_MESSAGE_CONTENT"):
        message = _find(messages, event["messageId"])
        if message is not None:
            message["content"] = (message.get("content") or "") + event["delta"]
    elif kind == "TOOL_CALL_START":
        call = event["toolCallId"]
        if _holding(messages, call) >= 0:
            return
        parent = event.get("parentMessageId")
        holder = _find(messages, parent) if parent is not None else None
        if holder is None or holder["role"] != "assistant":
            holder = {"id": parent if parent and holder is None else call, "role": "assistant"}
            messages.append(holder)
        holder.setdefault("toolCalls", []).append(
            {
                "id": call,
                "type": "function",
                "function": {"name": event["toolCallName"], "arguments": ""},
            }
        )
    elif kind == "TOOL_CALL_ARGS":
        at = _holding(messages, event["toolCallId"])
        if at >= 0:
            for call in messages[at]["toolCalls"]:
                if call["id"] == event["toolCallId"]:
                    call["function"]["arguments"] += event["delta"]
    elif kind == "TOOL_CALL_RESULT":
        result = {
            "id": event["messageId"],
            "role": "tool",
            "content": event["content"],
            "toolCallId": event["toolCallId"],
        }
        at = _holding(messages, event["toolCallId"])
        if at < 0:
            messages.append(result)
            return
        at += 1
        while at < len(messages) and messages[at]["role"] == "tool":
            at += 1
        messages.insert(at, result)
