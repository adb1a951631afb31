"""The messages a user's agents are streaming: provisional text, held only while it is open.

A message is open from its first ``write`` until the unit that commits it (the committed
``message`` supersedes its deltas) or a rollback of its run (the ``run_rolled_back`` retracts it).
Its text is kept so that a socket that (re)connects mid-answer gets everything so far at offset 0.
Owned by one supervisor; never touches the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ._values import Delta


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
