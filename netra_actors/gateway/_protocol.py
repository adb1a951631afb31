"""The protocol v1 codec: client frames in, typed commands out; server frames built. Pure.

No I/O and no clock: :func:`parse_frame` turns the text of one WebSocket message into a typed
value or raises :class:`FrameError` carrying the wire error code; the ``*_frame`` functions build
the JSON text of server frames. The contract is ``shared/design/protocol-v1.md`` (v1 and its
compatible additions: ``hello.features``, ``send_input``, ``if_busy``, the ``busy`` code; the
``delta`` frame itself is :meth:`netra_actors.Delta.wire_json`); what this module adds (marked
"extension" below) is documented in ``docs/protocol.md``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import attrs
import orjson

from .._core._threads import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_THREADS_LIMIT,
    MAX_HISTORY_LIMIT,
    MAX_THREADS_LIMIT,
    is_thread_name,
)
from .._validate import MAX_SEQ

PROTOCOL_VERSION = 1
MAX_ID_CHARS = 64
"""A command's ``id``: a string of at most this many characters."""
MAX_TEXT_BYTES = 16 * 1024
"""``say.text``: at most this many bytes of UTF-8."""
MAX_AGENT_CHARS = 64
MAX_RUN_ID_CHARS = 128
MAX_RUNS_LIMIT = 1000
DEFAULT_RUNS_LIMIT = 100
MAX_ERROR_MESSAGE = 300

#: What ``welcome.features`` offers: the opt-in additions a client may ask for in ``hello``.
#: Only ``delta`` frames are gated (``send_input``, ``if_busy`` and new event names are there for
#: every client), so ``deltas`` is the one feature.
SERVER_FEATURES: tuple[str, ...] = ("deltas",)
#: What ``if_busy`` of ``say``/``start_run`` may say (the runtime's ``IF_BUSY``; this module
#: stays pure, so a test checks the two agree).
IF_BUSY: tuple[str, ...] = ("parallel", "reject", "enqueue", "interrupt")

#: The wire error codes of protocol v1.
ERROR_CODES = frozenset(
    {
        "bad_request",
        "unknown_command",
        "unknown_agent",
        "unknown_run",
        "illegal_state",
        "rate_limited",
        "too_large",
        "internal",
        "busy",
    }
)

JSONValue: TypeAlias = Any


