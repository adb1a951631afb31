"""Helpers of the AG-UI tests: an SSE parser, frame validation against the ``ag-ui-protocol``
package's own models (no extra fields), a checker of the AG-UI ordering rules and of netra's SSE id
rules, and an ``httpx`` client for ``POST /agui`` and ``GET /agui/events``.

Everything here is independent of the code under test (no import from ``netra_actors.gateway``):
the frames are read as a client reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import httpx
from ag_ui.core import Event as AguiEvent
from ag_ui_validate import create_validator
from gwkit import Server, token
from pydantic import BaseModel, TypeAdapter

EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(AguiEvent)
TERMINAL_TYPES = frozenset({"RUN_FINISHED", "RUN_ERROR"})
DAY_MS = 86_400_000


class SseFrame(NamedTuple):
    """One dispatched SSE event: its ``id:`` (None without one) and its JSON ``data``."""

    id: str | None
    event: dict[str, Any]

    @property
    def type(self) -> str:
        kind: str = self.event["type"]
        return kind

    @property
    def run(self) -> str | None:
        """The netra run id of the frame (``metadata.netra.run_id``)."""
        run: str | None = self.event["metadata"]["netra"]["run_id"]
        return run

    @property
    def seq(self) -> int | None:
        seq: int | None = self.event["metadata"]["netra"].get("seq")
        return seq


class SseParser:
    """Incremental ``text/event-stream`` parser (the WHATWG rules netra's frames need: ``id``,
    ``data`` (several lines joined), comments, CRLF or LF line ends). Every frame must carry
    ``data`` that is one JSON object."""

    def __init__(self) -> None:
        self._buffer = b""
        self._id: str | None = None
        self._data: list[str] = []
        self._has_id = False
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[SseFrame]:
        self._buffer += chunk
        frames: list[SseFrame] = []
        while True:
            line, sep, rest = self._buffer.partition(b"\n")
            if not sep:
                return frames
            self._buffer = rest
            text = line.removesuffix(b"\r").decode("utf-8")
            if not text:
                if self._data:
                    event = json.loads("\n".join(self._data))
                    assert isinstance(event, dict), event
                    frames.append(SseFrame(self._id if self._has_id else None, event))
                else:
                    assert not self._has_id, "an id: line without data"
                self._id, self._data, self._has_id = None, [], False
                continue
            if text.startswith(":"):
                self.comments.append(text[1:].strip())
                continue
            name, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "id":
                assert not self._has_id, "two id: lines in one frame"
                self._id, self._has_id = value, True
            else:
                raise AssertionError(f"an unexpected SSE field {name!r}: {text!r}")


def parse_sse(body: bytes) -> list[SseFrame]:
    parser = SseParser()
    frames = parser.feed(body)
    assert parser._buffer == b"", "the stream ended in the middle of a line"
    assert not parser._data, "the stream ended in the middle of a frame"
    return frames


# -- validation against the package's models ------------------------------------------------


def _no_extra(model: BaseModel, path: str) -> None:
    assert not model.model_extra, (
        f"{path}: fields the AG-UI model does not know: {model.model_extra}"
    )
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                _no_extra(item, f"{path}.{name}[{i}]")


def validate(event: dict[str, Any]) -> BaseModel:
    """Validate one AG-UI event with the model of its ``type``; no extra fields anywhere, and it
    re-serializes to exactly the same JSON object."""
    model = EVENT_ADAPTER.validate_python(event)
    assert isinstance(model, BaseModel)
    assert getattr(model, "type").value == event["type"]  # noqa: B009
    _no_extra(model, event["type"])
    again = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert again == event, f"re-serialized differently:\n{again}\n{event}"
    return model


# -- ordering and id rules ------------------------------------------------------------------


def id_key(frame_id: str) -> tuple[int, float]:
    """The order of SSE ids: k.1 < k.2 < … < k < (k+1).1."""
    head, dot, tail = frame_id.partition(".")
    assert re.fullmatch("[0-9]+", head), frame_id
    if not dot:
        return int(head), float("inf")
    assert re.fullmatch("[0-9]+", tail), frame_id
    assert int(tail) >= 1, frame_id
    return int(head), int(tail)


class StreamChecker:
    """Feed it a stream's frames in order; it asserts every AG-UI ordering rule per run (told
    apart by ``metadata.netra.run_id``) and netra's SSE id rules.

    ``resumed``: the ``Last-Event-ID`` the stream was opened with (its first group may start in
    the middle). ``open_runs``: runs the client already holds a ``RUN_STARTED`` of, as
    ``{netra run id: (threadId, runId)}``. ``clock``: timestamps must be near the wall clock.
    """

    def __init__(
        self,
        *,
        resumed: str | None = None,
        open_runs: dict[str, tuple[str, str]] | None = None,
        clock: bool = True,
    ) -> None:
        self.frames: list[SseFrame] = []
        self.started: dict[str, tuple[str, str]] = dict(open_runs or {})
        """run → the (threadId, runId) of its RUN_STARTED."""
        self.joined = set(self.started)
        """Runs this stream did not see begin (held open already, or a provisional RUN_STARTED)."""
        self.finished: dict[str, SseFrame] = {}
        self.messages: dict[str, tuple[str | None, bool]] = {}
        """messageId → (its run, still open)."""
        self.text: dict[str, str] = {}
        self.tools: dict[str, tuple[str | None, bool]] = {}
        self.reasoning: dict[tuple[str, str], tuple[str | None, bool]] = {}
        self.last: tuple[int, float] | None = None
        self.group: tuple[int, int] | None = None
        """Inside the group of seq k: (k, the part expected next)."""
        self.first_part: int | None = None
        if resumed is not None:
            k, part = id_key(resumed)
            self.last = (k, part)
            if part != float("inf"):
                self.first_part = int(part) + 1
                self.group = (k, int(part) + 1)
        self.clock = clock

    def feed_all(self, frames: Iterable[SseFrame]) -> StreamChecker:
        for frame in frames:
            self.feed(frame)
        return self

    def feed(self, frame: SseFrame) -> None:
        try:
            self._feed(frame)
        except AssertionError as exc:
            recent = "\n".join(f"  {f.id} {json.dumps(f.event)[:300]}" for f in self.frames[-8:])
            raise AssertionError(f"{exc}\nframe: {frame}\nafter:\n{recent}") from None
        self.frames.append(frame)

    def _feed(self, frame: SseFrame) -> None:
        event = frame.event
        validate(event)
        timestamp = event.get("timestamp")
        assert type(timestamp) is int, "timestamp must be an integer (ms)"
        if self.clock:
            assert abs(timestamp - time.time() * 1000) < DAY_MS, "timestamp not in ms"
        netra = event["metadata"]["netra"]
        assert set(netra) <= {"seq", "run_id"}, netra
        assert "run_id" in netra, netra
        self._ids(frame, netra)
        self._order(frame)

    def _ids(self, frame: SseFrame, netra: dict[str, Any]) -> None:
        if frame.id is None:
            assert "seq" not in netra, "a provisional frame with a seq"
            event, run = frame.event, frame.run
            again = run is not None and run in self.started and run not in self.finished
            again = again and self.started[run or ""] == (event.get("threadId"), event.get("runId"))
            opening = frame.type == "RUN_STARTED" and (again or not self.frames)
            if not opening:  # (the RUN_STARTED a resumed stream opens with precedes the rest)
                assert self.group is None, f"a provisional frame inside the group of {self.group}"
            return
        key = id_key(frame.id)
        assert netra.get("seq") == key[0], f"id {frame.id} but metadata.netra.seq {netra}"
        if self.last is not None:
            assert key > self.last, f"id {frame.id} does not increase"
        if self.group is not None:
            k, part = self.group
            assert key[0] == k, f"the group of {k} did not end with the bare {k}"
            assert key[1] in (part, float("inf")), f"expected {k}.{part} or {k}, got {frame.id}"
        else:
            assert key[1] in (1, float("inf")), f"a group that does not begin with .1: {frame.id}"
        self.group = None if key[1] == float("inf") else (key[0], int(key[1]) + 1)
        self.last = key

    def _order(self, frame: SseFrame) -> None:
        event, kind, run = frame.event, frame.type, frame.run
        if run is None:  # an event of no run: the CUSTOM of a user-level netra event
            assert kind == "CUSTOM", f"{kind} outside any run"
            return
        if kind != "RUN_STARTED":
            assert run not in self.finished, (
                f"{kind} of run {run} after its {self.finished[run].type}"
            )
        ids = (event.get("threadId"), event.get("runId"))
        if kind == "RUN_STARTED":
            if run in self.finished:  # the run's next segment (after an interrupt)
                ended = self.finished.pop(run)
                assert ended.type == "RUN_FINISHED", f"a RUN_STARTED after {ended.type}"
                assert ids[1] != ended.event["runId"], "a segment reuses its parent's runId"
                assert event.get("parentRunId") in (None, ended.event["runId"]), event
            elif run in self.started:  # announced again by a resumed stream: the same ids
                assert frame.id is None, f"a second RUN_STARTED of run {run}"
                assert ids == self.started[run], f"{ids} ≠ {self.started[run]}"
            if frame.id is None:
                self.joined.add(run)
            self.started[run] = (str(ids[0]), str(ids[1]))
            return
        if kind == "MESSAGES_SNAPSHOT":
            return
        assert run in self.started, f"{kind} of run {run} before its RUN_STARTED"
        if kind == "TEXT_MESSAGE_START":
            mid = event["messageId"]
            assert mid not in self.messages, f"message {mid} started twice"
            self.messages[mid] = (run, True)
            self.text[mid] = ""
        elif kind in ("TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"):
            mid = event["messageId"]
            assert self.messages.get(mid) == (run, True), f"{kind} of message {mid} not open"
            if kind == "TEXT_MESSAGE_END":
                self.messages[mid] = (run, False)
            else:
                self.text[mid] += event["delta"]
        elif kind == "TOOL_CALL_START":
            call = event["toolCallId"]
            assert call not in self.tools, f"tool call {call} started twice"
            parent = event.get("parentMessageId")
            assert parent is None or parent in self.messages, f"unknown parent message {parent}"
            self.tools[call] = (run, True)
        elif kind in ("REASONING_START", "REASONING_MESSAGE_START"):
            key = (kind, event["messageId"])
            assert key not in self.reasoning, f"{key} started twice"
            self.reasoning[key] = (run, True)
        elif kind in ("REASONING_END", "REASONING_MESSAGE_CONTENT", "REASONING_MESSAGE_END"):
            opener = "REASONING_START" if kind == "REASONING_END" else "REASONING_MESSAGE_START"
            key = (opener, event["messageId"])
            assert self.reasoning.get(key) == (run, True), f"{kind} of {key} not open"
            if kind != "REASONING_MESSAGE_CONTENT":
                self.reasoning[key] = (run, False)
        elif kind in ("TOOL_CALL_ARGS", "TOOL_CALL_END"):
            call = event["toolCallId"]
            assert self.tools.get(call) == (run, True), f"{kind} of tool call {call} not open"
            if kind == "TOOL_CALL_END":
                self.tools[call] = (run, False)
        elif kind == "TOOL_CALL_RESULT":
            call = event["toolCallId"]
            if call in self.tools or run not in self.joined:
                assert self.tools.get(call) == (run, False), (
                    f"a result of tool call {call} not ended"
                )
        elif kind in TERMINAL_TYPES:
            left = [m for m, (r, is_open) in self.messages.items() if r == run and is_open]
            assert not left, f"{kind} with messages {left} open"
            calls = [c for c, (r, is_open) in self.tools.items() if r == run and is_open]
            assert not calls, f"{kind} with tool calls {calls} open"
            spans = [c for c, (r, is_open) in self.reasoning.items() if r == run and is_open]
            assert not spans, f"{kind} with reasoning {spans} open"
            if kind == "RUN_FINISHED":
                ids = (event["threadId"], event["runId"])
                assert ids == self.started[run], (
                    f"RUN_FINISHED {ids} ≠ RUN_STARTED {self.started[run]}"
                )
            self.finished[run] = frame
        else:
            assert kind == "CUSTOM", f"an unexpected event type {kind}"

    # -- views ------------------------------------------------------------------------------

    def of_run(self, run: str) -> list[SseFrame]:
        return [f for f in self.frames if f.run == run]

    def durable(self) -> list[SseFrame]:
        return [f for f in self.frames if f.id is not None]


def findings(frames: Iterable[SseFrame]) -> list[str]:
    """What ``ag-ui-validate`` finds in a stream: each run's frames (told apart by
    ``metadata.netra.run_id``: the validator follows one run at a time, and ``GET /agui/events``
    interleaves runs) through a validator of its own. A run whose last segment has not ended in
    the stream is not finalized (the stream was closed first). A ``RUN_STARTED`` a resumed
    stream adds for a segment the client holds open (same ids, no SSE id) is the client's new
    verifier's start: it is left out of a view that spans the streams before the resume."""
    runs: dict[str | None, list[SseFrame]] = {}
    for frame in frames:
        runs.setdefault(frame.run, []).append(frame)
    out: list[str] = []
    for run, of_run in runs.items():
        if run is None:
            continue
        validator = create_validator()
        open_ids: tuple[str, str] | None = None
        for frame in of_run:
            event = frame.event
            if event["type"] == "RUN_STARTED":
                ids = (event["threadId"], event["runId"])
                if frame.id is None and ids == open_ids:
                    continue
                open_ids = ids
            elif event["type"] in TERMINAL_TYPES:
                open_ids = None
            out += [f"{d.rule} {d.message} ({event['type']})" for d in validator.feed(event)]
        if open_ids is None:
            out += [f"{d.rule} {d.message}" for d in validator.finalize()]
    return out


