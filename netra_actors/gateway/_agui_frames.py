"""The AG-UI vocabulary of netra's streams: pure values and builders, no state, no I/O.

* :class:`Frame` — one SSE frame (its ``id``, None when provisional, and one AG-UI event);
  :class:`EventId` — a parsed SSE id, ``k`` or ``k.i`` (part ``i`` of committed event ``k``'s
  group); :func:`after` — what of a group a stream resumed at ``k.i`` still sends.
* :class:`AguiIds` — the AG-UI ``threadId``/``runId`` of one segment of a netra run, as a
  ``POST /agui`` stored them (:func:`agui_ids_of`); :func:`question_id` — the id of a question's
  interrupt or frontend tool call.
* The AG-UI events one netra event becomes (:func:`text_message`, :func:`reasoning`,
  :func:`tool_call`, :func:`tool_result`, :func:`custom`), as docs/protocol.md's "AG-UI over
  HTTP" maps them. :mod:`._agui` decides which, in which order, per stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import attrs
import orjson

from .._validate import MAX_SEQ
from .._values import JSON, Event

TERMINAL_STATES = frozenset({"completed", "failed", "timeout", "dead", "cancelled"})
ERROR_STATES = frozenset({"failed", "timeout", "dead"})
CUSTOM_PREFIX = "netra."
"""CUSTOM events made from netra events are named ``netra.<event>`` (value: the v1 ``data``)."""
CLIENT_TOOL = "client_tool"
"""The field of an ``input_requested`` that makes it a frontend tool call (``ctx.client_tool``)."""


class Frame(NamedTuple):
    """One SSE frame: its ``id`` (None: provisional, never replayed) and its AG-UI event."""

    id: str | None
    event: dict[str, Any]

    def sse(self) -> bytes:
        """The frame as Server-Sent Events text (``id:`` line when durable, then ``data:``)."""
        data = orjson.dumps(self.event)
        if self.id is None:
            return b"data: " + data + b"\n\n"
        return b"id: " + self.id.encode() + b"\ndata: " + data + b"\n\n"


class EventId(NamedTuple):
    """A parsed SSE id: ``k`` (part None: the whole event) or ``k.i`` (part i of event k)."""

    seq: int
    part: int | None

    @classmethod
    def parse(cls, text: str) -> EventId:
        """Parse ``k`` or ``k.i`` (0 ≤ k ≤ MAX_SEQ, 1 ≤ i ≤ MAX_SEQ); ValueError for anything
        else (a ``seq`` past 2^63 - 1 is a bad request, never a store query)."""
        head, dot, tail = text.strip().partition(".")
        if not digits(head) or (dot and not digits(tail)):
            raise ValueError(f"not an event id: {text!r}")
        seq, part = int(head), int(tail) if dot else None
        if (part is not None and not 1 <= part <= MAX_SEQ) or seq > MAX_SEQ:
            raise ValueError(f"not an event id: {text!r}")
        return cls(seq, part)


@attrs.frozen
class AguiIds:
    """The AG-UI ``threadId``/``runId`` (and ``parentRunId``) of one segment of a netra run."""

    thread_id: str
    run_id: str
    parent: str | None = None


def agui_ids_of(event: Event) -> AguiIds | None:
    """The AG-UI ids a ``POST /agui`` stored with an event (``data.agui``): a run's user
    ``message``, or the ``run_input`` that resumed it."""
    agui = event.data.get("agui")
    if event.event in ("message", "run_input") and isinstance(agui, dict):
        thread, run = agui.get("threadId"), agui.get("runId")
        if isinstance(thread, str) and isinstance(run, str):
            return AguiIds(thread, run)
    return None


def question_id(run_id: str, seq: int) -> str:
    """The AG-UI id of the question ``input_requested`` (seq ``seq``) asked: an interrupt's
    ``id``, or a frontend tool call's ``toolCallId``."""
    return f"{run_id}.q{seq}"