class FrameError(Exception):
    """A client frame was refused. ``code`` is the wire error code; ``id`` the command's id.

    ``id`` is ``None`` when the frame carried no usable ``id`` (it is then not echoed).
    """

    def __init__(self, code: str, message: str, id: str | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


# -- client frames ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Hello:
    """``hello``. Fields are checked in the order the gateway needs (token first)."""

    token: str | None
    """The token, if it is a string (its validity is checked by the gateway)."""
    protocol: JSONValue
    """The raw ``protocol`` field; see :func:`check_hello`."""
    resume_from: JSONValue
    """The raw ``resume_from`` field; see :func:`check_hello`."""
    features: JSONValue = None
    """The raw ``features`` field; see :func:`hello_features`."""


@attrs.frozen(kw_only=True)
class Say:
    """``say``: commit the user's message, start a run of ``agent`` with it."""

    id: str | None
    text: str
    agent: str | None
    if_busy: str | None = None
    """One of :data:`IF_BUSY`, or None for the server's default."""
    thread: str | None = None
    """The run's thread (None: ``main``)."""
    start_at: float | None = None
    """Start the run then (seconds since the epoch); None: now."""


@attrs.frozen(kw_only=True)
class StartRun:
    """``start_run``: start a run of ``agent`` with ``input``."""

    id: str | None
    agent: str
    input: JSONValue
    if_busy: str | None = None
    """One of :data:`IF_BUSY`, or None for the server's default."""
    thread: str | None = None
    """The run's thread (None: ``main``)."""
    start_at: float | None = None
    """Start the run then (seconds since the epoch); None: now."""


@attrs.frozen(kw_only=True)
class CancelRun:
    """``cancel_run``: cancel the live run ``run_id``."""

    id: str | None
    run_id: str


@attrs.frozen(kw_only=True)
class DeleteThread:
    """``delete_thread``: erase ``thread`` (its events become ``erased`` placeholders)."""

    id: str | None
    thread: str


@attrs.frozen(kw_only=True)
class SendInput:
    """``send_input``: commit ``input`` as the run's ``run_input`` and hand it to its agent."""

    id: str | None
    run_id: str
    input: JSONValue


@attrs.frozen(kw_only=True)
class GetRuns:
    """``get_runs``: a snapshot of the user's runs. ``limit`` is an extension."""

    id: str | None
    limit: int


@attrs.frozen(kw_only=True)
class Threads:
    """``threads``: a page of the user's threads, most recent activity first."""

    id: str | None
    before: int | None
    """The ``next`` cursor of the previous page."""
    limit: int


@attrs.frozen(kw_only=True)
class History:
    """``history``: the committed events before ``before_seq`` (of ``thread`` when given)."""

    id: str | None
    thread: str | None
    before_seq: int | None
    """None: the head + 1."""
    limit: int


@attrs.frozen(kw_only=True)
class Ping:
    """``ping``: answered with ``pong``."""

    id: str | None


Command: TypeAlias = (
    Say | StartRun | CancelRun | DeleteThread | SendInput | GetRuns | Threads | History | Ping
)
ClientFrame: TypeAlias = Hello | Command


def _id_of(obj: Mapping[str, JSONValue]) -> str | None:
    if "id" not in obj or obj["id"] is None:
        return None
    value = obj["id"]
    if not isinstance(value, str):
        raise FrameError("bad_request", "id must be a string")
    if len(value) > MAX_ID_CHARS:
        raise FrameError("too_large", f"id must be at most {MAX_ID_CHARS} characters")
    return value


def _string(
    obj: Mapping[str, JSONValue], name: str, id: str | None, *, max_chars: int, required: bool
) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise FrameError("bad_request", f"{name} is required", id)
        return None
    if not isinstance(value, str):
        raise FrameError("bad_request", f"{name} must be a string", id)
    if len(value) > max_chars:
        raise FrameError("too_large", f"{name} must be at most {max_chars} characters", id)
    return value


def _if_busy(obj: Mapping[str, JSONValue], id: str | None) -> str | None:
    value = obj.get("if_busy")
    if value is None:
        return None
    if not isinstance(value, str) or value not in IF_BUSY:
        raise FrameError("bad_request", f"if_busy must be one of {', '.join(IF_BUSY)}", id)
    return value


def _thread(obj: Mapping[str, JSONValue], id: str | None) -> str | None:
    value = obj.get("thread")
    if value is None:
        return None
    if not is_thread_name(value):
        raise FrameError(
            "bad_request", "thread must be 1-128 characters of A-Z a-z 0-9 . _ : -", id
        )
    assert isinstance(value, str)
    return value


def _int(
    obj: Mapping[str, JSONValue], name: str, id: str | None, *, default: int | None, most: int
) -> int | None:
    """An optional integer field from 1 to ``most``."""
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise FrameError("bad_request", f"{name} must be an integer from 1 to {most}", id)
    return value


def _start_at(obj: Mapping[str, JSONValue], id: str | None) -> float | None:
    """``start_at``: a number (seconds since the epoch), or absent (the runtime checks the
    range: at most a year ahead)."""
    value = obj.get("start_at")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FrameError("bad_request", "start_at must be a number (seconds since the epoch)", id)
    return float(value)


def decode_object(text: str | bytes) -> dict[str, JSONValue]:
    """Decode a frame's JSON text into an object, or raise ``FrameError(bad_request)``."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError("bad_request", "the frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("bad_request", "the frame must be a JSON object")
    return obj


def parse_frame(text: str | bytes) -> ClientFrame:
    """Parse one client frame. Raises :class:`FrameError` for anything the protocol refuses."""
    obj = decode_object(text)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise FrameError("bad_request", "the frame needs a string field 'type'")
    if kind == "hello":
        token = obj.get("token")
        return Hello(
            token=token if isinstance(token, str) else None,
            protocol=obj.get("protocol", PROTOCOL_VERSION),
            resume_from=obj.get("resume_from"),
            features=obj.get("features"),
        )
    id = _id_of(obj)
    match kind:
        case "say":
            text_value = obj.get("text")
            if not isinstance(text_value, str):
                raise FrameError("bad_request", "text is required and must be a string", id)
            # A character is at least one byte: count bytes only when it can matter.
            if len(text_value) > MAX_TEXT_BYTES or (
                len(text_value) * 4 > MAX_TEXT_BYTES
                and len(text_value.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES
            ):
                raise FrameError(
                    "too_large", f"text must be at most {MAX_TEXT_BYTES} bytes of UTF-8", id
                )
            agent = _string(obj, "agent", id, max_chars=MAX_AGENT_CHARS, required=False)
            return Say(
                id=id,
                text=text_value,
                agent=agent,
                if_busy=_if_busy(obj, id),
                start_at=_start_at(obj, id),
                thread=_thread(obj, id),
            )
        case "start_run":
            agent = _string(obj, "agent", id, max_chars=MAX_AGENT_CHARS, required=True)
            assert agent is not None
            return StartRun(
                id=id,
                agent=agent,
                input=obj.get("input"),
                if_busy=_if_busy(obj, id),
                start_at=_start_at(obj, id),
                thread=_thread(obj, id),
            )
        case "cancel_run":
            run_id = _string(obj, "run_id", id, max_chars=MAX_RUN_ID_CHARS, required=True)
            assert run_id is not None
            return CancelRun(id=id, run_id=run_id)
        case "delete_thread":
            thread = _thread(obj, id)
            if thread is None:
                raise FrameError("bad_request", "delete_thread needs a thread", id)
            return DeleteThread(id=id, thread=thread)
        case "send_input":
            run_id = _string(obj, "run_id", id, max_chars=MAX_RUN_ID_CHARS, required=True)
            assert run_id is not None
            return SendInput(id=id, run_id=run_id, input=obj.get("input"))
        case "get_runs":
            limit = obj.get("limit", DEFAULT_RUNS_LIMIT)
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise FrameError("bad_request", "limit must be an integer", id)
            if not 1 <= limit <= MAX_RUNS_LIMIT:
                raise FrameError("bad_request", f"limit must be between 1 and {MAX_RUNS_LIMIT}", id)
            return GetRuns(id=id, limit=limit)
        case "threads":
            limit = _int(obj, "limit", id, default=DEFAULT_THREADS_LIMIT, most=MAX_THREADS_LIMIT)
            assert limit is not None
            before = _int(obj, "before", id, default=None, most=2**62)
            return Threads(id=id, before=before, limit=limit)
        case "history":
            limit = _int(obj, "limit", id, default=DEFAULT_HISTORY_LIMIT, most=MAX_HISTORY_LIMIT)
            assert limit is not None
            before_seq = _int(obj, "before_seq", id, default=None, most=2**62)
            return History(id=id, thread=_thread(obj, id), before_seq=before_seq, limit=limit)
        case "ping":
            return Ping(id=id)
        case _:
            raise FrameError("unknown_command", f"unknown command type {kind[:64]!r}", id)


def check_hello(hello: Hello) -> int | None:
    """Check ``protocol``, ``resume_from`` and ``features`` of a ``hello``; return ``resume_from``.

    Raises ``FrameError(bad_request)`` for an unsupported protocol version, a ``resume_from``
    that is not an integer in ``0..MAX_SEQ`` (a signed 64-bit ``seq``), or ``features`` that is
    not a list of strings. (Whether
    ``resume_from`` exceeds the head is the runtime's call.)
    """
    protocol = hello.protocol
    if isinstance(protocol, bool) or protocol != PROTOCOL_VERSION:
        raise FrameError("bad_request", f"unsupported protocol {protocol!r}; this server speaks 1")
    resume_from = hello.resume_from
    if resume_from is not None and (
        isinstance(resume_from, bool)
        or not isinstance(resume_from, int)
        or not 0 <= resume_from <= MAX_SEQ
    ):
        raise FrameError("bad_request", f"resume_from must be an integer in 0..{MAX_SEQ}")
    hello_features(hello)
    return resume_from


def hello_features(hello: Hello) -> frozenset[str]:
    """The features a ``hello`` asked for that this server offers (unknown names are ignored).

    ``features`` is optional; anything but a list of strings raises ``FrameError(bad_request)``.
    """
    features = hello.features
    if features is None:
        return frozenset()
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise FrameError("bad_request", "features must be a list of strings")
    return frozenset(features).intersection(SERVER_FEATURES)


# -- server frames ---------------------------------------------------------------------------


def encode(frame: Mapping[str, JSONValue]) -> str:
    """The JSON text of a server frame."""
    return orjson.dumps(frame).decode()


def _with_id(frame: dict[str, JSONValue], id: str | None) -> dict[str, JSONValue]:
    if id is not None:
        frame["id"] = id
    return frame


def welcome_frame(user_id: str, head_seq: int) -> str:
    """``welcome``: the session started. ``features`` lists what the server offers."""
    return encode(
        {
            "type": "welcome",
            "protocol": PROTOCOL_VERSION,
            "user_id": user_id,
            "head_seq": head_seq,
            "features": list(SERVER_FEATURES),
        }
    )


def ack_frame(id: str | None, run_id: str | None = None) -> str:
    """``ack``: the command was done (with the new run's id for ``say``/``start_run``; without
    one for ``cancel_run``, ``delete_thread`` and ``send_input``)."""
    frame = _with_id({"type": "ack"}, id)
    if run_id is not None:
        frame["run_id"] = run_id
    return encode(frame)


def runs_frame(id: str | None, head_seq: int, runs: Sequence[Mapping[str, JSONValue]]) -> str:
    """``runs``: the answer to ``get_runs``."""
    frame = _with_id({"type": "runs"}, id)
    frame["head_seq"] = head_seq
    frame["runs"] = list(runs)
    return encode(frame)


def threads_frame(
    id: str | None, threads: Sequence[Mapping[str, JSONValue]], next: int | None
) -> str:
    """``threads``: the answer to ``threads`` (``next``: the cursor of the next page)."""
    frame = _with_id({"type": "threads"}, id)
    frame["threads"] = list(threads)
    frame["next"] = next
    return encode(frame)


def history_frame(id: str | None, encoded: Sequence[str], more: bool) -> str:
    """``history``: the answer to ``history``, given each event's ``event`` frame as JSON text
    (embedded as it is, like a ``batch``)."""
    head = encode(_with_id({"type": "history"}, id))[:-1]
    return f'{head},"events":[{",".join(encoded)}],"more":{"true" if more else "false"}}}'


def pong_frame(id: str | None) -> str:
    """``pong``: the answer to ``ping``."""
    return encode(_with_id({"type": "pong"}, id))


def error_frame(id: str | None, code: str, message: str) -> str:
    """``error``: a command was refused; the connection stays open."""
    assert code in ERROR_CODES, code
    frame = _with_id({"type": "error"}, id)
    frame["code"] = code
    frame["message"] = message[:MAX_ERROR_MESSAGE]
    return encode(frame)


def event_frames(encoded: Sequence[str], *, max_bytes: int) -> Iterator[str]:
    """Frames for committed events, given each one's ``event`` frame as JSON text, in order.

    One event gives an ``event`` frame; several are coalesced into ``batch`` frames of at most
    ``max_bytes`` of JSON each (an event larger than that travels alone, as an ``event`` frame).
    The events' text is joined as it is: nothing is decoded or encoded again.
    """
    if len(encoded) == 1:
        yield encoded[0]
        return
    group: list[str] = []
    size = 0
    for item in encoded:
        if group and size + len(item) + 1 > max_bytes:
            yield _group_frame(group)
            group, size = [], 0
        group.append(item)
        size += len(item) + 1
    if group:
        yield _group_frame(group)


def _group_frame(group: list[str]) -> str:
    if len(group) == 1:
        return group[0]
    return '{"type":"batch","events":[' + ",".join(group) + "]}"


def item_frames(items: Sequence[tuple[bool, str]], *, max_bytes: int) -> Iterator[str]:
    """Frames for committed events and provisional deltas, in their order.

    ``items`` are ``(is_event, frame_text)`` pairs: an event's ``event`` frame or a ``delta``
    frame, as JSON text. Each delta travels alone, where it is; each run of consecutive events is
    coalesced as :func:`event_frames` does (a ``batch`` holds only events).
    """
    group: list[str] = []
    for is_event, text in items:
        if is_event:
            group.append(text)
            continue
        if group:
            yield from event_frames(group, max_bytes=max_bytes)
            group = []
        yield text
    if group:
        yield from event_frames(group, max_bytes=max_bytes)
