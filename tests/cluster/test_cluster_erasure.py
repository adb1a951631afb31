"""``netra-actors erase-user`` and ``export-user`` against a running cluster: two ``serve``
processes on one database, the user's sockets open on both. The CLI is a short-lived node: the
erasure reaches the user's owner (through the inbox), which erases under its lease; the sockets
on both servers close with 4410, the store keeps no row of the user, and a later session starts
at seq 1. The export, taken before, is the user's log as JSON lines, equal to a replay."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clusterkit import PG_SKIP, SECRET, Db, Sock, bounded, cluster, fresh_database, new_user

USER_TABLES = ("netra_events", "netra_runs", "netra_threads", "netra_message_ids")


def cli(tmp_path: Path, db: Db, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NETRA_HOME=str(tmp_path / "home"), NETRA_SECRET=SECRET)
    cmd = [sys.executable, "-m", "netra_actors._cli", *args, "--db", db.arg]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite"),
        pytest.param("postgres", marks=[pytest.mark.postgres, PG_SKIP]),
    ],
)
def test_cluster_cli_erase_user_closes_sockets_everywhere_4410(kind: str, tmp_path: Path) -> None:
    @bounded(90)
    async def scenario() -> None:
        async with fresh_database(kind, tmp_path) as db:
            async with cluster(tmp_path, db, 2, ttl=2.0) as (a, b):
                user = new_user("erase")
                other = new_user("keep")
                on_a = await Sock.open(a, user)
                runs = [await on_a.say("hello from a")]
                on_b = await Sock.open(b, user)
                runs.append(await on_b.say("hello from b"))
                await on_a.wait_ended(runs)
                await on_b.wait_ended(runs)
                bystander = await Sock.open(b, other)
                await bystander.wait_ended([await bystander.say("not me")])
                # the export: JSON lines equal to the stored log (the replay)
                out = tmp_path / "export.jsonl"
                done = await asyncio.to_thread(
                    cli, tmp_path, db, "export-user", user, "--out", str(out)
                )
                assert done.returncode == 0, done.stderr
                lines = [json.loads(line) for line in out.read_text().splitlines()]
                stored = (await db.events())[user]
                assert [
                    {k: e[k] for k in ("seq", "run_id", "event", "ts", "data")} for e in lines
                ] == stored
                assert {e["type"] for e in lines} == {"event"}
                # the erasure, from a third process
                done = await asyncio.to_thread(cli, tmp_path, db, "erase-user", user, "--yes")
                assert done.returncode == 0, done.stderr
                for sock in (on_a, on_b):
                    await sock.wait_until(lambda s=sock: s.closed, within=15)
                    assert sock.close_code == 4410, (sock.node.name, sock.close_code)
                for table in USER_TABLES:
                    rows = await db.fetch(f"SELECT count(*) FROM {table} WHERE user_id = '{user}'")
                    assert rows[0][0] == 0, table
                assert not bystander.closed
                assert (await db.events())[other]
                # a later session starts at seq 1
                again = await Sock.open(b, user)
                await again.wait_ended([await again.say("a new start")])
                assert again.events[0]["seq"] == 1
                assert not again.violations
                await again.close()
                await bystander.close()

    scenario()


def test_cluster_cli_erase_user_asks_for_confirmation(tmp_path: Path) -> None:
    db = Db("sqlite", str(tmp_path / "netra.db"), path=tmp_path / "netra.db")
    env = dict(os.environ, NETRA_HOME=str(tmp_path / "home"))
    cmd = [sys.executable, "-m", "netra_actors._cli", "erase-user", "bob", "--db", db.arg]
    done = subprocess.run(cmd, env=env, input="alice\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "not confirmed" in done.stderr
