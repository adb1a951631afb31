"""Issue 10: the owner of a user dies (kill -9) or stops answering (SIGSTOP past the lease TTL).

* kill -9 during live ``slow`` runs: the other server takes over (by its recovery scan, or on
  next use: a ``say`` through it) within TTL + a few seconds; each run that was live on the
  killed node is resumed there (issue 18): exactly one ``run_rolled_back`` reason ``lost``, then
  ``starting`` reason ``recovered`` and a new attempt (cancelled here, to end it); the events
  table keeps everything committed before the kill (nothing lost or repeated) and equals, event
  for event, what the sockets received.
* SIGSTOP of the owner past the TTL, takeover through the other server (the paused node still
  holds its incarnation lock: it is not taken for dead, its lease expires), then SIGCONT: the
  woken node's ``slow`` agent keeps ticking, and none of it is committed or delivered (fenced); the
  woken node's socket then receives the new owner's events as a follower, and a command through
  the woken node is carried out by the new owner.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import time
from pathlib import Path

import pytest
from clusterkit import (
    KINDS,
    Sock,
    bounded,
    cluster,
    figures,
    final_state,
    fresh_database,
    new_user,
    rollbacks,
)

TTL = 2.0


def recovered(sock: Sock, run_ids: list[str]) -> bool:
    """Every run of ``run_ids`` was resumed (``run_state`` reason ``recovered``) on ``sock``."""
    return all(
        any(
            e["run_id"] == run_id
            and e["event"] == "run_state"
            and e["data"].get("reason") == "recovered"
            for e in sock.events
        )
        for run_id in run_ids
    )


INBOX_PAUSE = 0.15
"""Between two commands forwarded through a follower on SQLite: more than two of the owner's
inbox polls (50 ms), so that a reused ``netra_inbox`` id is not skipped (test_cluster_inbox.py
shows that bug on its own; these tests are about failover)."""


@pytest.mark.parametrize("kind", KINDS)
def test_cluster_kill9_of_the_owner_during_live_runs(kind: str, tmp_path: Path) -> None:
    @bounded(90)
    async def scenario() -> None:
        async with fresh_database(kind, tmp_path) as db:
            async with cluster(tmp_path, db, 2, ttl=TTL) as (a, b):
                users = [new_user("k9") for _ in range(3)]
                on_a = {u: await Sock.open(a, u) for u in users}
                for u in users:
                    await on_a[u].say("the first node takes the lease")
                leases = await db.leases()
                assert all(a.owns(leases[u]) for u in users), leases
                on_b = {u: await Sock.open(b, u) for u in users}
                live: dict[str, list[str]] = {}
                for u in users:  # through the owner and through the follower
                    live[u] = [
                        await on_a[u].start("slow", {"seconds": 60}),
                        await on_b[u].start("slow", {"seconds": 60}),
                    ]
                    await asyncio.sleep(INBOX_PAUSE)
                for u in users:
                    for run_id in live[u]:
                        await on_b[u].wait_event(run_id, "agent_thinking")
                before = await db.events()

                killed_at, t0 = time.time(), time.monotonic()
                a.kill()
                after = await asyncio.gather(
                    *(on_b[u].say("after the kill", within=TTL + 8) for u in users)
                )
                takeover = time.monotonic() - t0
                for u, run_id in zip(users, after, strict=True):
                    sock = on_b[u]
                    await sock.wait_until(functools.partial(recovered, sock, live[u]), within=15)
                    for live_run in live[u]:  # resumed: end them
                        answer = await sock.command({"type": "cancel_run", "run_id": live_run})
                        assert answer["type"] == "ack", answer
                    await sock.wait_ended([*live[u], run_id], within=15)

                stored = await db.events()
                assert not await db.problems()
                leases = await db.leases()
                first_rollback: list[float] = []
                for u, run_id in zip(users, after, strict=True):
                    events = stored[u]
                    assert events[: len(before[u])] == before[u], f"{u}: committed events changed"
                    for live_run in live[u]:
                        assert final_state(events, live_run) == "cancelled", (u, live_run)
                        rb, cancelled = rollbacks(events, live_run)  # one for the loss
                        assert rb["data"]["reason"] == "lost", rb
                        assert rb["data"]["will_restart"] is True, rb
                        assert rb["seq"] > len(before[u])
                        assert cancelled["data"]["reason"] == "cancelled", cancelled
                    assert final_state(events, run_id) == "completed"
                    assert b.owns(leases[u]), leases[u]
                    sock_b = on_b[u]
                    assert not sock_b.violations, sock_b.violations
                    assert sock_b.events == events, f"{u}: b's socket differs from the store"
                    sock_a = on_a[u]  # what the killed node delivered: all of it committed
                    assert not sock_a.violations, sock_a.violations
                    assert sock_a.events == events[: len(sock_a.events)]
                    assert sock_a.closed
                    at = [
                        t
                        for e, t in zip(sock_b.events, sock_b.received_at, strict=True)
                        if e["event"] == "run_rolled_back" and e["run_id"] in live[u]
                    ]
                    first_rollback.append(min(at) - killed_at)
                figures(
                    f"kill9-{kind}",
                    ttl=TTL,
                    takeover_by_say_s=round(takeover, 3),
                    first_rollback_seen_s=round(min(first_rollback), 3),
                    last_rollback_seen_s=round(max(first_rollback), 3),
                )
                assert takeover <= TTL + 3.0, takeover
                for u in users:
                    await on_b[u].close()

    scenario()


@pytest.mark.parametrize("kind", KINDS)
def test_cluster_sigstop_past_the_ttl_then_sigcont_is_fenced(kind: str, tmp_path: Path) -> None:
    @bounded(90)
    async def scenario() -> None:
        async with fresh_database(kind, tmp_path) as db:
            async with cluster(tmp_path, db, 2, ttl=TTL) as (a, b):
                user = new_user("stop")
                sa = await Sock.open(a, user)
                await sa.say("the first node takes the lease")
                assert a.owns((await db.leases())[user])
                sb = await Sock.open(b, user)
                slow = await sa.start("slow", {"seconds": 60})
                await sb.wait_until(
                    lambda: (
                        sum(
                            1
                            for e in sb.events
                            if e["run_id"] == slow and e["event"] == "agent_thinking"
                        )
                        >= 2
                    )
                )
                a.signal(signal.SIGSTOP)
                try:
                    await asyncio.sleep(TTL + 1.0)
                    t0 = time.monotonic()
                    taken = await sb.say("taking over", within=10)
                    takeover = time.monotonic() - t0
                    await sb.wait_until(lambda: recovered(sb, [slow]), within=10)
                    answer = await sb.command({"type": "cancel_run", "run_id": slow})
                    assert answer["type"] == "ack", answer
                    await sb.wait_ended([slow, taken])
                finally:
                    a.signal(signal.SIGCONT)
                at_takeover = (await db.events())[user]
                assert b.owns((await db.leases())[user])
                rb, _cancelled = rollbacks(at_takeover, slow)
                assert rb["data"]["reason"] == "lost", rb

                await asyncio.sleep(3.5)  # the woken node's slow agent ticks about every second
                stored = (await db.events())[user]
                assert stored[: len(at_takeover)] == at_takeover
                dead_at = next(  # the run ended (cancelled) on the new owner
                    e["seq"]
                    for e in stored
                    if e["run_id"] == slow
                    and e["event"] == "run_state"
                    and e["data"]["state"] == "cancelled"
                )
                late_of_slow = [e for e in stored if e["run_id"] == slow and e["seq"] > dead_at]
                assert late_of_slow == [], f"fenced output committed: {late_of_slow}"
                await sb.wait_seq(len(stored), within=10)
                assert sb.events == stored
                assert [e for e in sa.events if e["seq"] > len(at_takeover)] == []

                # the woken node serves the user as a follower: its socket gets the new owner's
                # events, and a command through it is carried out by the new owner
                late = await sa.say("from the woken node", within=10)
                await sa.wait_ended([late])
                await sb.wait_ended([late])
                stored = (await db.events())[user]
                assert not await db.problems()
                assert final_state(stored, late) == "completed"
                assert [e for e in stored if e["run_id"] == slow and e["seq"] > dead_at] == []
                assert b.owns((await db.leases())[user])
                for sock in (sa, sb):  # every socket, the woken node's too: the table, exactly
                    await sock.wait_seq(len(stored), within=10)
                    assert not sock.violations, sock.violations
                    assert sock.events == stored, f"{sock.node.name}'s socket differs"
                fenced = a.metric("netra_fenced_units")
                lost = a.metric("netra_leases_lost")
                figures(
                    f"sigstop-{kind}",
                    ttl=TTL,
                    takeover_by_say_s=round(takeover, 3),
                    woken_fenced_units=fenced,
                    woken_leases_lost=lost,
                    events=len(stored),
                )
                await sa.close()
                await sb.close()

    scenario()
