"""Provisional streaming (protocol v1 "Provisional text deltas") at the runtime API.

Deltas reach ``deltas=True`` subscriptions before the commit, in order, with offsets in code
points; the committed ``message`` supersedes them; a rollback retracts them; they are never
stored. Every test runs with async agents and with their threaded twins; the store is a real
SQLite file read back with an independent ``sqlite3`` connection.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import (
    as_tuples,
    assert_gapless,
    assert_legal_runs,
    db_path,
    make_config,
    read_until_ended,
    stored_events,
)
from streaming_agents import STREAMING_BY_KIND

import netra_actors as na
from netra_actors._core import RunState
from netra_actors.testing import guest_test

KINDS = pytest.mark.parametrize("kind", ["async", "threaded"])

Item = na.Event | na.Delta


def open_rt(config: na.RuntimeConfig, kind: str) -> Any:
    return na.open_runtime(config, agents=STREAMING_BY_KIND[kind])


async def read_items_until_ended(sub: na.types.Subscription, run_ids: Iterable[str]) -> list[Item]:
    """Read a ``deltas=True`` subscription until every run in ``run_ids`` has ended."""
    pending = set(run_ids)
    items: list[Item] = []
    with trio.fail_after(20):
        while pending:
            for item in await sub.receive_items():
                items.append(item)
                if (
                    isinstance(item, na.Event)
                    and item.event == "run_state"
                    and RunState(item.data["state"]).is_terminal
                ):
                    pending.discard(item.run_id or "")
    return items


async def read_items_until(sub: na.types.Subscription, done: Any) -> list[Item]:
    """Read until ``done(items)`` holds."""
    items: list[Item] = []
    with trio.fail_after(10):
        while not done(items):
            items.extend(await sub.receive_items())
    return items


def deltas_of(items: Iterable[Item]) -> list[na.Delta]:
    return [i for i in items if isinstance(i, na.Delta)]


def events_of(items: Iterable[Item]) -> list[na.Event]:
    return [i for i in items if isinstance(i, na.Event)]


def assistant_messages(items: Iterable[Item]) -> list[na.Event]:
    return [
        e for e in events_of(items) if e.event == "message" and e.data.get("role") == "assistant"
    ]


def check_delta_contract(items: Sequence[Item]) -> dict[str, str]:
    """The contract over one subscription's items; returns each message's text from deltas.

    Per message: offsets are the code points already received (first 0, never a gap or a
    repeat), and no delta follows the message's commit or its attempt's ``run_rolled_back``.
    A committed message's text starts with what its deltas said (equal unless it stopped
    streaming).
    """
    texts: dict[str, str] = {}
    attempt_of: dict[str, tuple[str, int]] = {}
    committed: set[str] = set()
    rolled_back: set[tuple[str, int]] = set()
    for item in items:
        if isinstance(item, na.Delta):
            mid = item.message_id
            assert mid not in committed, f"delta of {mid} after its commit"
            assert (item.run_id, item.attempt) not in rolled_back, f"delta after rollback: {item}"
            have = texts.get(mid, "")
            assert item.offset == len(have), (item, have)
            assert item.text, item
            assert attempt_of.setdefault(mid, (item.run_id, item.attempt)) == (
                item.run_id,
                item.attempt,
            )
            texts[mid] = have + item.text
        elif item.event == "message" and item.data.get("role") == "assistant":
            mid = str(item.data["message_id"])
            committed.add(mid)
            if mid in texts:
                assert str(item.data["text"]).startswith(texts[mid])
                assert attempt_of[mid][0] == item.run_id
        elif item.event == "run_rolled_back":
            rolled_back.add((item.run_id or "", int(item.data["attempt"])))
    return texts


def assert_nothing_provisional_stored(config: na.RuntimeConfig, message_ids: Iterable[str]) -> None:
    """Raw sqlite3: no ``delta`` row anywhere; a message id appears only in its committed
    ``message`` event, once (never for messages that did not commit)."""
    with sqlite3.connect(db_path(config)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        dumps = {t: [repr(row) for row in conn.execute(f'SELECT * FROM "{t}"')] for t in tables}
        names = {r[0] for r in conn.execute("SELECT DISTINCT event FROM netra_events")}
        committed = {
            r[0]
            for r in conn.execute(
                "SELECT json_extract(data, '$.message_id') FROM netra_events WHERE event='message'"
            )
        }
    assert "delta" not in names
    for mid in message_ids:
        hits = [(t, row) for t, rows in dumps.items() for row in rows if mid in row]
        if mid in committed:  # (the agent's result may name it too: not provisional text)
            assert [h for h in hits if "'message'" in h[1]] == [
                h for h in hits if h[0] == "netra_events" and "'message'" in h[1]
            ]
            assert len([h for h in hits if "'message'" in h[1]]) == 1, hits
        else:
            assert hits == [], f"uncommitted message {mid} is in the store: {hits}"


TOKENS = ["Hé", "llo ", "wörld ", "🙂", "!"]  # non-ASCII, and one code point outside the BMP


@KINDS
@guest_test()
async def test_deltas_precede_the_commit_in_order_and_are_never_stored(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        live = await rt.subscribe("alice", deltas=True)
        plain = await rt.subscribe("alice")
        run_id = await rt.start_run(
            "alice", "stream_text", {"tokens": TOKENS, "messages": 2, "think": True}
        )
        items = await read_items_until_ended(live, [run_id])
        plain_events = await read_until_ended(plain, [run_id])
        info = await rt.wait_run("alice", run_id)
        replayed = [e async for e in rt.replay("alice")]
        later = await rt.subscribe("alice", resume_from=0, deltas=True)
        later_items = await read_items_until_ended(later, [run_id])

    assert info.state is na.RunState.COMPLETED
    texts = check_delta_contract(items)
    deltas = deltas_of(items)
    committed = assistant_messages(items)
    whole = "".join(TOKENS)
    assert [e.data["message_id"] for e in committed] == info.result  # the ids the agent had
    assert len(committed) == 2
    for message in committed:
        mid = str(message.data["message_id"])
        assert message.data["text"] == whole
        assert texts[mid] == whole  # every token, in order
        mine = [d for d in deltas if d.message_id == mid]
        assert all(d.run_id == run_id and d.attempt == 1 for d in mine)
        # offsets are code points sent before (a reader that keeps up gets them as written)
        assert [d.offset for d in mine] == [
            sum(len(d2.text) for d2 in mine[:k]) for k in range(len(mine))
        ]
        assert max(items.index(d) for d in mine) < items.index(message)
    # the second message's deltas come after the first message's commit (and its thinking)
    first_commit = items.index(committed[0])
    second = [d for d in deltas if d.message_id == committed[1].data["message_id"]]
    assert items.index(second[0]) > first_commit

    # a deltas=False subscription never sees a Delta, and sees the same committed events
    assert all(isinstance(e, na.Event) for e in plain_events)
    assert as_tuples(plain_events) == as_tuples(events_of(items))
    # never in the store, never replayed
    assert all(isinstance(e, na.Event) and e.event != "delta" for e in replayed)
    assert as_tuples(replayed) == stored_events(config, "alice")
    assert deltas_of(later_items) == []
    assert as_tuples(events_of(later_items)) == as_tuples(replayed)
    assert_nothing_provisional_stored(config, texts)
    assert_gapless(events_of(items), start=events_of(items)[0].seq)


@KINDS
@guest_test()
async def test_rollback_retracts_and_the_restart_streams_under_new_ids(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        live = await rt.subscribe("alice", deltas=True)
        run_id = await rt.start_run(
            "alice", "stream_text", {"tokens": ["ab", "cd", "ef"], "crash_times": 2}
        )
        items = await read_items_until_ended(live, [run_id])
        info = await rt.wait_run("alice", run_id)

    assert info.state is na.RunState.COMPLETED
    assert info.attempt == 3
    check_delta_contract(items)
    rollbacks = [e for e in events_of(items) if e.event == "run_rolled_back"]
    assert [(r.data["attempt"], r.data["reason"]) for r in rollbacks] == [
        (1, "crash"),
        (2, "crash"),
    ]
    ids_by_attempt: dict[int, set[str]] = {}
    for d in deltas_of(items):
        ids_by_attempt.setdefault(d.attempt, set()).add(d.message_id)
    assert sorted(ids_by_attempt) == [1, 2, 3]  # every attempt streamed
    assert all(len(ids) == 1 for ids in ids_by_attempt.values())
    assert len(set().union(*ids_by_attempt.values())) == 3  # new message ids each attempt
    for r in rollbacks:  # nothing of the rolled-back attempt after its rollback
        after = items[items.index(r) + 1 :]
        assert not [d for d in deltas_of(after) if d.attempt == r.data["attempt"]]
        before = items[: items.index(r)]
        assert "".join(d.text for d in deltas_of(before) if d.attempt == r.data["attempt"]) == (
            "abcdef"
        )
    committed = assistant_messages(items)
    assert len(committed) == 1
    assert {str(committed[0].data["message_id"])} == ids_by_attempt[3]
    assert committed[0].data["text"] == "abcdef"
    assert_nothing_provisional_stored(config, set().union(*ids_by_attempt.values()))
    assert_legal_runs(items_events := events_of(items))
    assert as_tuples(items_events) == stored_events(config, "alice")


@KINDS
@guest_test()
async def test_a_subscription_opened_mid_stream_gets_the_text_so_far_then_the_rest(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        first = await rt.subscribe("alice", deltas=True)
        tokens = ["ab", "cd", "éf", "g🙂"]
        run_id = await rt.start_run("alice", "stream_text", {"tokens": tokens, "gate": True})
        for _ in range(2):
            await rt.send_to_run("alice", run_id, "go")
        early = await read_items_until(
            first, lambda its: "".join(d.text for d in deltas_of(its)) == "abcd"
        )
        fresh = await rt.subscribe("alice", deltas=True)  # no resume: live only
        resumed = await rt.subscribe("alice", resume_from=0, deltas=True)  # replay, then live
        head = fresh.head_seq
        # read each up to its snapshot first (a reader that is behind would get it merged
        # with the continuation, which is allowed)
        fresh_items = await read_items_until(fresh, deltas_of)
        resumed_items = await read_items_until(resumed, deltas_of)
        for _ in range(2):
            await rt.send_to_run("alice", run_id, "go")
        rest = await read_items_until_ended(first, [run_id])
        fresh_items += await read_items_until_ended(fresh, [run_id])
        resumed_items += await read_items_until_ended(resumed, [run_id])

    whole = "".join(tokens)
    check_delta_contract(early + rest)
    mid = deltas_of(early)[0].message_id
    for sub_items in (fresh_items, resumed_items):
        assert check_delta_contract(sub_items) == {mid: whole}
        snapshot = deltas_of(sub_items)[0]
        assert snapshot == na.Delta(run_id, 1, mid, 0, "abcd")  # one delta, all text so far
        continuation = deltas_of(sub_items)[1:]
        assert continuation, "the rest of the message streams on"
        assert continuation[0].offset == 4
        assert "".join(d.text for d in continuation) == "éfg🙂"
        assert assistant_messages(sub_items)[-1].data["text"] == whole
    assert isinstance(fresh_items[0], na.Delta)  # live-only: the snapshot comes first
    # with resume_from: the replay up to the head first, then the snapshot, then live
    snap_at = resumed_items.index(deltas_of(resumed_items)[0])
    replayed = resumed_items[:snap_at]
    assert [e.seq for e in events_of(replayed)] == list(range(1, head + 1))
    assert all(isinstance(i, na.Event) for i in replayed)


@KINDS
@guest_test()
async def test_a_slow_reader_gets_merged_deltas_without_gaps(tmp_path: Path, kind: str) -> None:
    config = make_config(tmp_path)
    tokens = [f"t{i}·" for i in range(200)]
    async with open_rt(config, kind) as rt:
        slow = await rt.subscribe("alice", deltas=True)  # not read until the run ended
        fast = await rt.subscribe("alice")
        run_id = await rt.start_run("alice", "stream_text", {"tokens": tokens})
        await read_until_ended(fast, [run_id])
        items = await read_items_until_ended(slow, [run_id])

    whole = "".join(tokens)
    deltas = deltas_of(items)
    assert 1 <= len(deltas) < len(tokens)  # merged: fewer items ...
    assert check_delta_contract(items) == {deltas[0].message_id: whole}  # ... same text, no gap
    assert assistant_messages(items)[0].data["text"] == whole


@KINDS
@guest_test()
async def test_writing_past_max_message_chars_raises_agent_error(tmp_path: Path, kind: str) -> None:
    """The ``write`` that would pass the bound raises ``AgentError`` in the agent and sends
    nothing; the message stays open: caught, the agent may go on writing within the bound and
    commit; uncaught, the attempt crashes (one rollback, which retracts the message)."""
    config = make_config(tmp_path, max_message_chars=10)
    async with open_rt(config, kind) as rt:
        live = await rt.subscribe("alice", deltas=True)
        caught = await rt.start_run("alice", "too_long", {"catch": True})
        escaped = await rt.start_run("alice", "too_long", {"catch": False})
        items = await read_items_until_ended(live, [caught, escaped])
        caught_info = await rt.wait_run("alice", caught)
        escaped_info = await rt.wait_run("alice", escaped)

    check_delta_contract(items)
    assert caught_info.state is na.RunState.COMPLETED
    assert caught_info.result == "1234567890"
    mine = [i for i in items if i.run_id == caught]
    refused = next(e for e in events_of(mine) if e.event == "write_refused")
    assert "max_message_chars" in refused.data["error"]
    assert refused.data["text"] == "12345"  # the refused write added nothing
    assert "".join(d.text for d in deltas_of(mine)) == "1234567890"
    assert assistant_messages(mine)[0].data["text"] == "1234567890"

    assert escaped_info.state is na.RunState.FAILED
    theirs = [i for i in items if i.run_id == escaped]
    rollbacks = [e.data for e in events_of(theirs) if e.event == "run_rolled_back"]
    assert len(rollbacks) == 1
    assert rollbacks[0]["reason"] == "crash"
    assert rollbacks[0]["error"].startswith("AgentError")
    assert "max_message_chars" in rollbacks[0]["error"]
    assert "".join(d.text for d in deltas_of(theirs)) == "12345"
    assert assistant_messages(theirs) == []


@KINDS
@guest_test()
async def test_past_max_open_messages_the_oldest_stops_streaming_but_commits(
    tmp_path: Path, kind: str
) -> None:
    config = make_config(tmp_path, max_open_messages=2)
    async with open_rt(config, kind) as rt:
        live = await rt.subscribe("alice", deltas=True)
        run_id = await rt.start_run("alice", "multi_stream", {"count": 3, "rounds": 3})
        items = await read_items_until_ended(live, [run_id])
        info = await rt.wait_run("alice", run_id)

    assert info.state is na.RunState.COMPLETED
    assert isinstance(info.result, list)
    oldest, middle, newest = (str(m) for m in info.result)
    texts = check_delta_contract(items)
    # the third message opened while two streamed: the oldest one stopped streaming there
    assert texts[oldest] == "0.0;"
    assert texts[middle] == "1.0;1.1;1.2;"
    assert texts[newest] == "2.0;2.1;2.2;"
    committed = {str(e.data["message_id"]): e.data["text"] for e in assistant_messages(items)}
    assert committed == {  # every message still commits its whole text
        oldest: "0.0;0.1;0.2;",
        middle: "1.0;1.1;1.2;",
        newest: "2.0;2.1;2.2;",
    }


@KINDS
@guest_test()
async def test_streaming_keeps_invariants_2_to_7(tmp_path: Path, kind: str) -> None:
    """Gapless seqs, legal state chains, commit before send (checked at delivery with an
    independent sqlite3 read), one rollback per crash, and an exact resume — with deltas
    interleaved, for several users at once."""
    config = make_config(tmp_path)
    checked = 0
    received: dict[str, list[Item]] = {}
    async with open_rt(config, kind) as rt:
        probe = sqlite3.connect(db_path(config))

        async def one_user(user: str) -> None:
            nonlocal checked
            sub = await rt.subscribe(user, deltas=True)
            ids = [
                await rt.start_run(
                    user, "stream_text", {"tokens": TOKENS, "messages": 3, "think": True}
                ),
                await rt.start_run(user, "stream_text", {"tokens": TOKENS, "crash_times": 1}),
                await rt.start_run(user, "stream_text", {"tokens": TOKENS * 4, "messages": 2}),
            ]
            pending = set(ids)
            items: list[Item] = []
            with trio.fail_after(20):
                while pending:
                    for item in await sub.receive_items():
                        items.append(item)
                        if isinstance(item, na.Delta):
                            continue
                        row = probe.execute(
                            "SELECT event, run_id FROM netra_events WHERE user_id=? AND seq=?",
                            (user, item.seq),
                        ).fetchone()
                        assert row == (item.event, item.run_id), f"{user} {item.seq} not committed"
                        checked += 1
                        if item.event == "run_state" and RunState(item.data["state"]).is_terminal:
                            pending.discard(item.run_id or "")
            received[user] = items

        async with trio.open_nursery() as n:
            for i in range(4):
                n.start_soon(one_user, f"u{i}")
        probe.close()
        resumed = await rt.subscribe("u0", resume_from=3)
        head = (await rt.get_runs("u0")).head_seq
        tail: list[na.Event] = []
        with trio.fail_after(5):
            while len(tail) < head - 3:
                tail.extend(await resumed.receive_batch())

    assert checked > 100
    for user, items in received.items():
        events = events_of(items)
        assert all(e.user_id == user for e in events)
        assert_gapless(events)
        assert as_tuples(events) == stored_events(config, user)
        states = assert_legal_runs(events)
        assert sorted(s.value for s in states.values()) == ["completed"] * 3
        rollbacks = [e for e in events if e.event == "run_rolled_back"]
        assert len(rollbacks) == 1
        texts = check_delta_contract(items)
        assert len(texts) == 3 + 2 + 2  # 3 + 2 committed, and the crashed attempt's one
        assert {d.run_id for d in deltas_of(items)} <= {e.run_id for e in events}
    assert_gapless(tail, start=4)
    assert as_tuples(tail) == stored_events(config, "u0")[3:]


@KINDS
@guest_test()
async def test_a_piece_refused_past_the_lease_deadline_stops_its_message(
    tmp_path: Path, kind: str
) -> None:
    """The owner sends no delta past its own lease deadline; the message then stops streaming
    for good (its next pieces would not add up to its text), and its commit still comes."""
    config = make_config(tmp_path)
    async with open_rt(config, kind) as rt:
        sub = await rt.subscribe("alice", deltas=True)
        run_id = await rt.start_run(
            "alice", "stream_text", {"tokens": ["ab", "cd", "ef"], "gate": True}
        )
        await rt.send_to_run("alice", run_id, "go")
        early = await read_items_until(sub, lambda its: bool(deltas_of(its)))
        store: Any = rt.store
        real = store.lease_valid_until

        def late_once(user_id: str) -> float:  # one renewal came late: "cd" is past the deadline
            store.lease_valid_until = real
            return -math.inf

        store.lease_valid_until = late_once
        for _ in range(2):
            await rt.send_to_run("alice", run_id, "go")
        items = early + await read_items_until_ended(sub, [run_id])
    assert store.lease_valid_until == real  # the refused piece was asked about
    texts = check_delta_contract(items)
    mid = deltas_of(items)[0].message_id
    assert texts == {mid: "ab"}
    assert assistant_messages(items)[-1].data["text"] == "abcdef"
