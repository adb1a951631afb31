"""AG-UI mapping: netra events and deltas → AG-UI events, with SSE ids that make resume exact.

Pure (no I/O): an :class:`AguiMapper` turns one user's stream of committed :class:`Event` values
and provisional :class:`Delta` values into :class:`Frame` values — an AG-UI event (a JSON object
with camelCase fields) and its SSE ``id`` — following docs/protocol.md, "AG-UI over HTTP".

* One committed event (seq ``k``) maps to a *group* of n ≥ 1 frames with ids ``k.1`` … ``k.(n-1)``
  and ``k`` for the last, so ids never decrease and ``Last-Event-ID`` names a point inside a group.
* Provisional frames (from deltas) and the ``RUN_STARTED`` the stream adds to open a run it
  joined (resumed or live) carry no id: they are never replayed.
* A netra run is one or more AG-UI runs (*segments*): a question (``input_requested``) ends the
  current one with ``RUN_FINISHED`` (an interrupt, or a frontend tool call), and the run's next
  event opens the next one (``parentRunId``: the one before).
* The mapper keeps per stream only what AG-UI's ordering rules need: per run its segment and
  pending question (:class:`_Run`), and which text messages it opened from deltas (closed by
  the committed message, by the attempt's rollback, or before the segment's end). A run met
  after its start is *learned* first (:meth:`AguiMapper.learn`): its earlier events replayed
  into a scratch mapper, so a resumed stream continues exactly where a full replay would be.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from .._core._threads import DEFAULT_THREAD
from .._values import JSON, Delta, Event
from ._agui_frames import (
    CLIENT_TOOL,
    ERROR_STATES,
    MESSAGE_PARTS,
    TERMINAL_STATES,
    AguiIds,
    Frame,
    after,
    agui_ids_of,
    creates,
    custom,
    millis,
    provisional,
    question_id,
    reasoning,
    text_message,
    to_json,
    tool_call,
    tool_result,
)


class _State(enum.Enum):
    NEW = "new"
    """Met on this stream with nothing known of it yet (or learned: no earlier events)."""
    OPEN = "open"
    """A segment is open."""
    PAUSED = "paused"
    """The last segment ended at a question; the run's next event opens the next one."""
    FINISHED = "finished"


@attrs.define
class _Run:
    """What the stream knows of one netra run."""

    thread: str = DEFAULT_THREAD
    state: _State = _State.NEW
    ids: AguiIds | None = None
    """The current (or last) segment's ids."""
    announced: bool = False
    """This stream sent the current segment's ``RUN_STARTED``."""
    question: tuple[int, bool] | None = None
    """The pending question: its seq, and whether it is a frontend tool call."""
    result: JSON = None


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
    place: int = 0
    """Where the client shows it: the stream's count of messages created when it began."""


@attrs.define
class SnapshotFill:
    """A ``MESSAGES_SNAPSHOT`` the mapper made, for the caller to fill: the thread's committed
    conversation up to seq ``upto`` (as :func:`~._agui_messages.thread_messages` folds it),
    without the message ``without``, then ``tail`` (the messages this stream has open)."""

    event: dict[str, Any]
    upto: int
    without: str | None = None
    tail: list[dict[str, Any]] = attrs.Factory(list)

    def fill(self, committed: list[dict[str, Any]]) -> None:
        kept = [m for m in committed if m["id"] != self.without]
        self.event["messages"] = [*kept, *self.tail]


