"""Inbox and reply hints on a SQLite cluster (``_cluster_hints.py``, ``_relay_codec.py``): their
wire form, and the cluster loops they wake (``_cluster.py``) on trio's virtual clock.

With hints the inbox and replies loops read the store only every ``safety_interval``; the tests
set it far above anything else, so a read at the hint's exact virtual time can only be the hint's
doing. Hints are handed to :meth:`Cluster.on_payload` as the local relay would (its socket is real
but idle here: two nodes over real datagrams are ``tests/cluster/test_cluster_inbox_hints.py``).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from netra_actors._cluster import RELAY_FLUSH_WAIT, Cluster
from netra_actors._cluster_hints import HINT_BACKLOG, LocalHints
from netra_actors._relay import LocalRelay
from netra_actors._relay_codec import (
    LIMIT,
    decode,
    decode_hint,
    encode,
    encode_hints,
    is_hint,
)
from netra_actors._store._base import InboxItem
from netra_actors._values import Delta

SAFETY = 1_000.0
POLL = 0.05


# -- the wire form ------------------------------------------------------------------------------


@given(
    st.sampled_from(["inbox", "reply"]),
    st.text(max_size=20),
    st.lists(st.text(max_size=300), max_size=60),
)
def test_hints_round_trip_under_the_limit(kind: str, node: str, names: list[str]) -> None:
    payloads = encode_hints(kind, node, names, limit=1_000)
    got: list[str] = []
    for payload in payloads:
        assert len(payload.encode()) <= 1_000
        assert is_hint(payload)
        k, n, some = decode_hint(payload)
        assert (k, n) == (kind, node)
        got += some
    assert got == names  # none: one hint that says "any" (no names)


def test_a_name_too_long_for_one_hint_makes_it_say_any() -> None:
    assert [decode_hint(p) for p in encode_hints("reply", "n", ["a", "x" * LIMIT])] == [
        ("reply", "n", [])
    ]


def test_hints_and_delta_payloads_never_mix() -> None:
    deltas = encode("n", [("u", Delta("r", 1, "m", 0, "!hi"))])
    assert not any(is_hint(p) for p in deltas)
    hint = encode_hints("inbox", "n", ["u"])[0]
    with pytest.raises(ValueError):
        decode(hint)  # an older node refuses it like any garbled payload


@pytest.mark.parametrize(
    "payload",
    [
        "!",
        "!garbage",
        "!00000000 []",
        encode_hints("inbox", "n", ["u1"])[0].replace("u1", "u2"),  # checksum fails
        encode_hints("inbox", "n", ["u1"])[0][:-3],  # cut short
        encode_hints("inbox", "n", ["u1"])[0][1:],  # not a hint
    ],
)
def test_garbled_hints_are_refused(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_hint(payload)


def test_an_unknown_kind_is_refused_both_ways() -> None:
    with pytest.raises(ValueError):
        encode_hints("events", "n", [])
    forged = encode_hints("inbox", "n", [])[0]
    body = forged[1:].split(" ", 1)[1].replace("inbox", "other")
    with pytest.raises(ValueError):
        decode_hint(f"!{zlib.crc32(body.encode()):08x} {body}")  # a valid checksum


async def test_a_backlog_past_its_bound_is_hinted_as_any(tmp_path: Path) -> None:
    sent: list[str] = []

    class Relay(LocalRelay):
        async def send(self, payloads: list[str]) -> None:
            sent.extend(payloads)

    relay = Relay(str(tmp_path), "me")
    relay._out.close()
    hints = LocalHints(relay, "me", on_inbox=lambda _: None, on_reply=lambda _: None)
    for i in range(HINT_BACKLOG + 1):
        hints.reply(f"q_{i}")
    hints.inbox("u")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hints.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [decode_hint(p) for p in sent] == [("inbox", "me", ["u"]), ("reply", "me", [])]
    assert hints.sent == 2


# -- the loops they wake ------------------------------------------------------------------------


class Store:
    """What the cluster loops read, counted on trio's clock."""

    notifies = False
    node = "me"

    def __init__(self, directory: str | None) -> None:
        self.relay_directory = directory
        self.inbox_reads: list[float] = []
        self.reply_reads: list[float] = []
        self.posted: list[str] = []
        self.replies: dict[str, tuple[bool, str]] = {}

    async def take_commands(self, user_ids: object, limit: int) -> list[InboxItem]:
        self.inbox_reads.append(trio.current_time())
        return []

    async def take_replies(self, request_ids: list[str]) -> dict[str, tuple[bool, str]]:
        self.reply_reads.append(trio.current_time())
        return {r: self.replies.pop(r) for r in request_ids if r in self.replies}

    async def post_command(self, user_id: str, request_id: str, kind: str, payload: str) -> None:
        self.posted.append(request_id)

    async def heads(self, user_ids: list[str]) -> dict[str, int]:
        return {}

    async def free_leases(self, user_ids: list[str]) -> list[str]:
        return []


