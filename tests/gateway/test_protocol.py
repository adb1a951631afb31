"""The pure protocol codec (``netra_actors/gateway/_protocol.py``), property-based."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netra_actors import Delta
from netra_actors._core import _admission as admission
from netra_actors.gateway._protocol import (
    ERROR_CODES,
    IF_BUSY,
    MAX_ID_CHARS,
    MAX_TEXT_BYTES,
    SERVER_FEATURES,
    CancelRun,
    FrameError,
    GetRuns,
    Hello,
    Ping,
    Say,
    SendInput,
    StartRun,
    ack_frame,
    check_hello,
    error_frame,
    event_frames,
    hello_features,
    item_frames,
    parse_frame,
    pong_frame,
    runs_frame,
    welcome_frame,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)  # fmt: skip
ids = st.none() | st.text(max_size=MAX_ID_CHARS)
short_text = st.text(max_size=200)


def with_id(frame: dict[str, Any], id: str | None) -> dict[str, Any]:
    if id is not None:
        frame["id"] = id
    return frame


@given(id=ids, text=short_text, agent=st.none() | st.text(min_size=1, max_size=64))
def test_say_round_trip(id: str | None, text: str, agent: str | None) -> None:
    frame = with_id({"type": "say", "text": text}, id)
    if agent is not None:
        frame["agent"] = agent
    assert parse_frame(json.dumps(frame)) == Say(id=id, text=text, agent=agent)


@given(id=ids, agent=st.text(max_size=64), input=json_values)
def test_start_run_round_trip(id: str | None, agent: str, input: Any) -> None:
    frame = with_id({"type": "start_run", "agent": agent, "input": input}, id)
    parsed = parse_frame(json.dumps(frame))
    assert parsed == StartRun(id=id, agent=agent, input=input)


@given(id=ids, run_id=st.text(max_size=128))
def test_cancel_get_runs_ping_round_trip(id: str | None, run_id: str) -> None:
    cancel = with_id({"type": "cancel_run", "run_id": run_id}, id)
    assert parse_frame(json.dumps(cancel)) == CancelRun(id=id, run_id=run_id)
    assert parse_frame(json.dumps(with_id({"type": "get_runs"}, id))) == GetRuns(id=id, limit=100)
    assert parse_frame(json.dumps(with_id({"type": "ping"}, id))) == Ping(id=id)


@settings(max_examples=300)
@given(st.text(max_size=300) | json_values.map(json.dumps))
def test_any_input_is_a_frame_or_a_typed_error(text: str) -> None:
    try:
        parse_frame(text)
    except FrameError as exc:
        assert exc.code in ERROR_CODES
        assert exc.message


@settings(max_examples=300)
@given(
    kind=st.sampled_from(["say", "start_run", "cancel_run", "send_input", "get_runs", "ping", "nope"]),
    id=st.text(max_size=MAX_ID_CHARS),
    fields=st.dictionaries(st.sampled_from(["text", "agent", "input", "run_id", "limit", "if_busy"]), json_values | st.sampled_from(IF_BUSY)),
)  # fmt: skip
def test_a_valid_id_is_always_echoed_in_errors(kind: str, id: str, fields: dict[str, Any]) -> None:
    try:
        parse_frame(json.dumps({"type": kind, "id": id, **fields}))
    except FrameError as exc:
        assert exc.id == id


def test_malformed_frames() -> None:
    for text, code in [
        ("{", "bad_request"),
        ("[]", "bad_request"),
        ("1", "bad_request"),
        ('{"id": "x"}', "bad_request"),
        ('{"type": null}', "bad_request"),
        ('{"type": "ping", "id": 1}', "bad_request"),
        ('{"type": "ping", "id": "' + "x" * 65 + '"}', "too_large"),
        ('{"type": "jump"}', "unknown_command"),
        ('{"type": "say"}', "bad_request"),
        ('{"type": "start_run"}', "bad_request"),
        ('{"type": "cancel_run"}', "bad_request"),
        ('{"type": "get_runs", "limit": 0}', "bad_request"),
        ('{"type": "get_runs", "limit": true}', "bad_request"),
        ('{"type": "start_run", "agent": "' + "a" * 65 + '"}', "too_large"),
        ('{"type": "send_input"}', "bad_request"),
        ('{"type": "send_input", "input": 1}', "bad_request"),
        ('{"type": "send_input", "run_id": 3, "input": 1}', "bad_request"),
        ('{"type": "send_input", "run_id": "' + "r" * 129 + '"}', "too_large"),
        ('{"type": "say", "text": "hi", "if_busy": "later"}', "bad_request"),
        ('{"type": "say", "text": "hi", "if_busy": 1}', "bad_request"),
        ('{"type": "say", "text": "hi", "if_busy": "REJECT"}', "bad_request"),
        ('{"type": "start_run", "agent": "demo", "if_busy": ["reject"]}', "bad_request"),
        ('{"type": "start_run", "agent": "demo", "if_busy": ""}', "bad_request"),
        ('{"type": "say", "text": "hi", "start_at": "tomorrow"}', "bad_request"),
        ('{"type": "start_run", "agent": "demo", "start_at": true}', "bad_request"),
    ]:
        with pytest.raises(FrameError) as info:
            parse_frame(text)
        assert info.value.code == code, text


def test_start_at_is_carried_by_say_and_start_run() -> None:
    say = parse_frame('{"type": "say", "text": "hi", "start_at": 1700000000}')
    assert isinstance(say, Say)
    assert say.start_at == 1700000000.0
    run = parse_frame('{"type": "start_run", "agent": "demo", "start_at": 1.5}')
    assert getattr(run, "start_at", None) == 1.5
    assert parse_frame('{"type": "say", "text": "hi"}').start_at is None  # type: ignore[union-attr]


@given(n=st.integers(0, 3 * MAX_TEXT_BYTES), char=st.sampled_from(["a", "é", "€", "😀"]))
def test_text_limit_counts_utf8_bytes(n: int, char: str) -> None:
    text = char * (n // len(char.encode()))
    frame = json.dumps({"type": "say", "id": "t", "text": text})
    if len(text.encode()) <= MAX_TEXT_BYTES:
        assert isinstance(parse_frame(frame), Say)
    else:
        with pytest.raises(FrameError) as info:
            parse_frame(frame)
        assert info.value.code == "too_large"
        assert info.value.id == "t"


@given(token=st.none() | st.text(max_size=10) | st.integers(), resume=json_values)
def test_hello_checks(token: Any, resume: Any) -> None:
    hello = parse_frame(
        json.dumps({"type": "hello", "protocol": 1, "token": token, "resume_from": resume})
    )
    assert isinstance(hello, Hello)
    assert hello.token == (token if isinstance(token, str) else None)
    valid = resume is None or (type(resume) is int and resume >= 0)
    if valid:
        assert check_hello(hello) == resume
    else:
        with pytest.raises(FrameError) as info:
            check_hello(hello)
        assert info.value.code == "bad_request"


def test_hello_protocol_version() -> None:
    assert check_hello(Hello(token="t", protocol=1, resume_from=3)) == 3
    for bad in (2, 0, "1", True, None):
        with pytest.raises(FrameError):
            check_hello(Hello(token="t", protocol=bad, resume_from=None))
    # an absent protocol means 1 (extension: lenient)
    hello = parse_frame('{"type": "hello", "token": "t"}')
    assert isinstance(hello, Hello)
    assert check_hello(hello) is None


def test_server_frames() -> None:
    assert orjson.loads(welcome_frame("alice", 42)) == {
        "type": "welcome", "protocol": 1, "user_id": "alice", "head_seq": 42,
        "features": ["deltas"],
    }  # fmt: skip
    assert orjson.loads(error_frame("c4", "busy", "a run is live")) == {
        "type": "error", "id": "c4", "code": "busy", "message": "a run is live",
    }  # fmt: skip
    assert orjson.loads(ack_frame("c1", "r_1")) == {"type": "ack", "id": "c1", "run_id": "r_1"}
    assert orjson.loads(ack_frame(None)) == {"type": "ack"}
    assert orjson.loads(runs_frame("c2", 3, [{"run_id": "r"}])) == {
        "type": "runs", "id": "c2", "head_seq": 3, "runs": [{"run_id": "r"}],
    }  # fmt: skip
    assert orjson.loads(pong_frame("p")) == {"type": "pong", "id": "p"}
    assert orjson.loads(error_frame("c3", "unknown_run", "no such run")) == {
        "type": "error", "id": "c3", "code": "unknown_run", "message": "no such run",
    }  # fmt: skip


events = st.lists(
    st.builds(
        lambda seq, text: {"type": "event", "seq": seq, "run_id": "r", "event": "x", "ts": 1.5, "data": {"text": text}},
        st.integers(1, 10**6),
        st.text(max_size=300),
    ),
    min_size=1,
    max_size=40,
)  # fmt: skip


@given(events=events, max_bytes=st.integers(50, 5000))
def test_event_frames_preserve_order_and_bound_batches(events: list[dict[str, Any]], max_bytes: int) -> None:  # fmt: skip
    frames = [
        orjson.loads(f)
        for f in event_frames([orjson.dumps(e).decode() for e in events], max_bytes=max_bytes)
    ]
    flat: list[dict[str, Any]] = []
    for text, frame in zip(
        event_frames([orjson.dumps(e).decode() for e in events], max_bytes=max_bytes),
        frames,
        strict=True,
    ):
        if frame["type"] == "batch":
            assert len(frame["events"]) >= 2
            elements = sum(len(orjson.dumps(e).decode()) + 1 for e in frame["events"])
            assert elements <= max_bytes, (elements, max_bytes)
            assert len(text) < max_bytes + 64
            flat.extend(frame["events"])
        else:
            assert frame["type"] == "event"
            flat.append(frame)
    assert flat == events
    if len(events) == 1:
        assert frames == events


# -- the additions: features, send_input, if_busy ------------------------------------------------

busy_values = st.none() | st.sampled_from(IF_BUSY)


@given(
    id=ids, text=short_text, agent=st.none() | st.text(min_size=1, max_size=64), if_busy=busy_values
)
def test_say_if_busy_round_trip(id: str | None, text: str, agent: str | None, if_busy: str | None) -> None:  # fmt: skip
    frame = with_id({"type": "say", "text": text, "agent": agent, "if_busy": if_busy}, id)
    assert parse_frame(json.dumps(frame)) == Say(id=id, text=text, agent=agent, if_busy=if_busy)
    if if_busy is None:  # absent and null are the same: the server's default
        del frame["if_busy"]
        assert parse_frame(json.dumps(frame)) == Say(id=id, text=text, agent=agent)


@given(id=ids, agent=st.text(max_size=64), input=json_values, if_busy=busy_values)
def test_start_run_if_busy_round_trip(id: str | None, agent: str, input: Any, if_busy: str | None) -> None:  # fmt: skip
    frame = with_id({"type": "start_run", "agent": agent, "input": input, "if_busy": if_busy}, id)
    parsed = parse_frame(json.dumps(frame))
    assert parsed == StartRun(id=id, agent=agent, input=input, if_busy=if_busy)


@given(
    kind=st.sampled_from(["say", "start_run"]),
    id=st.text(max_size=MAX_ID_CHARS),
    if_busy=json_values,
)
def test_if_busy_must_be_one_of_the_four(kind: str, id: str, if_busy: Any) -> None:  # fmt: skip
    frame = {"type": kind, "id": id, "text": "t", "agent": "a", "if_busy": if_busy}
    if if_busy is None or if_busy in IF_BUSY:
        parsed = parse_frame(json.dumps(frame))
        assert isinstance(parsed, Say | StartRun)
        assert parsed.if_busy == if_busy
    else:
        with pytest.raises(FrameError) as info:
            parse_frame(json.dumps(frame))
        assert (info.value.code, info.value.id) == ("bad_request", id)


@given(id=ids, run_id=st.text(max_size=128), input=json_values)
def test_send_input_round_trip(id: str | None, run_id: str, input: Any) -> None:
    frame = with_id({"type": "send_input", "run_id": run_id, "input": input}, id)
    assert parse_frame(json.dumps(frame)) == SendInput(id=id, run_id=run_id, input=input)
    del frame["input"]  # like start_run: no input means null
    assert parse_frame(json.dumps(frame)) == SendInput(id=id, run_id=run_id, input=None)
    assert orjson.loads(ack_frame(id)) == with_id({"type": "ack"}, id)


@given(features=st.lists(st.sampled_from(["deltas", "nope", "", "DELTAS"]) | st.text(max_size=10), max_size=6), resume=st.none() | st.integers(0, 99))  # fmt: skip
def test_hello_features_are_a_list_of_strings_unknown_ignored(features: list[str], resume: int | None) -> None:  # fmt: skip
    hello = parse_frame(json.dumps({"type": "hello", "token": "t", "features": features, "resume_from": resume}))  # fmt: skip
    assert isinstance(hello, Hello)
    assert check_hello(hello) == resume
    assert hello_features(hello) == frozenset(features) & frozenset(SERVER_FEATURES)
    assert hello_features(hello) == ({"deltas"} if "deltas" in features else set())


@given(features=json_values)
def test_hello_features_of_any_other_shape_are_refused(features: Any) -> None:
    hello = parse_frame(json.dumps({"type": "hello", "token": "t", "features": features}))
    assert isinstance(hello, Hello)
    ok = features is None or (
        isinstance(features, list) and all(isinstance(f, str) for f in features)
    )
    if ok:
        assert check_hello(hello) is None
        assert hello_features(hello) <= {"deltas"}
    else:
        for check in (check_hello, hello_features):
            with pytest.raises(FrameError) as info:
                check(hello)
            assert info.value.code == "bad_request"
            assert info.value.id is None


def test_hello_without_features_asks_for_none() -> None:
    hello = parse_frame('{"type": "hello", "protocol": 1, "token": "t"}')
    assert isinstance(hello, Hello)
    assert hello_features(hello) == frozenset()
    assert hello_features(Hello(token="t", protocol=1, resume_from=None)) == frozenset()
    assert "deltas" in SERVER_FEATURES
    assert "busy" in ERROR_CODES
    assert IF_BUSY == admission.IF_BUSY  # the codec's list is the runtime's


items = st.lists(
    st.one_of(
        st.builds(
            lambda seq, text: (True, orjson.dumps({"type": "event", "seq": seq, "run_id": "r", "event": "x", "ts": 1.5, "data": {"text": text}}).decode()),
            st.integers(1, 10**6),
            st.text(max_size=300),
        ),
        st.builds(
            lambda offset, text: (False, Delta("r", 1, "m_1", offset, text).wire_json()),
            st.integers(0, 10**6),
            st.text(max_size=300),
        ),
    ),
    min_size=1,
    max_size=40,
)  # fmt: skip


@given(items=items, max_bytes=st.integers(50, 5000))
def test_item_frames_keep_order_and_batch_only_consecutive_events(items: list[tuple[bool, str]], max_bytes: int) -> None:  # fmt: skip
    frames = [orjson.loads(f) for f in item_frames(items, max_bytes=max_bytes)]
    flat: list[Any] = []
    for frame in frames:
        if frame["type"] == "batch":
            assert len(frame["events"]) >= 2
            assert all(e["type"] == "event" for e in frame["events"])
            flat.extend(frame["events"])
        else:
            assert frame["type"] in ("event", "delta")
            flat.append(frame)
    assert flat == [orjson.loads(text) for _, text in items]
    # a run of events is framed exactly as event_frames frames it
    if all(is_event for is_event, _ in items):
        texts = [text for _, text in items]
        assert list(item_frames(items, max_bytes=max_bytes)) == list(event_frames(texts, max_bytes=max_bytes))  # fmt: skip
    # every delta is a frame of its own, with the shape of the contract
    deltas = [f for f in frames if f["type"] == "delta"]
    assert len(deltas) == sum(1 for is_event, _ in items if not is_event)
    for delta in deltas:
        assert set(delta) == {"type", "run_id", "attempt", "message_id", "offset", "text"}