def parse_question_id(text: str) -> tuple[str, int] | None:
    """``(netra run id, seq)`` of a :func:`question_id`, or None."""
    run_id, dot, tail = text.rpartition(".q")
    if not dot or not run_id or not digits(tail) or int(tail) > MAX_SEQ:
        return None
    return run_id, int(tail)


def after(frames: list[Frame], part: int) -> Iterator[Frame]:
    """The frames of one event's mapping that follow part ``part`` (``Last-Event-ID:
    k.part``): the id-less frames before the group, then the group's parts after ``part``.

    The bare-``k`` frame always remains, even when the group is now shorter than ``part``; a
    ``RUN_STARTED`` among the parts left out is sent without its id (the resumed stream opens
    with it).
    """
    durable = [f for f in frames if f.id is not None]
    n = len(durable)
    i = 0
    for frame in frames:
        if frame.id is None:
            yield frame
            continue
        i += 1
        if i > part or i == n:
            yield frame
        elif frame.event.get("type") == "RUN_STARTED":
            yield provisional(frame)


MESSAGE_PARTS = frozenset(
    {
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
        "MESSAGES_SNAPSHOT",
    }
)
"""The events that make or change the client's messages (a snapshot stands for them)."""


def provisional(frame: Frame) -> Frame:
    """A durable frame sent again without its id (and without its seq)."""
    event = dict(frame.event)
    event["metadata"] = {"netra": {"run_id": event["metadata"]["netra"]["run_id"]}}
    return Frame(None, event)


def creates(item: dict[str, Any]) -> bool:
    """Whether an event makes the client add a message."""
    kind = item["type"]
    if kind == "RUN_STARTED":
        return "input" in item
    return kind in ("TEXT_MESSAGE_START", "REASONING_MESSAGE_START", "TOOL_CALL_RESULT")


def text_message(message_id: str, role: str, text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"type": "TEXT_MESSAGE_START", "messageId": message_id, "role": role}
    ]
    if text:
        out.append({"type": "TEXT_MESSAGE_CONTENT", "messageId": message_id, "delta": text})
    out.append({"type": "TEXT_MESSAGE_END", "messageId": message_id})
    return out


def reasoning(message_id: str, text: JSON) -> list[dict[str, Any]]:
    """``agent_thinking``: a reasoning span holding one reasoning message."""
    span = f"{message_id}.span"
    out: list[dict[str, Any]] = [
        {"type": "REASONING_START", "messageId": span},
        {"type": "REASONING_MESSAGE_START", "messageId": message_id, "role": "reasoning"},
    ]
    if isinstance(text, str) and text:
        out.append({"type": "REASONING_MESSAGE_CONTENT", "messageId": message_id, "delta": text})
    out.append({"type": "REASONING_MESSAGE_END", "messageId": message_id})
    out.append({"type": "REASONING_END", "messageId": span})
    return out


def tool_call(call: str, name: str, args: JSON) -> list[dict[str, Any]]:
    """A tool call, in the (empty) assistant message that holds it (``parentMessageId``)."""
    holder = f"{call}.call"
    return [
        {"type": "TEXT_MESSAGE_START", "messageId": holder, "role": "assistant"},
        {"type": "TEXT_MESSAGE_END", "messageId": holder},
        {
            "type": "TOOL_CALL_START",
            "toolCallId": call,
            "toolCallName": name,
            "parentMessageId": holder,
        },
        {"type": "TOOL_CALL_ARGS", "toolCallId": call, "delta": to_json(args)},
        {"type": "TOOL_CALL_END", "toolCallId": call},
    ]


def tool_result(message_id: str, call: str, content: str) -> dict[str, Any]:
    return {
        "type": "TOOL_CALL_RESULT",
        "messageId": message_id,
        "toolCallId": call,
        "content": content,
        "role": "tool",
    }


def millis(ts: float) -> int:
    return int(ts * 1000)


def digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def custom(name: str, data: dict[str, JSON]) -> dict[str, Any]:
    return {"type": "CUSTOM", "name": CUSTOM_PREFIX + name, "value": data}


def to_json(value: object) -> str:
    return orjson.dumps(value).decode()