def check(frames: Iterable[SseFrame], **kwargs: Any) -> StreamChecker:
    """Check a whole stream (see :class:`StreamChecker`)."""
    return StreamChecker(**kwargs).feed_all(frames)


def after_id(frames: list[SseFrame], frame_id: str) -> list[SseFrame]:
    """The durable frames of ``frames`` after the one with ``frame_id``."""
    ids = [f.id for f in frames]
    return [f for f in frames[ids.index(frame_id) + 1 :] if f.id is not None]


def customs(frames: Iterable[SseFrame], name: str) -> list[SseFrame]:
    return [f for f in frames if f.type == "CUSTOM" and f.event["name"] == name]


def of_type(frames: Iterable[SseFrame], *kinds: str) -> list[SseFrame]:
    return [f for f in frames if f.type in kinds]


# -- the HTTP client ------------------------------------------------------------------------


def run_input(
    text: str = "hello 1 2",
    *,
    thread: str | None = None,
    run: str | None = None,
    before: list[dict[str, Any]] | None = None,
    message_id: str | None = None,
    **props: Any,
) -> dict[str, Any]:
    """An AG-UI ``RunAgentInput`` whose last message is the user's ``text`` (id ``message_id``,
    else a new one), after the messages ``before`` (the thread's messages the client holds);
    ``props`` go to ``forwardedProps`` (``agent``, ``if_busy``)."""
    return {
        "threadId": thread or f"t-{uuid.uuid4().hex[:8]}",
        "runId": run or f"ar-{uuid.uuid4().hex[:8]}",
        "state": None,
        "messages": [
            *(before or []),
            {"id": message_id or f"m-{uuid.uuid4().hex[:12]}", "role": "user", "content": text},
        ],
        "tools": [],
        "context": [],
        "forwardedProps": props,
    }


