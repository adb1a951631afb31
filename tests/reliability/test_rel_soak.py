"""Issue 6, item 6: a soak — many users, many events, reconnects, then everyone leaves.

``USERS`` users (200) each drive demo runs over their own socket until they hold ``EVENTS``
events (1,000; the brief asks for 500, but the RSS needs ~80,000 events to level off),
reconnecting with ``resume_from`` every ~150 events (alternately a clean close and a dropped
TCP connection). The server runs through ``relserver.py`` only to shorten the session
idle timeout to 2 s (so that passivation can be observed); everything else is the real command.

Checked: the server's RSS is flat after warm-up (samples every second, reported); when everyone
has left, open sockets, subscriptions, live runs and active sessions are back to zero and the
process's file descriptors and threads back to their baseline; every user's stream is exactly
its stored events — no lost and no duplicate ``(user, seq)``.

``NETRA_SOAK_USERS`` / ``NETRA_SOAK_EVENTS`` change the size for a longer run by hand.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from relkit import (
    Peer,
    RelServer,
    bounded,
    compare_with_store,
    new_user,
    record_figures,
    serving,
    store_report,
)

USERS = int(os.environ.get("NETRA_SOAK_USERS", "200"))
EVENTS = int(os.environ.get("NETRA_SOAK_EVENTS", "1000"))
RECONNECT_EVERY = 150
IDLE_TIMEOUT = 2.0
WARMUP_FRACTION = 0.4
"""The first 40% of the events are warm-up: a 400,000-event run (200 users x 2,000) showed the
RSS rising for its first ~80,000 events (allocator high-water marks), then flat for the rest."""


async def soak_user(peer: Peer, rng: random.Random, counters: dict[str, int]) -> None:
    await peer.connect()
    next_reconnect = RECONNECT_EVERY + rng.randint(0, 50)
    n = 0
    while peer.last < EVENTS:
        n += 1
        run_id = await peer.say(f"soak {n}: {rng.randint(1, 999)} apples and {n} pears")
        await peer.wait_runs_ended([run_id], within=60)
        if peer.last >= next_reconnect:
            next_reconnect += RECONNECT_EVERY
            if rng.random() < 0.5:
                await peer.close()
                counters["clean_reconnects"] += 1
            else:
                peer.abort()
                await peer.finished()
                counters["dropped_reconnects"] += 1
            await peer.connect()
    counters["runs"] += n
    await peer.close()


async def settled(srv: RelServer, within: float) -> dict[str, Any]:
    """Wait until nothing is left open; the health document then."""
    deadline = time.monotonic() + within
    while True:
        health = await asyncio.to_thread(srv.health)
        if not any(health[k] for k in ("open_sockets", "subscriptions", "live_runs",
                                       "active_sessions")):  # fmt: skip
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"resources still held: {health}")
        await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_soak_many_users_with_reconnects(tmp_path: Path) -> None:
    figures: dict[str, Any] = {"users": USERS, "events_per_user": EVENTS}
    counters = {"clean_reconnects": 0, "dropped_reconnects": 0, "runs": 0}
    with serving(tmp_path, entry="relserver", runtime={"idle_timeout": IDLE_TIMEOUT}) as srv:

        @bounded(280)
        async def scenario() -> list[Peer]:
            # warm up the process (imports, the store's pools) with a few users, who leave
            warm = [Peer(srv.ws_url, new_user("warm")) for _ in range(20)]
            await asyncio.gather(*(p.connect() for p in warm))
            runs = await asyncio.gather(*(p.say("warming up") for p in warm))
            await asyncio.gather(*(p.wait_runs_ended([r]) for p, r in zip(warm, runs, strict=True)))
            await asyncio.gather(*(p.close() for p in warm))
            await settled(srv, IDLE_TIMEOUT + 10)
            base: dict[str, Any] = {
                "fds": srv.fds(),
                "fd_kinds": srv.fd_kinds(),
                "threads": srv.threads(),
                "rss_kb": srv.rss_kb(),
            }
            figures["baseline"] = base
            peers = [Peer(srv.ws_url, new_user("soak")) for _ in range(USERS)]
            samples: list[tuple[float, int, int]] = []  # (seconds, events received, rss kB)
            started = time.monotonic()

            async def sample() -> None:
                while True:
                    received = sum(len(p.events) for p in peers)
                    samples.append((time.monotonic() - started, received, srv.rss_kb()))
                    await asyncio.sleep(1.0)

            sampler = asyncio.create_task(sample())
            rng = random.Random()
            try:
                await asyncio.gather(
                    *(soak_user(p, random.Random(rng.random()), counters) for p in peers)
                )
            finally:
                sampler.cancel()
            elapsed = time.monotonic() - started
            samples.append((elapsed, sum(len(p.events) for p in peers), srv.rss_kb()))
            health = await settled(srv, IDLE_TIMEOUT + 15)
            for _ in range(50):  # the last connections' descriptors close right after
                if srv.fds() <= base["fds"] and srv.threads() <= base["threads"]:
                    break
                await asyncio.sleep(0.1)
            after = {
                "fds": srv.fds(),
                "fd_kinds": srv.fd_kinds(),
                "threads": srv.threads(),
                "rss_kb": srv.rss_kb(),
            }
            total = sum(len(p.events) for p in peers)
            warm_at = next(s for s in samples if s[1] >= WARMUP_FRACTION * total)
            after_warmup = [s[2] for s in samples if s[0] >= warm_at[0]]
            figures.update(
                seconds=round(elapsed, 1),
                events_received=total,
                events_per_second=round(total / elapsed),
                **counters,
                rss_kb_samples=[s[2] for s in samples],
                rss_kb_at_warmup_end=warm_at[2],
                rss_kb_max_after_warmup=max(after_warmup),
                rss_growth_after_warmup_kb=max(after_warmup) - warm_at[2],
                health_after=health,
                after_everyone_left=after,
            )
            return peers

        peers = scenario()
        assert srv.terminate() == 0
    report = store_report(srv.db)
    problems = list(report.problems)
    for peer in peers:
        problems += compare_with_store(peer, report)
    pairs = [(p.user, e["seq"]) for p in peers for e in p.events]
    figures["distinct_user_seq_pairs"] = len(set(pairs))
    figures["events_committed"] = report.total_events
    figures["problems"] = len(problems)
    record_figures(tmp_path, "soak", figures)
    assert not problems, "\n".join(problems[:40])
    assert len(pairs) == len(set(pairs)) == sum(len(report.wire(p.user)) for p in peers)
    assert all(p.last >= EVENTS for p in peers)
    base, after = figures["baseline"], figures["after_everyone_left"]
    assert after["fd_kinds"]["sockets"] <= base["fd_kinds"]["sockets"]
    assert after["fds"] <= base["fds"]
    assert after["threads"] <= base["threads"]
    # flat: after warm-up, RSS grows by less than 5% (and less than 16 MB)
    growth = figures["rss_growth_after_warmup_kb"]
    assert growth <= min(16 * 1024, 0.05 * figures["rss_kb_at_warmup_end"]), figures
