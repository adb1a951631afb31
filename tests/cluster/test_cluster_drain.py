"""Issue 10: a planned shutdown (SIGTERM, a rolling deploy) of the owner while a run is live.

The owner drains: its sockets close 1001, the live run's attempt stops at its next commit (or,
past ``--shutdown-timeout``, without committing its open unit), its leases are released, and it
exits 0. The other server takes the user over AT ONCE — with ``--lease-ttl 10`` the takeover must
come well before the TTL (< 3 s after the exit), both by itself (a socket is open there) and for a
command through it — and resumes the run (one rollback ``lost``, then ``recovered``): no run ends
because of a deploy.
"""

from __future__ import annotations

import asyncio
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
    wait_for,
)

TTL = 10.0


@pytest.mark.parametrize(
    ("seconds", "shutdown_timeout", "outcome"),
    [
        pytest.param(1.5, 6, "completed", id="next-commit"),
        pytest.param(4, 1, "completed", id="timeout"),
    ],
)
@pytest.mark.parametrize("kind", KINDS)
def test_cluster_sigterm_drains_and_the_other_server_takes_over_at_once(
    kind: str, seconds: float, shutdown_timeout: float, outcome: str, tmp_path: Path
) -> None:
    @bounded(60)
    async def scenario() -> None:
        async with fresh_database(kind, tmp_path) as db:
            extra = {0: ["--shutdown-timeout", str(shutdown_timeout)]}
            async with cluster(tmp_path, db, 2, ttl=TTL, extra=extra) as (a, b):
                user = new_user("drain")
                sa = await Sock.open(a, user)
                await sa.say("the first node takes the lease")
                assert a.owns((await db.leases())[user])
                sb = await Sock.open(b, user)
                run_id = await sa.start("slow", {"seconds": seconds})
                await sb.wait_event(run_id, "agent_thinking")

                t_term = time.monotonic()
                a.signal(signal.SIGTERM)
                assert a.proc is not None
                rc = await asyncio.to_thread(a.proc.wait, 30)
                t_exit = time.monotonic()
                assert rc == 0, a.log()
                await sa.wait_until(lambda: sa.closed, within=5)
                assert sa.close_code == 1001, sa.close_code

                async def b_owns() -> bool:
                    return b.owns((await db.leases()).get(user))

                lease = (await db.leases())[user]
                assert lease[2] == 0.0 or b.owns(lease), f"not released: {lease}"
                took = await wait_for(b_owns, 3.0, "the other server takes over")
                t_cmd = time.monotonic()
                after = await sb.say("after the drain", within=5)
                command = time.monotonic() - t_cmd
                await sb.wait_ended([run_id, after], within=15)

                stored = (await db.events())[user]
                assert not await db.problems()
                assert final_state(stored, run_id) == outcome
                lost = rollbacks(stored, run_id)  # handed over: resumed by the other server
                assert [(r["data"]["reason"], r["data"]["will_restart"]) for r in lost] == [
                    ("lost", True)
                ]
                assert final_state(stored, after) == "completed"
                assert not sb.violations, sb.violations
                assert sb.events == stored
                assert sa.events == stored[: len(sa.events)]
                takeover = (t_exit - t_term) + took
                figures(
                    f"drain-{kind}-{outcome}",
                    ttl=TTL,
                    drain_s=round(t_exit - t_term, 3),
                    takeover_after_exit_s=round(took, 3),
                    command_after_takeover_s=round(command, 3),
                )
                assert took + command < 3.0, (took, command)
                assert takeover < TTL
                await sb.close()

    scenario()
