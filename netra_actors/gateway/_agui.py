"""AG-UI mapping: netra events and deltas → AG-UI events, with SSE ids that make resume exact.

Pure (no I/O): an :class:`AguiMapper` turns one user's stream of committed :class:`Event` values
and provisional :class:`Delta` values into :class:`Frame` values — an AG-UI event (a JSON object
with camelCase fields) and its SSE ``id`` — following docs/protocol.md, "AG-UI over HTTP".

* One committed event (seq ``k``) maps to a *group* of n ≥ 1 frames with ids ``k.1`` … ``k.(n-1)``
  and ``k`` for the last, so ids never decrease and ``Last-Event-ID`` names a point inside a group.
* Provisional frames (from deltas) and the synthetic ``RUN_STARTED`` of a run already in progress
  when a live-only stream began carry no id: they are never replayed.
* The mapper keeps per stream only what AG-UI's ordering rules need: which runs this stream has
  started and finished, and which text messages it opened from deltas (closed by the committed
  message, by the attempt's rollback, or before the run's end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import attrs
import orjson

from .._core._threads import DEFAULT_THREAD
from .._validate import MAX_SEQ
from .._values import JSON, Delta, Event

TERMINAL_STATES = frozenset({"completed", "failed", "timeout", "dead", "cancelled"})
ERROR_STATES = frozenset({"failed", "timeout", "dead"})
CUSTOM_PREFIX = "netra."
"""CUSTOM events made from netra events are named ``netra.<event>`` (value: the v1 ``data``)."""


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
        if not _digits(head) or (dot and not _digits(tail)):
            raise ValueError(f"not an event id: {text!r}")
        seq, part = int(head), int(tail) if dot else None
        if (part is not None and not 1 <= part <= MAX_SEQ) or seq > MAX_SEQ:
            raise ValueError(f"not an event id: {text!r}")
        return cls(seq, part)


@attrs.frozen
class AguiIds:
    """The AG-UI ``threadId``/``runId`` a netra run is known by: its netra thread, and the
    ``runId`` of the ``POST /agui`` that started it (else the netra run id)."""

    thread_id: str
    run_id: str


def agui_ids_of(event: Event) -> AguiIds | None:
    """The AG-UI ids a ``POST /agui`` run's user ``message`` carries (``data.agui``), if any."""
    if event.event != "message":
        return None
    agui = event.data.get("agui")
    if isinstance(agui, dict):
        thread, run = agui.get("threadId"), agui.get("runId")
        if isinstance(thread, str) and isinstance(run, str):
            return AguiIds(thread, run)
    return None


@attrs.define
class _Open:
    """A text message this stream opened from deltas and has not closed."""

    run_id: str
    attempt: int
    sent: int = 0
    """Code points of text sent so far."""
    text: list[str] = attrs.Factory(list)
    broken: bool = False
    """A gap in its deltas: no more of its deltas are sent (the committed message sends the rest
    of its text and ends it)."""


