"""The relay's wire form (``_relay_codec.py``) and a follower's rules for relayed text
(``_streams.FollowedMessages``): pure functions, checked exhaustively and by property."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from netra_actors._relay_codec import LIMIT, decode, encode, merge
from netra_actors._streams import FollowedMessages
from netra_actors._values import Delta, Event


def d(mid: str, offset: int, text: str, run: str = "r1", attempt: int = 1) -> Delta:
    return Delta(run, attempt, mid, offset, text)


def ev(seq: int, run: str | None, name: str, **data: object) -> Event:
    return Event("u", seq, run, name, 0.0, orjson.dumps(data).decode())


def test_merge_joins_each_message_and_keeps_its_order() -> None:
    items = [("u", d("a", 0, "He")), ("u", d("b", 0, "x")), ("u", d("a", 2, "llo"))]
    assert merge(items) == [("u", d("a", 0, "Hello")), ("u", d("b", 0, "x"))]
    # not a continuation: kept apart, in order
    assert merge([("u", d("a", 0, "ab")), ("u", d("a", 5, "c"))]) == [
        ("u", d("a", 0, "ab")),
        ("u", d("a", 5, "c")),
    ]


texts = st.text(min_size=1, max_size=3_000)


@given(st.lists(st.tuples(st.sampled_from(["m1", "m2", "m3"]), texts), max_size=30))
def test_payloads_fit_the_limit_and_carry_every_message_exactly(
    pieces: list[tuple[str, str]],
) -> None:
    length: dict[str, int] = {}
    items = []
    for mid, text in pieces:
        items.append(("u", d(mid, length.get(mid, 0), text)))
        length[mid] = length.get(mid, 0) + len(text)
    payloads = encode("node-1", items, limit=2_000)
    got: dict[str, str] = {}
    for payload in payloads:
        assert len(payload.encode()) <= 2_000
        node, decoded = decode(payload)
        assert node == "node-1"
        for user, delta in decoded:
            assert user == "u"
            assert delta.offset == len(got.get(delta.message_id, ""))  # in order, no gap
            got[delta.message_id] = got.get(delta.message_id, "") + delta.text
    want: dict[str, str] = {}
    for mid, text in pieces:
        want[mid] = want.get(mid, "") + text
    assert got == want


def test_a_big_piece_is_split_under_postgresqls_limit() -> None:
    text = "é" * 20_000 + "\x01" * 3_000  # 40,000 + 18,000 bytes once encoded
    payloads = encode("n", [("u", d("m", 0, text))])
    assert len(payloads) >= 8
    assert all(len(p.encode()) <= LIMIT < 8_000 for p in payloads)
    assert "".join(delta.text for p in payloads for _u, delta in decode(p)[1]) == text


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "garbage",
        "00000000 []",
        encode("n", [("u", d("m", 0, "hi"))])[0].replace("hi", "ho"),  # checksum fails
        encode("n", [("u", d("m", 0, "hi"))])[0][:-3],  # cut short
    ],
)
def test_garbled_payloads_are_refused(payload: str) -> None:
    with pytest.raises(ValueError):
        decode(payload)


def followed() -> FollowedMessages:
    return FollowedMessages(max_open=4, max_chars=100)


def test_a_message_streams_while_its_text_continues_exactly() -> None:
    f = followed()
    assert f.accept(d("m", 0, "He")) == d("m", 0, "He")
    assert f.accept(d("m", 2, "llo")) == d("m", 2, "llo")
    assert list(f.snapshot()) == [d("m", 0, "Hello")]


@pytest.mark.parametrize(
    "late",
    [
        d("m", 9, "x"),  # a gap: something between was lost
        d("m", 0, "He"),  # a repeat
        d("m", 2, "llo", attempt=2),  # another attempt under the same id
    ],
)
def test_a_gap_or_a_repeat_stops_the_message_for_good(late: Delta) -> None:
    f = followed()
    f.accept(d("m", 0, "He"))
    assert f.accept(late) is None
    assert f.accept(d("m", 2, "llo")) is None  # even the right continuation, from now on
    assert list(f.snapshot()) == []
    assert f.stopped == 1


def test_a_message_joined_midway_never_streams() -> None:
    f = followed()
    assert f.accept(d("m", 5, "world")) is None
    assert f.accept(d("m", 10, "!")) is None
    assert f.accept(d("n", 0, "ok")) is not None  # another message is not affected


def test_unsure_stops_every_open_message_but_not_the_next_ones() -> None:
    f = followed()
    f.accept(d("a", 0, "x"))
    f.accept(d("b", 0, "y"))
    f.unsure()
    assert f.accept(d("a", 1, "x")) is None
    assert f.accept(d("b", 1, "y")) is None
    assert f.accept(d("c", 0, "z")) == d("c", 0, "z")


def test_no_delta_after_its_committed_message_rollback_or_end() -> None:
    f = followed()
    f.accept(d("m", 0, "He"))
    f.accept(d("k", 0, "a", run="r2"))
    f.accept(d("q", 0, "b", run="r3", attempt=1))
    f.committed(
        [
            ev(1, "r1", "message", role="assistant", text="Hello", message_id="m"),
            ev(2, "r2", "run_rolled_back", attempt=1, reason="crash"),
            ev(3, "r3", "run_state", state="completed", previous="completing"),
        ]
    )
    assert f.accept(d("m", 2, "llo")) is None
    assert f.accept(d("k", 1, "a", run="r2")) is None
    assert f.accept(d("k2", 0, "late", run="r2")) is None  # the rolled-back attempt's
    assert f.accept(d("n", 0, "next", run="r2", attempt=2)) is not None  # the next attempt
    assert f.accept(d("q2", 0, "x", run="r3", attempt=5)) is None  # the run ended
    assert list(f.snapshot()) == [d("n", 0, "next", run="r2", attempt=2)]


def test_bounds_stop_the_oldest_and_the_longest() -> None:
    f = FollowedMessages(max_open=2, max_chars=5)
    f.accept(d("a", 0, "1"))
    f.accept(d("b", 0, "2"))
    f.accept(d("c", 0, "3"))  # the oldest stops
    assert f.accept(d("a", 1, "x")) is None
    assert f.accept(d("c", 1, "123456")) is None  # past max_chars
    assert [x.message_id for x in f.snapshot()] == ["b"]
