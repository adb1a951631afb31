"""Issue 10, PostgreSQL: the listener connection (LISTEN for the delivery hints) is killed with
``pg_terminate_backend`` under load, on the follower and then on the owner: no event is lost, the
followers catch up, and each node listens again on a new connection.

(Restarting the whole PostgreSQL server is out of scope here: it is shared with other tests.)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from clusterkit import (
    PG_SKIP,
    Db,
    Node,
    Sock,
    bounded,
    cluster,
    figures,
    fresh_database,
    listener_backends,
    new_user,
    pg_admin,
    wait_for,
)

pytestmark = [pytest.mark.postgres, PG_SKIP]


async def _terminate_listener(db: Db, node: Node) -> tuple[list[int], float]:
    """Kill ``node``'s listener backend(s); (their pids, seconds until a new one listens)."""
    pids = await listener_backends(db, node)
    assert pids, f"no listener connection found for node {node.name}"
    for pid in pids:
        await pg_admin(f"SELECT pg_terminate_backend({pid})")
    t0 = time.monotonic()

    async def relistening() -> bool:
        now = await listener_backends(db, node)
        return bool(now) and not set(now) & set(pids)

    await wait_for(relistening, 10, f"{node.name} listens again")
    return pids, time.monotonic() - t0


def test_cluster_listener_connection_killed_under_load(tmp_path: Path) -> None:
    @bounded(90)
    async def scenario() -> None:
        async with fresh_database("postgres", tmp_path) as db:
            async with cluster(tmp_path, db, 2, ttl=2.0) as (a, b):
                users = [new_user("lsn") for _ in range(3)]
                on_a = {u: await Sock.open(a, u) for u in users}
                for u in users:
                    await on_a[u].say("the first node takes the lease")
                on_b = {u: await Sock.open(b, u) for u in users}
                await asyncio.sleep(2.5)  # past the listener's first health check (SELECT 1)
                stop = asyncio.Event()
                runs: dict[str, list[str]] = {u: [] for u in users}

                async def load(u: str) -> None:
                    n = 0
                    while not stop.is_set():
                        sock = on_a[u] if n % 2 == 0 else on_b[u]
                        runs[u].append(await sock.say(f"load {n}: 1 2 3"))
                        n += 1
                        await asyncio.sleep(0.02)

                loaders = [asyncio.create_task(load(u)) for u in users]
                await asyncio.sleep(1.0)
                killed_b, relisten_b = await _terminate_listener(db, b)  # the follower's
                await asyncio.sleep(1.0)
                killed_a, relisten_a = await _terminate_listener(db, a)  # the owner's
                await asyncio.sleep(1.0)
                stop.set()
                await asyncio.gather(*loaders)

                for u in users:
                    await on_a[u].wait_ended(runs[u], within=20)
                stored = await db.events()
                assert not await db.problems()
                t0 = time.monotonic()
                for u in users:
                    for sock in (on_a[u], on_b[u]):
                        await sock.wait_seq(len(stored[u]), within=10)
                catch_up = time.monotonic() - t0
                for u in users:
                    for sock in (on_a[u], on_b[u]):
                        assert not sock.violations, sock.violations
                        assert sock.events == stored[u], f"{u}@{sock.node.name} differs"
                    assert len(runs[u]) >= 5
                assert "listener connection was lost" in b.log()
                figures(
                    "listener-killed",
                    runs=sum(len(r) for r in runs.values()),
                    events=sum(len(e) for e in stored.values()),
                    killed={"a": killed_a, "b": killed_b},
                    relisten_s={"a": round(relisten_a, 3), "b": round(relisten_b, 3)},
                    final_catch_up_s=round(catch_up, 3),
                )
                for u in users:
                    await on_a[u].close()
                    await on_b[u].close()

    scenario()