class AguiMapper:
    """Maps one user's netra stream to AG-UI frames. One per SSE stream.

    ``ids`` gives the AG-UI ids of a run the stream has not seen start (a resume in the middle
    of a ``POST /agui`` run); the caller resolves them (from the run's first event) before
    handing that run's events over, see :meth:`needs_ids`. ``live_only``: the stream began
    now (no ``Last-Event-ID``), so a run already in progress gets a synthetic ``RUN_STARTED``.
    A run's ``threadId`` is its netra thread (``main`` when an event carries none).
    """

    def __init__(self, *, live_only: bool) -> None:
        self.live_only = live_only
        self.ids: dict[str, AguiIds] = {}
        self._threads: dict[str, str] = {}
        """The netra thread of each run this stream has met."""
        self._started: set[str] = set()
        self._finished: set[str] = set()
        self._open: dict[str, _Open] = {}
        self._last_seq = 0
        """The seq of the last committed event this stream mapped or was seeded with (0: none;
        nothing precedes seq 1)."""

    # -- what the caller resolves -----------------------------------------------------------

    def needs_ids(self, item: Event | Delta) -> str | None:
        """The netra run whose AG-UI ids to resolve (:meth:`learn_ids`) before mapping
        ``item``: a run whose ids this stream does not know yet and whose first event it has
        not seen (a resume, or a live-only stream joining a run), which may have been started
        by ``POST /agui``. Asked once per such run and stream."""
        run_id = item.run_id
        if run_id is None or run_id in self.ids or run_id in self._finished:
            return None
        if type(item) is Event:
            name = item.event
            if name == "message" and _is_first_message(item.data):
                return None  # a run's first event: it carries its AG-UI ids (if any)
            after_last = item.seq == self._last_seq + 1
            if name == "run_state" and item.data.get("previous") is None and after_last:
                return None  # the stream saw the event before: a say's message would be it
        return run_id

    def learn_ids(self, run_id: str, first: Event | None) -> None:
        """Record the AG-UI ids of ``run_id`` from its first event (None: it has none)."""
        if first is not None:
            self._met(run_id, first)
        ids = agui_ids_of(first) if first is not None else None
        self.ids[run_id] = ids if ids is not None else AguiIds(self.thread_of(run_id), run_id)

    def thread_of(self, run_id: str) -> str:
        """The netra thread of a run this stream has met (``main`` if it has not)."""
        return self._threads.get(run_id, DEFAULT_THREAD)

    def knows_thread(self, run_id: str) -> bool:
        """Whether this stream has met an event of the run (so :meth:`thread_of` is sure)."""
        return run_id in self._threads

    def _met(self, run_id: str, event: Event) -> None:
        if event.thread is not None:
            self._threads[run_id] = event.thread

    def seed(self, event: Event) -> None:
        """Learn from the event a ``Last-Event-ID: k`` names (the client has all of it)."""
        self._last_seq = event.seq
        run_id = event.run_id
        if run_id is None:
            return
        self._met(run_id, event)
        ids = agui_ids_of(event)
        if ids is not None:
            self.ids[run_id] = ids
        if event.event == "run_state" and event.data.get("state") in TERMINAL_STATES:
            self._finished.add(run_id)
        else:
            self._started.add(run_id)

    # -- mapping ----------------------------------------------------------------------------

    def event(self, event: Event) -> list[Frame]:
        """The frames of committed event ``event`` (its whole group, ids ``k.1`` … ``k``)."""
        run_id = event.run_id
        self._last_seq = event.seq
        if run_id is not None and run_id in self._finished:
            return []  # nothing of a run follows its end
        data = event.data
        prefix: list[Frame] = []
        items: list[dict[str, Any]] = []
        if run_id is not None and event.thread is not None:
            self._threads[run_id] = event.thread
        if run_id is not None and run_id not in self._started:
            ids = agui_ids_of(event)
            if ids is not None:
                self.ids[run_id] = ids
            name = event.event
            first = name == "message" and _is_first_message(data)
            if first or (name == "run_state" and data.get("previous") is None):
                items.append(self._run_started(run_id))  # the run's first event
            elif self.live_only:  # this stream joined the run in the middle: announce it
                synthetic = self._run_started(run_id)
                synthetic.update(
                    timestamp=int(event.ts * 1000), metadata={"netra": {"run_id": run_id}}
                )
                prefix.append(Frame(None, synthetic))
            else:  # a resumed stream: the client has the run's RUN_STARTED already
                self._known(run_id)
        items.extend(self._map(event, data))
        return prefix + self._group(event, items)

    def _group(self, event: Event, items: list[dict[str, Any]]) -> list[Frame]:
        meta = {"netra": {"seq": event.seq, "run_id": event.run_id}}
        ts = int(event.ts * 1000)
        n = len(items)
        frames = []
        for i, item in enumerate(items, 1):
            item.setdefault("timestamp", ts)
            item.setdefault("metadata", meta)
            frames.append(Frame(str(event.seq) if i == n else f"{event.seq}.{i}", item))
        return frames

    def _known(self, run_id: str) -> None:
        """The run is open on this stream (its ids are final from now on)."""
        self._started.add(run_id)
        self.ids.setdefault(run_id, AguiIds(self.thread_of(run_id), run_id))

    def _run_started(self, run_id: str) -> dict[str, Any]:
        self._known(run_id)
        thread, agui_run = self._thread_run(run_id)
        return {"type": "RUN_STARTED", "threadId": thread, "runId": agui_run}

    def _thread_run(self, run_id: str) -> tuple[str, str]:
        ids = self.ids.get(run_id)
        return (ids.thread_id, ids.run_id) if ids else (self.thread_of(run_id), run_id)

    def _map(self, event: Event, data: dict[str, JSON]) -> list[dict[str, Any]]:
        name, run_id = event.event, event.run_id
        if name == "message":
            return self._message(data)
        if name == "tool_executing":
            call = str(data.get("call_id"))
            return [
                {
                    "type": "TOOL_CALL_START",
                    "toolCallId": call,
                    "toolCallName": str(data.get("tool")),
                },
                {"type": "TOOL_CALL_ARGS", "toolCallId": call, "delta": _json(data.get("args"))},
                {"type": "TOOL_CALL_END", "toolCallId": call},
            ]
        if name == "tool_completed":
            call = str(data.get("call_id"))
            content = (
                _json(data["result"]) if "result" in data else _json({"error": data.get("error")})
            )
            return [
                {
                    "type": "TOOL_CALL_RESULT",
                    "messageId": f"{call}.result",
                    "toolCallId": call,
                    "content": content,
                    "role": "tool",
                }
            ]
        if name == "run_rolled_back" and run_id is not None:
            attempt = data.get("attempt")
            closes = self._close(lambda o: o.run_id == run_id and o.attempt == attempt)
            return [*closes, _custom(name, data)]
        if name == "run_state" and run_id is not None:
            state = data.get("state")
            if state in TERMINAL_STATES:
                closes = self._close(lambda o: o.run_id == run_id)
                self._finished.add(run_id)
                self._started.discard(run_id)
                return [*closes, self._run_end(run_id, str(state), data)]
            if data.get("previous") is None and run_id in self._started:
                # the run's first state: RUN_STARTED already came with its user message
                return [_custom(name, data)]
        return [_custom(name, data)]

    def _message(self, data: dict[str, JSON]) -> list[dict[str, Any]]:
        message_id = str(data.get("message_id"))
        text = data.get("text")
        text = text if isinstance(text, str) else ""
        role = data.get("role")
        role = role if role in ("user", "assistant", "system", "developer") else "assistant"
        opened = self._open.pop(message_id, None)
        if opened is not None:
            out: list[dict[str, Any]] = []
            streamed = "".join(opened.text)
            if text.startswith(streamed) and len(text) > len(streamed):  # (also after a gap)
                rest = text[len(streamed) :]
                out.append({"type": "TEXT_MESSAGE_CONTENT", "messageId": message_id, "delta": rest})
            out.append({"type": "TEXT_MESSAGE_END", "messageId": message_id})
            return out
        out = [{"type": "TEXT_MESSAGE_START", "messageId": message_id, "role": role}]
        if text:
            out.append({"type": "TEXT_MESSAGE_CONTENT", "messageId": message_id, "delta": text})
        out.append({"type": "TEXT_MESSAGE_END", "messageId": message_id})
        return out

    def _run_end(self, run_id: str, state: str, data: dict[str, JSON]) -> dict[str, Any]:
        if state in ERROR_STATES:
            reason = data.get("reason")
            message = f"the run ended {state}" + (f": {reason}" if reason else "")
            return {"type": "RUN_ERROR", "message": message, "code": state}
        thread, agui_run = self._thread_run(run_id)
        end: dict[str, Any] = {"type": "RUN_FINISHED", "threadId": thread, "runId": agui_run}
        end["outcome"] = {"type": "cancelled" if state == "cancelled" else "success"}
        return end

    def _close(self, which: Callable[[_Open], bool]) -> list[dict[str, Any]]:
        closing = [mid for mid, o in self._open.items() if which(o)]
        for mid in closing:
            del self._open[mid]
        return [{"type": "TEXT_MESSAGE_END", "messageId": mid} for mid in closing]

    def delta(self, delta: Delta, now: float) -> list[Frame]:
        """The provisional frames of a delta (no ids): START the first time, then CONTENT."""
        run_id = delta.run_id
        if run_id in self._finished:
            return []
        meta = {"netra": {"run_id": run_id}}
        ts = int(now * 1000)
        out: list[dict[str, Any]] = []
        if run_id not in self._started:
            if self.live_only:  # joined a run in progress: announce it (provisionally)
                out.append(self._run_started(run_id))
            else:  # a resumed stream: the client has the run's RUN_STARTED already
                self._known(run_id)
        opened = self._open.get(delta.message_id)
        if opened is None and delta.offset == 0:
            opened = self._open[delta.message_id] = _Open(run_id, delta.attempt)
            out.append(
                {"type": "TEXT_MESSAGE_START", "messageId": delta.message_id, "role": "assistant"}
            )
        text = delta.text
        if opened is None:
            pass  # joined in the middle of a message: its committed form will come
        elif not opened.broken:
            if delta.offset > opened.sent:
                opened.broken = True  # a gap: never show text out of order
                text = ""
            elif delta.offset < opened.sent:
                text = text[opened.sent - delta.offset :]  # the part already sent is skipped
            if text:
                opened.text.append(text)
                opened.sent += len(text)
                out.append(
                    {"type": "TEXT_MESSAGE_CONTENT", "messageId": delta.message_id, "delta": text}
                )
        for item in out:
            item.update(timestamp=ts, metadata=meta)
        return [Frame(None, item) for item in out]


def after(frames: list[Frame], part: int) -> Iterator[Frame]:
    """The frames of one event's group that follow part ``part`` (``Last-Event-ID: k.part``).

    The bare-``k`` frame always remains, even when the group is now shorter than ``part``.
    """
    n = len(frames)
    for i, frame in enumerate(frames, 1):
        if i > part or i == n:
            yield frame


def _is_first_message(data: dict[str, JSON]) -> bool:
    """A ``message`` that begins its run: the user's message of a ``say`` (an assistant's
    message of a run this stream has not seen start is an ordinary event of the run)."""
    return data.get("role") == "user"


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _custom(name: str, data: dict[str, JSON]) -> dict[str, Any]:
    return {"type": "CUSTOM", "name": CUSTOM_PREFIX + name, "value": data}


def _json(value: object) -> str:
    return orjson.dumps(value).decode()