@asynccontextmanager
async def running(cluster: Cluster) -> AsyncIterator[None]:
    """The cluster's loops run inside the block (cancelled at its end)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cluster.run)
        yield
        nursery.cancel_scope.cancel()


def cluster_on(store: Store) -> Cluster:
    return Cluster(
        store,  # type: ignore[arg-type]
        lambda _user: None,
        poll_interval=POLL,
        safety_interval=SAFETY,
        request_timeout=SAFETY * 10,
    )


async def test_a_hint_wakes_the_inbox_at_once_and_nothing_polls_between(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = Store(str(tmp_path / "db.relay"))
    cluster = cluster_on(store)
    assert cluster.hints is not None
    async with running(cluster):
        await trio.sleep(100)  # a lone node: one read at start, none since (no 50 ms poll)
        assert store.inbox_reads == [0.0]
        cluster.on_payload(encode_hints("inbox", "other", ["u1"])[0])
        await trio.testing.wait_all_tasks_blocked()
        assert store.inbox_reads == [0.0, 100.0]  # at the hint's virtual time
        for ignored in ("!garbled", encode_hints("inbox", "me", ["u1"])[0]):  # garbled; our own
            cluster.on_payload(ignored)
        await trio.sleep(SAFETY - 1)
        assert store.inbox_reads == [0.0, 100.0]
        assert cluster.hints.refused == 1
        await trio.sleep(2)
        assert store.inbox_reads == [0.0, 100.0, 100.0 + SAFETY]  # the safety poll


async def test_a_reply_hint_wakes_the_asker_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = Store(str(tmp_path / "db.relay"))
    cluster = cluster_on(store)
    async with running(cluster):
        await trio.testing.wait_all_tasks_blocked()
        request_id = await cluster.post("u1", "cancel_run", {"run_id": "r"})
        other = await cluster.post("u1", "cancel_run", {"run_id": "s"})
        await trio.sleep(10)
        assert store.reply_reads == [0.0]  # once after posting, then only the safety poll
        store.replies[request_id] = (True, '{"ok": 1}')
        cluster.on_payload(encode_hints("reply", "other", ["q_not_ours"])[0])
        await trio.testing.wait_all_tasks_blocked()
        assert store.reply_reads == [0.0]  # not ours: no read
        cluster.on_payload(encode_hints("reply", "other", [request_id])[0])
        assert await cluster.answer(request_id) == '{"ok": 1}'
        assert trio.current_time() == 10.0
        store.replies[other] = (True, "{}")
        cluster.on_payload(encode_hints("reply", "other", [])[0])  # "any"
        assert await cluster.answer(other) == "{}"
        assert trio.current_time() == 10.0


async def test_posts_and_replies_are_hinted_to_the_other_nodes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = Store(str(tmp_path / "db.relay"))
    cluster = cluster_on(store)
    assert cluster.hints is not None
    sent: list[list[str]] = []

    async def send(payloads: list[str]) -> None:
        sent.append(payloads)

    cluster.hints._relay.send = send  # type: ignore[method-assign]
    async with running(cluster):
        request_id = await cluster.post("u1", "cancel_run", {"run_id": "r"})
        assert store.posted == [request_id]
        cluster.replied("q_from_elsewhere")
        await trio.testing.wait_all_tasks_blocked()
        assert [[decode_hint(p) for p in batch] for batch in sent] == [
            [("inbox", "me", ["u1"]), ("reply", "me", ["q_from_elsewhere"])]
        ]


async def test_without_a_relay_the_inbox_is_polled(autojump_clock: trio.testing.MockClock) -> None:
    store = Store(None)  # SQLite in memory: no directory to announce a port in, no hints
    cluster = cluster_on(store)
    assert cluster.hints is None
    assert not cluster.hinted
    async with running(cluster):
        await trio.sleep(1.01)
        assert len(store.inbox_reads) == 21  # every poll interval


async def test_a_hint_from_a_node_not_yet_seen_makes_the_relay_read_its_directory(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "db.relay"
    directory.mkdir()
    (directory / "other-1").write_text(f"40001 {os.getpid()}")
    relay = LocalRelay(str(directory), "me")
    relay.rescan = 1e9  # never by time: only because a new node was met
    try:
        await relay.send([])
        assert relay._peers == [("127.0.0.1", 40001)]
        (directory / "other-2").write_text(f"40002 {os.getpid()}")
        relay.met("other-1")  # known: no new read
        await relay.send([])
        assert relay._peers == [("127.0.0.1", 40001)]
        relay.met("other-2")
        await relay.send([])
        assert sorted(relay._peers) == [("127.0.0.1", 40001), ("127.0.0.1", 40002)]
    finally:
        relay._out.close()


# -- a commit waits for its user's deltas to leave by the relay ----------------------------------


async def test_a_users_commit_waits_until_its_deltas_have_left_by_the_relay(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Whatever the relay's speed against the commit's, the other nodes get a message's last
    deltas before the commit that ends it (``_commit.Committer`` waits on this)."""
    cluster = cluster_on(Store(str(tmp_path / "db.relay")))
    assert cluster.relay is not None
    release = trio.Event()
    sent: list[str] = []

    async def send(payloads: list[str]) -> None:  # a slow relay (PostgreSQL under load)
        await release.wait()
        sent.extend(payloads)

    cluster.relay.send = send  # type: ignore[method-assign]
    async with running(cluster):
        assert not cluster.relay_pending("u1")
        cluster.publish("u1", Delta("r1", 1, "m1", 0, "the last words"))
        assert cluster.relay_pending("u1")
        assert not cluster.relay_pending("u2")  # another user's commits do not wait
        flushed: list[float] = []

        async def commit() -> None:
            await cluster.relay_flushed("u1")
            flushed.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit)
            await trio.sleep(0.5)
            assert flushed == []  # the delta has not left: the commit waits
            release.set()
        assert flushed == [0.5]
        assert len(sent) == 1
        assert not cluster.relay_pending("u1")


async def test_a_stuck_relay_holds_a_commit_back_for_a_bounded_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cluster = cluster_on(Store(str(tmp_path / "db.relay")))
    assert cluster.relay is not None

    async def send(payloads: list[str]) -> None:
        await trio.sleep_forever()

    cluster.relay.send = send  # type: ignore[method-assign]
    async with running(cluster):
        cluster.publish("u1", Delta("r1", 1, "m1", 0, "never sent"))
        started = trio.current_time()
        await cluster.relay_flushed("u1")
        assert trio.current_time() - started == RELAY_FLUSH_WAIT
        assert not cluster.relay_pending("u1")  # the next commit does not wait again
