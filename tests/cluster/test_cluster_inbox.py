"""Commands through a non-owner, one right after another: each one reaches the owner and is
answered (the inbox hands every posted command to the owner exactly once, in order)."""

from __future__ import annotations

from pathlib import Path

import pytest
from clusterkit import PG_SKIP, Sock, bounded, cluster, fresh_database, new_user

INBOX_ID_REUSE = (
    "SQLite reuses netra_inbox ids (INTEGER PRIMARY KEY without AUTOINCREMENT: a new row gets "
    "max(id)+1, so once the only row is consumed the next command gets the same id) and the "
    "owner's inbox loop skips ids it already routed until a poll no longer sees them "
    "(netra_actors/_cluster.py _inbox_loop: `if item.id in self._routed: continue`): a command "
    "posted within one poll interval of the previous one's consumption is never handed to the "
    "owner; the follower's caller gets no answer (request_timeout, 30 s)"
)
BACK_TO_BACK = 12


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite"),
        pytest.param("postgres", marks=[pytest.mark.postgres, PG_SKIP]),
    ],
)
def test_cluster_back_to_back_commands_through_a_follower(kind: str, tmp_path: Path) -> None:
    @bounded(60)
    async def scenario() -> None:
        async with fresh_database(kind, tmp_path) as db:
            async with cluster(tmp_path, db, 2, ttl=2.0) as (a, b):
                user = new_user("inbox")
                owner = await Sock.open(a, user)
                await owner.say("the first node takes the lease")
                assert a.owns((await db.leases())[user])
                follower = await Sock.open(b, user)
                runs = []
                for i in range(BACK_TO_BACK):  # each posted as soon as the previous is answered
                    runs.append(await follower.say(f"number {i}", within=5))
                await follower.wait_ended(runs)
                await owner.wait_ended(runs)
                assert owner.events[-len(follower.events) :] == follower.events
                assert not await db.problems()
                assert await db.fetch("SELECT id FROM netra_inbox") == []

    scenario()
