"""Issue 6, item 3, through the wire (the runtime-level property is ``tests/runtime/
test_isolation_property.py``; the "every SQL statement is scoped by user" check is in
``tests/runtime/test_failures.py``).

Hypothesis draws programs for three users of one real server process: start runs (demo, slow,
crashy), cancel their own runs, *other users'* runs and random ids, list their runs, reconnect
with their own cursor, and open a socket resuming from *another user's* cursor. Commands run in
random concurrent groups over real sockets. After every program:

* no event of another user — or of another user's run — ever reached a user's socket; each
  socket's stream is exactly the user's stream in the store (gapless, no duplicate);
* ``cancel_run`` of another user's run gets the very same answer (code *and* message) as a random
  id: ``unknown_run``, existence is never revealed — and the other user's run is untouched;
* ``get_runs`` lists exactly the user's own runs;
* resuming from another user's cursor yields only the user's own events after that number (or,
  past the user's head, ``bad_request`` and close 4400).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relkit import (
    FINAL_STATES,
    Peer,
    bounded,
    new_user,
    record_figures,
    serving,
    store_report,
    token,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

EXAMPLES = 40
ACTIONS = [
    "demo",
    "slow",
    "crashy",
    "cancel_own",
    "cancel_other",
    "cancel_random",
    "get_runs",
    "reconnect",
    "foreign_cursor",
]

programs = st.lists(
    st.tuples(
        st.integers(0, 2),  # acting user
        st.sampled_from(ACTIONS),
        st.integers(0, 1_000_000),  # picks a run / cursor / random id
        st.booleans(),  # runs concurrently with the previous step
    ),
    min_size=3,
    max_size=20,
)


def stripped(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "id"}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_isolation_through_the_wire(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    with serving(tmp_path, "--rate", "1000", "--burst", "1000") as srv:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            derandomize=True,  # the same programs on every machine, so the coverage checks hold
            database=None,
        )
        @given(program=programs)
        def check(program: list[tuple[int, str, int, bool]]) -> None:
            run_program(srv, program, stats)

        check()
        assert srv.terminate() == 0
    report = store_report(srv.db)
    stats["events_committed"] = report.total_events
    stats["users"] = len(report.events)
    record_figures(tmp_path, "isolation", dict(sorted(stats.items())))
    assert not report.problems, report.problems[:20]
    assert stats["examples"] >= EXAMPLES
    assert stats["cancel_other_with_a_real_run"] >= 5
    assert stats["foreign_cursor_replayed"] >= 3


def run_program(srv: Any, program: list[tuple[int, str, int, bool]], stats: Counter[str]) -> None:
    stats["examples"] += 1

    @bounded(60)
    async def scenario() -> None:
        users = [new_user(f"iso{i}") for i in range(3)]
        peers = [Peer(srv.ws_url, u) for u in users]
        for peer in peers:
            await peer.connect()
        owned: list[list[str]] = [[], [], []]
        cancelled_by_owner: set[str] = set()
        unknown_answers: list[dict[str, Any]] = []
        # every user starts with a run of its own, so that others have something to target
        for who, peer in enumerate(peers):
            owned[who].append(await peer.say(f"first words of {peer.user}"))

        turns = [asyncio.Lock() for _ in peers]

        async def step(who: int, action: str, pick: int) -> None:
            async with turns[who]:  # a user's own steps stay in order; users interleave
                await act(who, action, pick)

        async def act(who: int, action: str, pick: int) -> None:
            peer = peers[who]
            rng = random.Random(pick)
            stats[f"step_{action}"] += 1
            if action in ("demo", "slow", "crashy"):
                inputs = {
                    "demo": f"hello from {peer.user}",
                    "slow": {"seconds": rng.uniform(0.1, 0.6)},
                    "crashy": {"crash_times": rng.randint(0, 2)},
                }
                owned[who].append(await peer.start(action, inputs[action]))
            elif action == "cancel_own" and owned[who]:
                run_id = owned[who][pick % len(owned[who])]
                answer = await peer.command({"type": "cancel_run", "run_id": run_id})
                assert answer["type"] == "ack" or answer["code"] == "illegal_state", answer
                if answer["type"] == "ack":
                    cancelled_by_owner.add(run_id)
            elif action in ("cancel_other", "cancel_own", "cancel_random"):
                others = [r for i, rs in enumerate(owned) if i != who for r in rs]
                if action == "cancel_other" and others:
                    run_id = others[pick % len(others)]
                    stats["cancel_other_with_a_real_run"] += 1
                else:
                    run_id = "r_" + "".join(rng.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
                                            for _ in range(26))  # fmt: skip
                answer = await peer.command({"type": "cancel_run", "run_id": run_id})
                unknown_answers.append(stripped(answer))
            elif action == "get_runs":
                snapshot = await peer.get_runs()
                listed = {r["run_id"] for r in snapshot["runs"]}
                assert listed == set(owned[who]), (listed, owned[who])
            elif action == "reconnect":
                await peer.close()
                await peer.connect()
            elif action == "foreign_cursor":
                other = peers[(who + 1 + pick % 2) % 3]
                await foreign_cursor(srv.ws_url, peer, other.last, stats)

        # random interleaving: consecutive steps flagged concurrent run together
        groups: list[list[tuple[int, str, int]]] = []
        for who, action, pick, together in program:
            if together and groups:
                groups[-1].append((who, action, pick))
            else:
                groups.append([(who, action, pick)])
        for group in groups:
            await asyncio.gather(*(step(*s) for s in group))

        # let every run end; every socket then holds its user's whole stream
        for who, peer in enumerate(peers):
            await peer.wait_runs_ended(owned[who], within=30)
            snapshot = await peer.get_runs()
            assert all(r["state"] in FINAL_STATES for r in snapshot["runs"])
            await peer.wait_seq(snapshot["head_seq"])
            await peer.close()
        report = await asyncio.to_thread(store_report, srv.db)
        assert not report.problems, report.problems[:10]
        for who, peer in enumerate(peers):
            mine = set(owned[who])
            foreign = {r for i, rs in enumerate(owned) if i != who for r in rs}
            assert peer.violations == []
            for event in peer.events:
                assert event["run_id"] in mine, (peer.user, event)
                assert event["run_id"] not in foreign
            stored = report.wire(peer.user)
            assert [e["seq"] for e in peer.events] == [row[0] for row in stored]
            assert [(e["run_id"], e["event"], e["data"]) for e in peer.events] == [
                (row[1], row[2], row[4]) for row in stored
            ]
            stats["events_checked"] += len(peer.events)
        # cross-user cancels are indistinguishable from random ids, and touched nothing
        for answer in unknown_answers:
            assert answer == {"type": "error", "code": "unknown_run", "message": "no such run"}
        stats["unknown_run_answers"] += len(unknown_answers)
        for run_id in (r for rs in owned for r in rs):
            rollbacks = report.rollbacks.get(run_id, [])
            for data in rollbacks:
                if data["reason"] == "cancelled":
                    assert run_id in cancelled_by_owner, (run_id, rollbacks)

    scenario()


async def foreign_cursor(url: str, peer: Peer, cursor: int, stats: Counter[str]) -> None:
    """A second socket of ``peer``'s user resuming from another user's cursor."""
    async with connect(url, open_timeout=10, close_timeout=2) as ws:
        hello = {"type": "hello", "protocol": 1, "token": token(peer.user), "resume_from": cursor}
        await ws.send(json.dumps(hello))
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if first["type"] == "error":
            assert first["code"] == "bad_request", first
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4400
            stats["foreign_cursor_beyond_head"] += 1
            return
        assert first["type"] == "welcome", first
        head = first["head_seq"]
        seen: list[dict[str, Any]] = []
        while (seen[-1]["seq"] if seen else cursor) < head:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] == "event":
                seen.append(frame)
            elif frame["type"] == "batch":
                seen.extend(frame["events"])
        # exactly the user's own events after the cursor, as the user's own socket has them
        await peer.wait_seq(head)
        assert (
            seen[: head - cursor]
            == peer.events[cursor - (peer.base or 0) : head - (peer.base or 0)]
        )
        stats["foreign_cursor_replayed"] += 1
