"""What ``POST /agui`` reads of an AG-UI ``RunAgentInput`` (docs/protocol.md, "AG-UI over HTTP").

:func:`parse_run_input` checks the body and keeps what netra uses: the ids, the user messages
(``(id, text)`` in order), the frontend tool result the messages end with, the ``resume``
entries that answer an interrupt, and the forwarded props (``agent``, ``if_busy``, ``input``,
``onDisconnect``). ValueError says what is wrong (a 400).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import attrs
import orjson

from .._core._threads import is_thread_name
from .._values import JSON
from ._protocol import MAX_TEXT_BYTES

IF_BUSY = ("parallel", "reject", "enqueue", "interrupt")


class ToolResult(NamedTuple):
    """A ``role: "tool"`` message: the client's result of a frontend tool call."""

    message_id: str
    call_id: str
    content: str


class Resume(NamedTuple):
    """A ``resume`` entry: the answer to an interrupt."""

    interrupt_id: str
    resolved: bool
    payload: JSON


@attrs.frozen(kw_only=True)
class RunInput:
    """What ``POST /agui`` takes from a ``RunAgentInput``."""

    thread_id: str
    run_id: str
    users: list[tuple[str, str]]
    """``(id, text)`` of its user messages, in order."""
    message_ids: frozenset[str]
    """The ids of every message of the input (the client shows them: never echoed)."""
    tool_result: ToolResult | None = None
    """The tool result ``messages`` ends with, if it does."""
    resume: Resume | None = None
    agent: str | None = None
    if_busy: str | None = None
    input: JSON = None
    """``forwardedProps.input``: the run's input instead of the last user message's text."""
    cancel_on_disconnect: bool | None = None
    """``forwardedProps.onDisconnect``: ``"cancel"`` True, ``"continue"`` False, absent None
    (the server's default, ``GatewayConfig.agui_on_disconnect``)."""
    tools: tuple[dict[str, JSON], ...] = ()
    """``tools``: the client's (frontend) tools, ``{"name", "description", "parameters"}``,
    offered to the run it starts (``ctx.client_tools()``)."""


def parse_run_input(body: bytes) -> RunInput:
    """Check an AG-UI ``RunAgentInput`` (the parts netra uses); ValueError says what is wrong."""
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("the body must be a JSON RunAgentInput") from None
    if not isinstance(doc, dict):
        raise ValueError("the body must be a JSON object (a RunAgentInput)")  # noqa: TRY004
    thread_id, run_id, messages = doc.get("threadId"), doc.get("runId"), doc.get("messages")
    if not is_thread_name(thread_id):
        raise ValueError(
            "threadId must be a netra thread name: 1-128 characters of A-Z a-z 0-9 . _ : -"
        )
    assert isinstance(thread_id, str)
    if not isinstance(run_id, str) or not run_id or len(run_id) > 256:
        raise ValueError("runId must be a non-empty string")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("messages must be a list of message objects")
    for key in ("tools", "context"):
        if key in doc and doc[key] is not None and not isinstance(doc[key], list):
            raise ValueError(f"{key} must be a list")
    tools = _tools(doc.get("tools"))
    users = _users(messages)
    tool_result = _tool_result(messages[-1]) if messages else None
    resume = _resume(doc.get("resume"))
    if not users and tool_result is None and resume is None:
        raise ValueError("messages must contain a user message")
    ids = frozenset(str(m["id"]) for m in messages if isinstance(m.get("id"), str))
    props = doc.get("forwardedProps")
    props = props if isinstance(props, dict) else {}
    agent, if_busy, disconnect = props.get("agent"), props.get("if_busy"), props.get("onDisconnect")
    if agent is not None and not isinstance(agent, str):
        raise ValueError("forwardedProps.agent must be a string")
    if if_busy is not None and if_busy not in IF_BUSY:
        raise ValueError("forwardedProps.if_busy must be parallel, reject, enqueue or interrupt")
    if disconnect not in (None, "cancel", "continue"):
        raise ValueError("forwardedProps.onDisconnect must be cancel or continue")
    return RunInput(
        thread_id=thread_id,
        run_id=run_id,
        users=users,
        message_ids=ids,
        tool_result=tool_result,
        resume=resume,
        agent=agent,
        if_busy=if_busy,
        input=props.get("input"),
        cancel_on_disconnect=None if disconnect is None else disconnect == "cancel",
        tools=tools,
    )


def _tools(tools: object) -> tuple[dict[str, JSON], ...]:
    if not tools:
        return ()
    assert isinstance(tools, list)
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise ValueError("every tool needs a name")  # noqa: TRY004
        description = tool.get("description", "")
        if not isinstance(description, str):
            raise ValueError("a tool's description must be a string")  # noqa: TRY004
        entry: dict[str, JSON] = {"name": tool["name"], "description": description}
        if tool.get("parameters") is not None:
            entry["parameters"] = tool["parameters"]
        out.append(entry)
    return tuple(out)


def _users(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    users: list[tuple[str, str]] = []
    for message in messages:
        if message.get("role") != "user":
            continue
        message_id = message.get("id")
        if not is_thread_name(message_id):
            raise ValueError(
                "every user message needs an id: 1-128 characters of A-Z a-z 0-9 . _ : -"
            )
        text = _text_of(message.get("content"))
        if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise ValueError(f"a user message is longer than {MAX_TEXT_BYTES} bytes")
        users.append((str(message_id), text))
    if len({m for m, _ in users}) != len(users):
        raise ValueError("the user messages' ids must be distinct")
    return users


def _tool_result(message: dict[str, Any]) -> ToolResult | None:
    if message.get("role") != "tool":
        return None
    message_id, call_id = message.get("id"), message.get("toolCallId")
    if not isinstance(message_id, str) or not message_id or len(message_id) > 256:
        raise ValueError("a tool message needs an id")
    if not isinstance(call_id, str) or not call_id:
        raise ValueError("a tool message needs a toolCallId")
    content = _text_of(message.get("content"))
    if len(content.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise ValueError(f"a tool result is longer than {MAX_TEXT_BYTES} bytes")
    return ToolResult(message_id, call_id, content)


def _resume(entries: object) -> Resume | None:
    if entries is None:
        return None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("resume must be a list of {interruptId, status, payload}")
    if not entries:
        return None
    if len(entries) > 1:
        raise ValueError("netra asks one question at a time: resume answers one interrupt")
    entry = entries[0]
    interrupt_id, status = entry.get("interruptId"), entry.get("status")
    if not isinstance(interrupt_id, str) or status not in ("resolved", "cancelled"):
        raise ValueError("a resume entry has an interruptId and status resolved or cancelled")
    return Resume(interrupt_id, status == "resolved", entry.get("payload"))


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts) and parts:
            return "".join(p for p in parts if isinstance(p, str))
    raise ValueError("every user message must have text content")