class AguiMapper:
    """Maps one user's netra stream to AG-UI frames. One per SSE stream.

    A run met after its start must be learned before its item is mapped: :meth:`needs_history`
    names it, the caller hands its earlier events to :meth:`learn`. ``echo``: ids of messages
    the client sent with this request (a ``POST /agui``): never sent back. ``snapshots``: a
    thread-scoped stream; a rollback that retracted streamed text adds a ``MESSAGES_SNAPSHOT``
    (its ``messages`` filled by the caller, see :func:`snapshot_frames`). ``next_ids``: the ids
    of a run's next segment when this stream opens it (a ``POST /agui`` that cancels an
    interrupted run).
    """

    def __init__(self, *, echo: Iterable[str] = (), snapshots: bool = False) -> None:
        self.echo = frozenset(echo)
        self.snapshots = snapshots
        self.next_ids: dict[str, AguiIds] = {}
        self._runs: dict[str, _Run] = {}
        self._open: dict[str, _Open] = {}
        self._fills: list[SnapshotFill] = []
        self._created = 0
        """How many messages this stream made the client create (their places, in order)."""
        self._high = 0
        """The place of the last committed message the client shows: a streamed message that
        began before it (a smaller place) shows too early, until a snapshot moves it."""

    # -- what the caller resolves -----------------------------------------------------------

    def needs_history(self, item: Event | Delta) -> str | None:
        """The netra run to :meth:`learn` before mapping ``item``: one this stream has not met,
        unless ``item`` is its first event (a user's message). Asked once per run."""
        run_id = item.run_id
        if run_id is None or run_id in self._runs:
            return None
        if type(item) is Event and item.event == "message" and item.data.get("role") == "user":
            return None
        return run_id

    def learn(self, run_id: str, earlier: Iterable[Event]) -> None:
        """Learn ``run_id`` from its committed events before the item to map (all of them, in
        order), as a replay from the start would have mapped them."""
        scratch = AguiMapper()
        for event in earlier:
            if event.run_id == run_id:
                scratch.event(event)
        run = scratch._runs.get(run_id, _Run())
        run.announced = False
        self._runs[run_id] = run

    def thread_of(self, run_id: str) -> str:
        """The netra thread of a run this stream has met (``main`` if it has not)."""
        run = self._runs.get(run_id)
        return run.thread if run is not None else DEFAULT_THREAD

    def knows(self, run_id: str) -> bool:
        """Whether this stream has met or learned the run (so :meth:`thread_of` is sure)."""
        return run_id in self._runs

    def take_fills(self) -> list[SnapshotFill]:
        """The snapshots the last mapped items made, to be filled before they are sent."""
        fills, self._fills = self._fills, []
        return fills

    # -- mapping ----------------------------------------------------------------------------

    def resumed(self, event: Event, part: int) -> list[Frame]:
        """The frames of ``event`` (seq k) for a stream resumed with ``Last-Event-ID: k.part``:
        the client holds the first ``part`` frames of k's group as an earlier stream sent them.

        A thread-scoped stream sends, after the ``RUN_STARTED`` it opens with, a
        ``MESSAGES_SNAPSHOT`` of the thread through k (what the client shows then equals what
        a replay shows, whatever of the group it got: text a rollback retracted, a message
        begun) and the rest of the group's run events (``RUN_FINISHED``, ``CUSTOM`` …), ids
        ``k.(part+1)`` … ``k``. Other streams send what remains of the group (:func:`after`).
        """
        frames = self.event(event)
        if not self.snapshots:
            return list(after(frames, part))
        self._fills.clear()  # (none: a stream resumes before it has anything open)
        durable = [f for f in frames if f.id is not None]
        prefix = [f for f in frames if f.id is None]
        prefix += [provisional(f) for f in durable[:part] if f.event["type"] == "RUN_STARTED"]
        left = durable[part:] or durable[-1:]  # (the bare k stays, as in :func:`after`)
        rest = [f.event for f in left if f.event["type"] not in MESSAGE_PARTS]
        snapshot: dict[str, Any] = {"type": "MESSAGES_SNAPSHOT", "messages": []}
        self._fills.append(SnapshotFill(snapshot, event.seq))
        return prefix + self._group(event, [snapshot, *rest], first=part + 1)

    def event(self, event: Event) -> list[Frame]:
        """The frames of committed event ``event``: its group (ids ``k.1`` … ``k``), after the
        id-less ``RUN_STARTED`` that opens a run this stream joined."""
        run_id = event.run_id
        if run_id is None:  # an event of no run: the user's own
            return self._group(event, [custom(event.event, event.data)])
        run = self._runs.setdefault(run_id, _Run())
        if event.thread is not None:
            run.thread = event.thread
        if run.state is _State.FINISHED:
            return []  # nothing of a run follows its end
        prefix: list[Frame] = []
        items: list[dict[str, Any]] = []
        if run.state is _State.NEW:
            run.ids = agui_ids_of(event) or AguiIds(run.thread, run_id)
            run.state = _State.OPEN
            if _is_first(event):
                items.append(self._started(run))
        elif run.state is _State.PAUSED:
            run.ids = self._next_segment(run_id, run, event)
            run.state = _State.OPEN
            items.append(self._started(run))
        if not run.announced:  # joined in the middle of a segment: announce it, provisionally
            started = self._started(run)
            started.update(timestamp=millis(event.ts), metadata={"netra": {"run_id": run_id}})
            prefix.append(Frame(None, started))
        mapped = self._map(run_id, run, event)
        if items and mapped and mapped[0]["type"] == "TOOL_CALL_RESULT":
            # a frontend tool's result opens the segment: it comes as the run's input (the
            # tool call is of the segment before, which an AG-UI run's events cannot name)
            result = mapped.pop(0)
            message = {"id": result["messageId"], "role": "tool", "content": result["content"]}
            message["toolCallId"] = result["toolCallId"]
            started = items[0]
            started["input"] = {
                "threadId": started["threadId"],
                "runId": started["runId"],
                "messages": [message],
            }
        items.extend(mapped)
        if any(creates(item) for item in items):  # committed messages show in seq order
            self._created += 1
            self._high = self._created
        return prefix + self._group(event, items)

    def _group(self, event: Event, items: list[dict[str, Any]], first: int = 1) -> list[Frame]:
        """``items`` as the group of ``event``: ids ``k.first`` …, the last ``k``."""
        meta = {"netra": {"seq": event.seq, "run_id": event.run_id}}
        ts = millis(event.ts)
        n = len(items)
        frames = []
        for i, item in enumerate(items, first):
            item.setdefault("timestamp", ts)
            item.setdefault("metadata", meta)
            last = i == first + n - 1
            frames.append(Frame(str(event.seq) if last else f"{event.seq}.{i}", item))
        return frames

    def _snapshot(self, seq: int, without: str | None = None) -> dict[str, Any]:
        """A ``MESSAGES_SNAPSHOT`` of the thread through ``seq`` (to fill), then the messages
        this stream has open: the client shows the committed conversation in ``seq`` order,
        then those, in the order they began."""
        snapshot: dict[str, Any] = {"type": "MESSAGES_SNAPSHOT", "messages": []}
        tail = []
        self._created += 1
        self._high = self._created
        for mid, opened in sorted(self._open.items(), key=lambda kv: kv[1].place):
            self._created += 1
            opened.place = self._created
            tail.append({"id": mid, "role": "assistant", "content": "".join(opened.text)})
        self._fills.append(SnapshotFill(snapshot, seq, without, tail))
        return snapshot

    def _started(self, run: _Run) -> dict[str, Any]:
        run.announced = True
        ids = run.ids
        assert ids is not None
        started: dict[str, Any] = {"type": "RUN_STARTED", "threadId": ids.thread_id}
        started["runId"] = ids.run_id
        if ids.parent is not None:
            started["parentRunId"] = ids.parent
        return started

    def _next_segment(self, run_id: str, run: _Run, event: Event) -> AguiIds:
        """The ids of the segment ``event`` opens: those a ``POST /agui`` stored with its
        answer, else those this stream was given, else derived from the run and the seq."""
        parent = run.ids.run_id if run.ids is not None else run_id
        given = agui_ids_of(event) or self.next_ids.pop(run_id, None)
        if given is not None:
            return AguiIds(run.thread, given.run_id, parent)
        return AguiIds(run.thread, f"{run_id}.{event.seq}", parent)

    def _map(self, run_id: str, run: _Run, event: Event) -> list[dict[str, Any]]:
        name, data = event.event, event.data
        if name == "message":
            if data.get("role") == "user" and data.get("message_id") in self.echo:
                return []  # the client sent it: it shows it already
            return self._message(event)
        if name == "agent_thinking":
            return reasoning(f"{run_id}.t{event.seq}", data.get("text"))
        if name == "tool_executing":
            call = str(data.get("call_id"))
            return tool_call(call, str(data.get("tool")), data.get("args"))
        if name == "tool_completed":
            call = str(data.get("call_id"))
            content = data["result"] if "result" in data else {"error": data.get("error")}
            return [tool_result(f"{call}.result", call, to_json(content))]
        if name == "agent_completed":
            run.result = data.get("result")
        elif name == "input_requested":
            return self._question(run_id, run, event)
        elif name == "run_input":
            return self._answer(run_id, run, event)
        elif name == "run_rolled_back":
            attempt = data.get("attempt")
            closes = self._close(lambda o: o.run_id == run_id and o.attempt == attempt)
            if closes and self.snapshots:  # the client drops the retracted text
                closes.append(self._snapshot(event.seq))
            return [*closes, custom(name, data)]
        elif name == "run_state" and data.get("state") in TERMINAL_STATES:
            closes = self._close(lambda o: o.run_id == run_id)
            run.state = _State.FINISHED
            return [*closes, self._run_end(run, str(data.get("state")), data)]
        return [custom(name, data)]

    def _question(self, run_id: str, run: _Run, event: Event) -> list[dict[str, Any]]:
        """``input_requested`` ends the segment: an interrupt, or a frontend tool call."""
        data = event.data
        qid = question_id(run_id, event.seq)
        tool = data.get(CLIENT_TOOL)
        items = [*self._close(lambda o: o.run_id == run_id), custom(event.event, data)]
        end = self._finished(run)
        if isinstance(tool, dict):
            items += tool_call(qid, str(tool.get("name")), tool.get("args"))
            end["outcome"] = {"type": "success"}
        else:
            interrupt: dict[str, Any] = {"id": qid, "reason": "input_requested"}
            interrupt["message"] = str(data.get("prompt", ""))
            if isinstance(data.get("schema"), dict):
                interrupt["responseSchema"] = data["schema"]
            end["outcome"] = {"type": "interrupt", "interrupts": [interrupt]}
        run.question = (event.seq, isinstance(tool, dict))
        run.state = _State.PAUSED
        return [*items, end]

    def _answer(self, run_id: str, run: _Run, event: Event) -> list[dict[str, Any]]:
        """``run_input``: the answer to the pending question (a frontend tool's result)."""
        data, items = event.data, []
        if run.question is not None:
            seq, is_tool = run.question
            run.question = None
            agui = data.get("agui")
            given = agui.get("messageId") if isinstance(agui, dict) else None
            call = question_id(run_id, seq)
            message_id = given if isinstance(given, str) else f"{call}.result"
            if is_tool and message_id not in self.echo:
                value = data.get("input")
                content = value if isinstance(value, str) else to_json(value)
                items.append(tool_result(message_id, call, content))
        return [*items, custom(event.event, data)]

    def _message(self, event: Event) -> list[dict[str, Any]]:
        data = event.data
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
            if self._high > opened.place and self.snapshots:
                # it began before messages committed ahead of it (thinking of its unit …):
                # the client moves it after them, to its committed place, as a replay shows it
                # (a snapshot keeps the client's order: drop it, then add it at the end)
                out.append(self._snapshot(event.seq, without=message_id))
                out.append(self._snapshot(event.seq))
            self._high = max(self._high, opened.place)
            return out
        return text_message(message_id, role, text)

    def _finished(self, run: _Run) -> dict[str, Any]:
        ids = run.ids
        assert ids is not None
        return {"type": "RUN_FINISHED", "threadId": ids.thread_id, "runId": ids.run_id}

    def _run_end(self, run: _Run, state: str, data: dict[str, JSON]) -> dict[str, Any]:
        if state in ERROR_STATES:
            reason = data.get("reason")
            message = f"the run ended {state}" + (f": {reason}" if reason else "")
            return {"type": "RUN_ERROR", "message": message, "code": state}
        end = self._finished(run)
        if state == "completed" and run.result is not None:
            end["result"] = run.result
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
        run = self._runs.setdefault(run_id, _Run())
        if run.state in (_State.FINISHED, _State.PAUSED):
            return []  # nothing of a segment after its RUN_FINISHED
        meta = {"netra": {"run_id": run_id}}
        ts = int(now * 1000)
        out: list[dict[str, Any]] = []
        if run.state is _State.NEW:
            run.ids, run.state = AguiIds(run.thread, run_id), _State.OPEN
        if not run.announced:  # joined a run in progress: announce it (provisionally)
            out.append(self._started(run))
        opened = self._open.get(delta.message_id)
        if opened is None and delta.offset == 0:
            self._created += 1
            opened = _Open(run_id, delta.attempt, place=self._created)
            self._open[delta.message_id] = opened
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


def _is_first(event: Event) -> bool:
    """A run's first event: its user's message (a ``say``'s) or its first ``run_state``."""
    if event.event == "message":
        return event.data.get("role") == "user"
    return event.event == "run_state" and event.data.get("previous") is None
