"""The chat messages a model call starts with: the run's conversation, within a size budget.

The conversation is the thread's committed messages up to the run's start
(``ctx.conversation()``, the same in every attempt). Each becomes a chat-completions message —
a tool call becomes the assistant's ``tool_calls`` entry followed by its ``tool`` result — and
the messages are grouped in *turns* (a user message and what followed it); the run's own user
message ends the list. Turns are dropped oldest first until the conversation fits
``LLMConfig.max_history_chars``; the run's own turn is always kept, and the system prompt always
comes first.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._conversation import ConversationMessage
from .._exceptions import RunFailedError
from .._values import JSON, dumps


def input_text(input: JSON) -> str:
    """The user's text a run was started with: a string, or ``{"text": …}``."""
    if isinstance(input, dict) and isinstance(input.get("text"), str):
        input = input["text"]
    if not isinstance(input, str):
        raise RunFailedError('the input must be a string, {"text": …} or {"messages": [...]}')
    return input


def chat_turns(history: Sequence[ConversationMessage]) -> list[list[dict[str, JSON]]]:
    """The conversation as chat messages, grouped in turns (a turn begins at a user message).

    A tool call whose result was never committed is left out (a chat request must answer every
    tool call it shows)."""
    turns: list[list[dict[str, JSON]]] = []
    for entry in history:
        if entry.role == "user" or not turns:
            turns.append([])
        turn = turns[-1]
        if entry.role in ("user", "assistant"):
            turn.append({"role": entry.role, "content": entry.text})
            continue
        tool = entry.tool
        if tool is None or not tool.completed:
            continue
        call = {
            "id": tool.call_id,
            "type": "function",
            "function": {"name": tool.name, "arguments": dumps(tool.args)},
        }
        content = dumps(tool.result) if tool.error is None else dumps({"error": tool.error})
        turn.append({"role": "assistant", "content": None, "tool_calls": [call]})
        turn.append({"role": "tool", "tool_call_id": tool.call_id, "content": content})
    return turns


def _size(turn: list[dict[str, JSON]]) -> int:
    return sum(len(dumps(message)) for message in turn)


def within_budget(
    turns: list[list[dict[str, JSON]]], max_chars: int
) -> list[list[dict[str, JSON]]]:
    """The most recent turns whose JSON fits in ``max_chars`` (the last one always)."""
    kept: list[list[dict[str, JSON]]] = []
    total = 0
    for turn in reversed(turns):
        size = _size(turn)
        if kept and total + size > max_chars:
            break
        kept.append(turn)
        total += size
    kept.reverse()
    return kept


def history_messages(
    history: Sequence[ConversationMessage],
    input: JSON,
    *,
    run_id: str,
    system_prompt: str | None,
    max_chars: int,
) -> list[dict[str, JSON]]:
    """The messages of the run's first model call: the system prompt, then the conversation
    within ``max_chars`` (oldest turns dropped first), ending with the run's own user messages
    (a queued run's conversation also holds the answers of the runs it waited for, committed
    after its message). A run without a user message of its own (``start_run``) ends with its
    input as the user's message."""
    own = [m for m in history if m.role == "user" and m.run_id == run_id]
    turns = chat_turns([m for m in history if not (m.role == "user" and m.run_id == run_id)])
    if own:
        turns.append([{"role": "user", "content": m.text} for m in own])
    else:
        turns.append([{"role": "user", "content": input_text(input)}])
    messages: list[dict[str, JSON]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    for turn in within_budget(turns, max_chars):
        messages.extend(turn)
    return messages
