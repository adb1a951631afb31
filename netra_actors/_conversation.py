"""A run's conversation: the committed messages of its thread, as typed values.

``ctx.conversation()`` gives an agent the messages of its run's thread — the user's and the
assistants' ``message`` events, and tool calls with their results — up to the run's start, as
:class:`ConversationMessage` values, oldest first. It is read from the store (never the
client's copy) **once per run** and kept with the run, so every attempt of the run gets the same
tuple; a run recovered in another process reads it again within the same bounds, stored on its
run row, and gets the same tuple again.

The bounds (both on the run row): every message of the thread with ``seq ≤ history_seq`` (the
last event of the unit that admitted the run: its own user messages for a ``say``; for a queued
or scheduled run, the head when its turn or its start time came, so it sees the answers of the
runs before it), except the runs admitted after it: other runs whose user message has
``seq > start_seq`` (a run's user messages are the first events of the unit that admits it),
with their answers and tool calls. A run stored before threads existed has no ``start_seq``:
its first event's seq is read instead.
At most :data:`MAX_CONVERSATION_EVENTS` of the thread's most recent message and tool events are
read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

import attrs

from ._exceptions import CommandError
from ._values import JSON, Event, dumps

if TYPE_CHECKING:
    from ._store import Store

CONVERSATION_EVENTS = ("message", "tool_executing", "tool_completed")
"""The events a conversation is made of."""
MAX_CONVERSATION_EVENTS = 2000
"""How many of the thread's most recent conversation events a run reads, at most."""


@attrs.frozen(kw_only=True)
class ToolCallRecord:
    """A committed tool call: its ``tool_executing`` and, once it ended, ``tool_completed``."""

    call_id: str
    name: str
    args: JSON
    result: JSON = None
    """What the tool returned (JSON), if it succeeded."""
    error: str | None = None
    """Why it failed, if it did."""
    completed: bool = False
    """False while (or if) no ``tool_completed`` was committed for it."""


CLIENT_TOOLS = "client_tools"
"""The field of a user ``message`` that lists the tools its client offered (``say``)."""


@attrs.frozen(kw_only=True)
class ClientTool:
    """A tool of the client (an AG-UI frontend tool, ``RunAgentInput.tools``), offered with a
    user's message: call it with ``ctx.client_tool(name, args)``."""

    name: str
    description: str = ""
    parameters: JSON = None
    """Its arguments' JSON Schema, as the client gave it (None: none given)."""

    def as_json(self) -> dict[str, JSON]:
        """The tool as ``say(client_tools=…)`` takes it (and the ``message`` event keeps it)."""
        out: dict[str, JSON] = {"name": self.name, "description": self.description}
        if self.parameters is not None:
            out["parameters"] = self.parameters
        return out


MAX_CLIENT_TOOLS = 128
MAX_CLIENT_TOOLS_BYTES = 64 * 1024
"""At most this many tools, this long as JSON, with one message."""


def check_client_tools(tools: Iterable[ClientTool | Mapping[str, JSON]]) -> list[JSON]:
    """``say(client_tools=…)`` checked, as the ``message`` keeps them; CommandError if not
    well formed (a name of 1-128 characters, a string description, JSON parameters)."""
    out: list[JSON] = []
    for tool in tools:
        entry = tool.as_json() if isinstance(tool, ClientTool) else dict(tool)
        name, description = entry.get("name"), entry.get("description", "")
        if not isinstance(name, str) or not 1 <= len(name) <= 128:
            raise CommandError("a client tool needs a name of 1-128 characters")
        if not isinstance(description, str):
            raise CommandError(f"client tool {name!r}: description must be a string")
        kept: dict[str, JSON] = {"name": name, "description": description}
        if entry.get("parameters") is not None:
            kept["parameters"] = entry["parameters"]
        out.append(kept)
    if len(out) > MAX_CLIENT_TOOLS:
        raise CommandError(f"at most {MAX_CLIENT_TOOLS} client tools")
    try:
        size = len(dumps(out).encode())
    except (TypeError, ValueError):
        raise CommandError("client tools must be JSON") from None
    if size > MAX_CLIENT_TOOLS_BYTES:
        raise CommandError(f"the client tools are longer than {MAX_CLIENT_TOOLS_BYTES} bytes")
    return out


def client_tools_of(value: JSON) -> tuple[ClientTool, ...]:
    """The tools a committed ``message`` lists (``data.client_tools``); malformed entries are
    skipped."""
    if not isinstance(value, list):
        return ()
    tools = []
    for entry in value:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            description = entry.get("description")
            tools.append(
                ClientTool(
                    name=entry["name"],
                    description=description if isinstance(description, str) else "",
                    parameters=entry.get("parameters"),
                )
            )
    return tuple(tools)


