"""The cluster's command codec: a session command as an inbox row, and a refusal as an answer.

A follower posts the commands that change a user's session (``start_run``, ``say``,
``cancel_run``, ``send_input``, ``send_to_run``, ``delete_thread``, ``erase_user``) to the store's inbox for the owner
(:func:`command_of`); the owner reads them back as mailbox messages (:func:`message_of`) and
answers each, a refusal as its command error (:func:`error_payload`), which the asking node
raises again (:func:`raise_reply`).
"""

from __future__ import annotations

from typing import Any

from ._exceptions import (
    BusyError,
    CommandError,
    IllegalStateError,
    MailboxFullError,
    TooLargeError,
    UnknownAgentError,
    UnknownRunError,
)
from ._messages import (
    CancelRun,
    DeleteThread,
    EraseUser,
    Message,
    Reply,
    SendInput,
    SendToRun,
    StartRun,
)
from ._values import JSON, dumps, loads

#: Command errors by wire code, to raise on the asking node what the owner refused.
_ERRORS: dict[str, type[CommandError]] = {
    cls.code: cls
    for cls in (
        UnknownAgentError,
        UnknownRunError,
        IllegalStateError,
        TooLargeError,
        MailboxFullError,
        BusyError,
    )
}


def command_of(msg: Message) -> tuple[str, dict[str, JSON]] | None:
    """The inbox form of a command that changes the session (None for anything else)."""
    match msg:
        case StartRun():
            return "start_run", {
                "agent": msg.agent,
                "input": msg.input,
                "user_text": msg.user_text,
                "if_busy": msg.if_busy,
                "message_meta": msg.message_meta,
                "trace_context": msg.trace_context,
                "thread": msg.thread,
                "message_id": msg.message_id,
                "earlier": [list(pair) for pair in msg.earlier],
                "start_at": msg.start_at,
            }
        case CancelRun():
            return "cancel_run", {"run_id": msg.run_id}
        case DeleteThread():
            return "delete_thread", {
                "thread": msg.thread,
                "idle_before": msg.idle_before,
                "limit": msg.limit,
            }
        case EraseUser():
            return "erase_user", {}
        case SendInput():
            return "send_input", {"run_id": msg.run_id, "input": msg.input, "meta": msg.meta}
        case SendToRun():
            return "send_to_run", {"run_id": msg.run_id, "message": msg.message}
    return None


def message_of(kind: str, payload: dict[str, Any]) -> Message:
    """The supervisor message for a command read from the inbox (its reply is the owner's)."""
    reply: Reply[Any] = Reply()
    match kind:
        case "start_run":
            return StartRun(
                agent=payload["agent"],
                input=payload["input"],
                user_text=payload["user_text"],
                reply=reply,
                if_busy=payload["if_busy"],
                message_meta=payload.get("message_meta"),
                trace_context=payload.get("trace_context"),
                thread=payload.get("thread"),
                message_id=payload.get("message_id"),
                earlier=tuple((str(m), str(t)) for m, t in payload.get("earlier") or ()),
                start_at=payload.get("start_at"),
            )
        case "cancel_run":
            return CancelRun(run_id=payload["run_id"], reply=reply)
        case "delete_thread":
            return DeleteThread(
                thread=payload["thread"],
                reply=reply,
                idle_before=payload.get("idle_before"),
                limit=payload.get("limit"),
            )
        case "erase_user":
            return EraseUser(reply=reply)
        case "send_input":
            return SendInput(
                run_id=payload["run_id"],
                input=payload["input"],
                reply=reply,
                meta=str(payload.get("meta") or ""),
            )
        case "send_to_run":
            return SendToRun(run_id=payload["run_id"], message=payload["message"], reply=reply)
    raise CommandError(f"unknown inbox command {kind!r}")


def error_payload(exc: CommandError) -> str:
    """How an owner answers a refused command (the asking node re-raises it)."""
    return dumps({"code": exc.code, "message": exc.message})


def raise_reply(payload: str) -> None:
    """Re-raise the command error an owner answered with."""
    data = loads(payload)
    raise _ERRORS.get(data.get("code"), CommandError)(str(data.get("message", "")))