class Answer(NamedTuple):
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def request(
    server: Server,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | dict[str, Any] | None = None,
    stream: bool = False,
) -> Answer:
    """A request whose answer is not a stream (a refusal, a preflight). ``stream``: an answer
    may be an event stream; then only its head is read (body ``b""``) and it is closed."""
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    async with httpx.AsyncClient(timeout=10) as client:
        req = client.build_request(method, server.http + path, headers=headers, content=content)
        resp = await client.send(req, stream=True)
        try:
            if stream and resp.status_code == 200:
                return Answer(resp.status_code, resp.headers, b"")
            await resp.aread()
            return Answer(resp.status_code, resp.headers, resp.content)
        finally:
            await resp.aclose()


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


_END = object()


class Stream:
    """One ``text/event-stream`` response, read by a background task; every frame is checked
    (validation, ordering and ids) as it arrives."""

    def __init__(
        self, client: httpx.AsyncClient, response: httpx.Response, checker: StreamChecker
    ) -> None:
        self._client = client
        self.response = response
        self.checker = checker
        self._first = len(checker.frames)
        """The checker may go on from frames the client had before this stream."""
        self.parser = SseParser()
        self._queue: asyncio.Queue[SseFrame | object] = asyncio.Queue()
        self.ended = False
        self._reader = asyncio.ensure_future(self._read())

    @property
    def frames(self) -> list[SseFrame]:
        """The frames of this stream."""
        return self.checker.frames[self._first :]

    @classmethod
    async def open(
        cls,
        server: Server,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: dict[str, Any] | None = None,
        checker: StreamChecker | None = None,
    ) -> Stream:
        client = httpx.AsyncClient(timeout=httpx.Timeout(10, read=60))
        content = json.dumps(body).encode() if body is not None else None
        hdrs = {"Accept": "text/event-stream", **headers}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            req = client.build_request(method, server.http + path, headers=hdrs, content=content)
            response = await client.send(req, stream=True)
        except BaseException:
            await client.aclose()
            raise
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            await client.aclose()
            raise AssertionError(f"{method} {path}: {response.status_code} {response.content!r}")
        assert response.headers["content-type"].startswith("text/event-stream")
        return cls(client, response, checker or StreamChecker())

    async def _read(self) -> None:
        try:
            async for chunk in self.response.aiter_raw():
                for frame in self.parser.feed(chunk):
                    self.checker.feed(frame)
                    self._queue.put_nowait(frame)
        except (httpx.ReadError, httpx.RemoteProtocolError):
            pass  # the server went away (a restart)
        finally:
            self._queue.put_nowait(_END)

    async def next(self, within: float = 10.0) -> SseFrame | None:
        """The next frame, or None when the server ended the stream."""
        if self.ended:
            return None
        item = await asyncio.wait_for(self._queue.get(), within)
        if item is _END:
            self.ended = True
            failure = self._reader.exception() if self._reader.done() else None
            if failure is not None:
                raise failure
            return None
        assert isinstance(item, SseFrame)
        return item

    async def until(self, predicate: Callable[[SseFrame], bool], within: float = 20.0) -> SseFrame:
        """Read until a frame matching ``predicate`` (or one already did)."""
        for frame in self.frames:
            if predicate(frame):
                return frame
        async with asyncio.timeout(within):
            while True:
                got = await self.next(within)
                assert got is not None, "the stream ended first"
                if predicate(got):
                    return got

    async def until_id(self, frame_id: str, within: float = 20.0) -> SseFrame:
        return await self.until(lambda f: f.id == frame_id, within)

    async def until_end(self, run: str, within: float = 20.0) -> SseFrame:
        """Read until the run's RUN_FINISHED or RUN_ERROR."""
        return await self.until(lambda f: f.run == run and f.type in TERMINAL_TYPES, within)

    async def to_end(self, within: float = 20.0) -> list[SseFrame]:
        """Read until the server ends the response; every frame."""
        async with asyncio.timeout(within):
            while await self.next(within) is not None:
                pass
        return self.frames

    async def quiet(self, seconds: float) -> None:
        """Assert that no frame comes within ``seconds``."""
        with contextlib.suppress(TimeoutError):
            frame = await self.next(seconds)
            raise AssertionError(f"an unexpected frame: {frame}")

    async def close(self) -> None:
        """Close the stream; ``ag-ui-validate`` must find nothing in what the client got."""
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        with contextlib.suppress(Exception):
            await self.response.aclose()
        await self._client.aclose()
        found = findings(self.checker.frames)
        assert not found, f"ag-ui-validate: {found}"

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def post(
    server: Server, user: str, body: dict[str, Any], *, headers: dict[str, str] | None = None
) -> Stream:
    """Open ``POST /agui``."""
    return await Stream.open(
        server, "POST", "/agui", headers={**auth(user), **(headers or {})}, body=body
    )


async def events(
    server: Server,
    user: str,
    last_event_id: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    checker: StreamChecker | None = None,
    thread: str | None = None,
) -> Stream:
    """Open ``GET /agui/events`` (with ``Last-Event-ID`` if given; ``?threadId=thread``)."""
    hdrs = {**auth(user), **(headers or {})}
    if last_event_id is not None:
        hdrs["Last-Event-ID"] = last_event_id
    if checker is None:
        checker = StreamChecker(resumed=last_event_id if last_event_id not in (None, "0") else None)
    path = "/agui/events" if thread is None else f"/agui/events?threadId={thread}"
    return await Stream.open(server, "GET", path, headers=hdrs, checker=checker)


async def replay(
    server: Server, user: str, last_event_id: str, head: int, checker: StreamChecker | None = None
) -> list[SseFrame]:
    """``GET /agui/events`` with ``Last-Event-ID``, read until the frame with id ``head``; the
    frames it received (``checker``: continue checking a stream the client already has)."""
    async with await events(server, user, last_event_id, checker=checker) as stream:
        if last_event_id != str(head):
            await stream.until_id(str(head))
        return list(stream.frames)