@attrs.frozen(kw_only=True)
class ConversationMessage:
    """One entry of a conversation: a user or assistant message, or a tool call.

    ``role`` is ``user``, ``assistant`` or ``tool`` (a tool call, in ``tool``; its ``text`` is
    empty).
    """

    role: str
    text: str
    seq: int
    """The ``seq`` of the event it was read from (a tool call: its ``tool_executing``)."""
    run_id: str | None
    message_id: str | None = None
    tool: ToolCallRecord | None = None
    client_tools: tuple[ClientTool, ...] = ()
    """For a user message: the tools its client offered with it (an AG-UI request's
    ``tools``), which the agent may call with ``ctx.client_tool``."""


def conversation_of(
    events: Iterable[Event], *, run_id: str | None = None, start_seq: int | None = None
) -> tuple[ConversationMessage, ...]:
    """The conversation made of committed ``events`` (in ``seq`` order): messages in order, each
    tool call where it began, with its result. The runs admitted after it — other runs than
    ``run_id`` whose user message has ``seq > start_seq`` — are left out, their answers too: a
    queued or scheduled run sees the turns before its own, and the answers those got by the time
    it started, never half of a later exchange."""
    events = list(events)
    later = {
        e.run_id
        for e in events
        if start_seq is not None
        and e.seq > start_seq
        and e.run_id != run_id
        and e.event == "message"
        and e.data.get("role") == "user"
    }
    out: list[ConversationMessage] = []
    calls: dict[str, int] = {}
    for event in events:
        if later and event.run_id in later:
            continue
        data = event.data
        if event.event == "message":
            role = data.get("role")
            if role not in ("user", "assistant"):
                continue
            text = data.get("text")
            message_id = data.get("message_id")
            out.append(
                ConversationMessage(
                    role=str(role),
                    text=text if isinstance(text, str) else "",
                    seq=event.seq,
                    run_id=event.run_id,
                    message_id=message_id if isinstance(message_id, str) else None,
                    client_tools=client_tools_of(data.get(CLIENT_TOOLS)),
                )
            )
        elif event.event == "tool_executing":
            call_id = str(data.get("call_id", ""))
            calls[call_id] = len(out)
            record = ToolCallRecord(
                call_id=call_id, name=str(data.get("tool")), args=data.get("args")
            )
            out.append(
                ConversationMessage(
                    role="tool", text="", seq=event.seq, run_id=event.run_id, tool=record
                )
            )
        elif event.event == "tool_completed":
            at = calls.pop(str(data.get("call_id", "")), None)
            if at is None:
                continue
            entry = out[at]
            assert entry.tool is not None
            error = data.get("error")
            tool = attrs.evolve(
                entry.tool,
                result=data.get("result"),
                error=None if error is None else str(error),
                completed=True,
            )
            out[at] = attrs.evolve(entry, tool=tool)
    return tuple(out)


def run_client_tools(
    conversation: Iterable[ConversationMessage], run_id: str
) -> tuple[ClientTool, ...]:
    """The client tools of the run's own (last) user message in its ``conversation``."""
    own = [m for m in conversation if m.role == "user" and m.run_id == run_id]
    return own[-1].client_tools if own else ()


class ConversationRun(Protocol):
    """What reading a run's conversation needs of the run (the owner's ``Run``)."""

    run_id: str
    thread: str
    start_seq: int | None
    history_seq: int | None
    conversation: tuple[ConversationMessage, ...] | None


async def run_conversation(
    store: Store, user_id: str, run: ConversationRun
) -> tuple[ConversationMessage, ...]:
    """The run's conversation: read once (see the module docstring), then kept with the run.

    (The one thing an attempt's task sets on its run: a cache of an immutable value that every
    attempt would read the same.)"""
    if run.conversation is not None:
        return run.conversation
    start = run.start_seq
    if start is None:  # a run stored before threads existed: its first event
        first = await store.first_event(user_id, run.run_id)
        start = first.seq if first is not None else 0
    bound = start if run.history_seq is None else max(start, run.history_seq)
    page = await store.history(
        user_id,
        thread=run.thread,
        before_seq=bound + 1,
        limit=MAX_CONVERSATION_EVENTS,
        kinds=CONVERSATION_EVENTS,
    )
    run.conversation = conversation_of(page.events, run_id=run.run_id, start_seq=start)
    return run.conversation
