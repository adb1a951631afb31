"""The messages a user's agents are streaming: provisional text, held only while it is open.

A message is open from its first ``write`` until the unit that commits it (the committed
``message`` supersedes its deltas) or a rollback of its run (the ``run_rolled_back`` retracts it).
Its text is kept so that a socket that (re)connects mid-answer gets everything so far at offset 0.
Owned by one supervisor; never touches the store. A follower (a node that does not own the
user) keeps :class:`FollowedMessages` instead: the same text, as relayed by the owner's node.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ._core import RunState
from ._values import Delta, Event

_TERMINAL = frozenset(s.value for s in RunState if s.is_terminal)


class _Open:
    __slots__ = ("attempt", "length", "parts", "run_id")

    def __init__(self, run_id: str, attempt: int) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.parts: list[str] = []
        self.length = 0


class OpenMessages:
    """The open messages of one user, oldest first, bounded in number and length."""

    __slots__ = ("_max_chars", "_max_open", "_muted", "_open")

    def __init__(self, *, max_open: int, max_chars: int) -> None:
        self._max_open = max_open
        self._max_chars = max_chars
        self._open: dict[str, _Open] = {}
        self._muted: dict[str, str] = {}
        """Messages that stopped streaming (past a bound) until they commit: id → run id."""

    def write(self, run_id: str, attempt: int, message_id: str, text: str) -> Delta | None:
        """Append ``text``; the delta to send, or None when this message no longer streams.

        Past ``max_open`` open messages the oldest stops streaming; past ``max_chars`` this one
        does (the agent's own ``write`` refuses that first). Its committed message still comes.
        """
        if message_id in self._muted:
            return None
        msg = self._open.get(message_id)
        if msg is None:
            if len(self._open) >= self._max_open:
                oldest = next(iter(self._open))
                self._muted[oldest] = self._open.pop(oldest).run_id
            msg = self._open[message_id] = _Open(run_id, attempt)
        if msg.length + len(text) > self._max_chars:
            self._muted[message_id] = self._open.pop(message_id).run_id
            return None
        delta = Delta(run_id, attempt, message_id, msg.length, text)
        msg.parts.append(text)
        msg.length += len(text)
        return delta

    def stop(self, run_id: str, message_id: str) -> None:
        """This message streams no more (a piece of it was not sent: the ones after it would
        not add up to its text); its committed message still comes."""
        self._open.pop(message_id, None)
        self._muted[message_id] = run_id

    def committed(self, message_ids: Iterable[str]) -> None:
        """These messages are committed: their provisional text ends."""
        for mid in message_ids:
            self._open.pop(mid, None)
            self._muted.pop(mid, None)

    def end_run(self, run_id: str) -> None:
        """The run was rolled back or ended: forget its open messages (they are retracted)."""
        for mid in [m for m, msg in self._open.items() if msg.run_id == run_id]:
            del self._open[mid]
        for mid in [m for m, rid in self._muted.items() if rid == run_id]:
            del self._muted[mid]

    def snapshot(self) -> Iterator[Delta]:
        """One offset-0 delta per open message, with all its text so far."""
        for mid, msg in self._open.items():
            yield Delta(msg.run_id, msg.attempt, mid, 0, "".join(msg.parts))


_REMEMBERED = 1024
"""Ended messages and attempts a follower remembers (a late delta of one is dropped)."""


class FollowedMessages:
    """The open messages of a user another node owns, as its relayed deltas tell them.

    Held by the follower (``_follower.py``). It passes a delta on only while it is sure of the
    message's text from offset 0: the first delta it sees of a message must start at 0, and each
    next one must continue exactly where the text ends. Anything else — a gap (a lost
    notification or datagram), a repeat, a message it joined midway, a garbled payload, a
    listener that reconnected — stops that message (or every open one) for this node's sockets
    until its committed ``message`` arrives, which supersedes it anyway. A delta of a message
    that is committed, or of an attempt rolled back or a run ended, is dropped: no delta of a
    message follows its committed ``message`` or its attempt's ``run_rolled_back``.
    """

    __slots__ = ("_ended", "_max_chars", "_max_open", "_muted", "_open", "stopped")

    def __init__(self, *, max_open: int, max_chars: int) -> None:
        self._max_open = max_open
        self._max_chars = max_chars
        self._open: dict[str, _Open] = {}
        self._muted: dict[str, str] = {}
        """Messages this node stopped streaming, until they end: id -> run id."""
        self._ended: dict[str | tuple[str, int], None] = {}
        """Ended message ids, rolled back ``(run, attempt)`` and ended runs (bounded, FIFO)."""
        self.stopped = 0
        """Messages stopped because this node could not be sure of their text."""

    def accept(self, delta: Delta) -> Delta | None:
        """The delta to give the sockets, or None (not sure of it, or its message ended)."""
        mid = delta.message_id
        ended = self._ended
        if mid in ended or delta.run_id in ended or (delta.run_id, delta.attempt) in ended:
            return None
        if mid in self._muted:
            return None
        msg = self._open.get(mid)
        if msg is None:
            if delta.offset != 0:  # joined midway, or its start was lost
                self._mute(mid, delta.run_id)
                return None
            if len(self._open) >= self._max_open:
                oldest = next(iter(self._open))
                self._mute(oldest, self._open[oldest].run_id)
            msg = self._open[mid] = _Open(delta.run_id, delta.attempt)
        elif delta.offset != msg.length or delta.attempt != msg.attempt:
            self._mute(mid, delta.run_id)  # a gap or a repeat: unsure from here on
            return None
        if msg.length + len(delta.text) > self._max_chars:
            self._mute(mid, delta.run_id)
            return None
        msg.parts.append(delta.text)
        msg.length += len(delta.text)
        return delta

    def _mute(self, mid: str, run_id: str) -> None:
        self._open.pop(mid, None)
        self._muted[mid] = run_id
        self.stopped += 1

    def unsure(self) -> None:
        """Relayed deltas may have been lost or garbled: stop every open message."""
        for mid, msg in list(self._open.items()):
            self._mute(mid, msg.run_id)

    def committed(self, events: Iterable[Event]) -> None:
        """Committed events reached the sockets: end the messages they commit or retract."""
        for event in events:
            name = event.event
            if name == "message":
                mid = event.data.get("message_id")
                if isinstance(mid, str):
                    self._end(mid)
                    self._open.pop(mid, None)
                    self._muted.pop(mid, None)
            elif name == "run_rolled_back" and event.run_id is not None:
                attempt = event.data.get("attempt")
                if type(attempt) is int:
                    self._end((event.run_id, attempt))
                    self._end_run(event.run_id, attempt)
            elif name == "run_state" and event.run_id is not None:
                state = event.data.get("state")
                if isinstance(state, str) and state in _TERMINAL:
                    self._end(event.run_id)
                    self._end_run(event.run_id, None)

    def _end(self, key: str | tuple[str, int]) -> None:
        ended = self._ended
        ended[key] = None
        if len(ended) > _REMEMBERED:
            del ended[next(iter(ended))]

    def _end_run(self, run_id: str, attempt: int | None) -> None:
        for mid in [
            m
            for m, msg in self._open.items()
            if msg.run_id == run_id and (attempt is None or msg.attempt == attempt)
        ]:
            self._end(mid)
            del self._open[mid]
        for mid in [m for m, rid in self._muted.items() if rid == run_id]:
            self._end(mid)
            del self._muted[mid]

    def snapshot(self) -> Iterator[Delta]:
        """One offset-0 delta per message this node is sure of, with all its text so far."""
        for mid, msg in self._open.items():
            yield Delta(msg.run_id, msg.attempt, mid, 0, "".join(msg.parts))
