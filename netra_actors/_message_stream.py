"""Streaming an assistant message: provisional deltas now, one committed ``message`` at the end.

``ctx.message()`` returns a :class:`MessageStream` (async) or a :class:`ThreadedMessageStream`.
Each ``write`` reaches the user's sockets at once as a provisional ``delta`` (not committed);
leaving the block normally stages the whole text as one ``message`` event and commits it, which
supersedes the deltas. Leaving it with an exception commits nothing: the attempt's rollback
retracts the text. The rules (one commit, at most ``RuntimeConfig.max_message_chars``) are
:class:`MessageText`'s; each stream only writes through its context. A stream opened while its
attempt replays a message of the journal (``replaying``) sends no deltas: its text is compared
with the journal's when it closes, and commits only if it differs (a divergence).
"""

from __future__ import annotations

from typing import Protocol

from ._exceptions import AgentError
from ._ids import new_message_id


class MessageText:
    """The text of a message being streamed, and the rules of writing it."""

    def __init__(self, max_chars: int, replaying: bool = False) -> None:
        self.replaying = replaying
        """Its text is not streamed: it may be the replay of a committed message."""
        self.message_id = new_message_id()
        """The ``message_id`` of its deltas and of its committed ``message`` event."""
        self._max_chars = max_chars
        self._parts: list[str] = []
        self._length = 0
        self._open = True

    @property
    def text(self) -> str:
        """Everything written so far."""
        return "".join(self._parts)

    def _add(self, text: str) -> str:
        """``text``, kept: if it may still be written (else raise :class:`AgentError`)."""
        if not self._open:
            raise AgentError("this message is already committed: start a new one")
        if self._length + len(text) > self._max_chars:
            raise AgentError(
                f"a streamed message holds at most {self._max_chars} characters "
                "(RuntimeConfig.max_message_chars): commit it and stream the rest as a new one"
            )
        if text:
            self._parts.append(text)
            self._length += len(text)
        return text

    def _close(self, exc_type: object) -> bool:
        """End the message; True if it is to be committed (left without an exception, once)."""
        if not self._open:
            return False
        self._open = False
        return exc_type is None


class AsyncWriter(Protocol):
    """What a :class:`MessageStream` writes through (the async agent's context)."""

    streaming: int

    def _check(self) -> None: ...
    async def _write(self, message_id: str, text: str) -> None: ...
    async def _commit_message(self, message_id: str, text: str) -> int: ...


class MessageStream(MessageText):
    """An assistant message being streamed (see :meth:`AgentContext.message`)."""

    def __init__(self, ctx: AsyncWriter, max_chars: int, replaying: bool = False) -> None:
        super().__init__(max_chars, replaying)
        self._ctx = ctx

    async def write(self, text: str) -> None:
        """Send ``text`` to the user's sockets now (provisional until the message commits)."""
        self._ctx._check()
        text = self._add(str(text))
        if text and not self.replaying:
            await self._ctx._write(self.message_id, text)

    async def __aenter__(self) -> MessageStream:
        self._ctx.streaming += 1
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._ctx.streaming -= 1
        if self._close(exc_type):
            await self._ctx._commit_message(self.message_id, self.text)


class ThreadWriter(Protocol):
    """What a :class:`ThreadedMessageStream` writes through (the threaded agent's context)."""

    @property
    def streaming(self) -> int: ...

    @streaming.setter
    def streaming(self, value: int) -> None: ...
    def _write(self, message_id: str, text: str) -> None: ...
    def _commit_message(self, message_id: str, text: str) -> int: ...


class ThreadedMessageStream(MessageText):
    """An assistant message being streamed from a thread (see :meth:`ThreadedContext.message`)."""

    def __init__(self, ctx: ThreadWriter, max_chars: int, replaying: bool = False) -> None:
        super().__init__(max_chars, replaying)
        self._ctx = ctx

    def write(self, text: str) -> None:
        """Send ``text`` to the user's sockets now (one hand-off to trio per call)."""
        text = self._add(str(text))
        if text and not self.replaying:
            self._ctx._write(self.message_id, text)

    def __enter__(self) -> ThreadedMessageStream:
        self._ctx.streaming += 1
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._ctx.streaming -= 1
        if self._close(exc_type):
            self._ctx._commit_message(self.message_id, self.text)
