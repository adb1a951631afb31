"""Issue 21, item 4: provisional text reaches sockets on every server of a cluster.

Two real servers on a fresh database (a PostgreSQL database of its own, or one SQLite file);
node ``a`` owns the user, the sockets that take deltas are on node ``b``. Checked on every
``b`` socket, against the committed events:

* deltas arrive in order, from offset 0, each where the previous one ended (never past the text
  the socket has), all before the message's committed ``message``, none of a rolled-back attempt
  after its ``run_rolled_back``; and the text they add up to is the committed one;
* a piece bigger than one PostgreSQL notification (8,000 bytes) arrives whole (split, in order);
* a socket that connects to ``b`` mid-answer gets the text so far at offset 0;
* a garbled payload, or one that shows a gap (what a lost notification or datagram looks like),
  makes ``b`` stop streaming the open message — the socket keeps only text it can trust, and the
  committed message still arrives.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import asyncpg
import pytest
from clusterkit import KINDS, Db, Node, Sock, bounded, cluster, fresh_database, new_user

from netra_actors._relay_codec import encode
from netra_actors._values import Delta

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _serve_relay_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers import ``relay_agents`` from this folder; demo answers stream quickly."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{HERE}{os.pathsep}{path}" if path else str(HERE))
    monkeypatch.setenv("NETRA_DEMO_TOKEN_PAUSE", "0.02")


AGENTS = ("--agents", "relay_agents:AGENTS")


def message_texts(sock: Sock) -> dict[str, tuple[int, str, str | None, int]]:
    """message id -> (index in the socket's events, text, run id, attempt) of every committed
    assistant message the socket received."""
    out: dict[str, tuple[int, str, str | None, int]] = {}
    attempts: dict[str | None, int] = {}
    for i, e in enumerate(sock.events):
        if e["event"] == "agent_started":
            attempts[e["run_id"]] = e["data"]["attempt"]
        if e["event"] == "message" and e["data"].get("role") == "assistant":
            mid = e["data"]["message_id"]
            out[mid] = (i, e["data"]["text"], e["run_id"], attempts.get(e["run_id"], 0))
    return out


def streamed(sock: Sock) -> dict[str, str]:
    """Check the contract on every delta the socket got; message id -> the text they add up to."""
    texts: dict[str, str] = {}
    committed = message_texts(sock)
    rolled_back = {
        (e["run_id"], e["data"]["attempt"]): i
        for i, e in enumerate(sock.events)
        if e["event"] == "run_rolled_back"
    }
    for seen, d in sock.deltas:
        mid = d["message_id"]
        have = texts.get(mid, "")
        assert d["offset"] == len(have), f"{mid}: delta at {d['offset']}, socket has {len(have)}"
        texts[mid] = have + d["text"]
        if mid in committed:  # before its committed message, and a prefix of it
            index, text, _run, _attempt = committed[mid]
            assert seen <= index, f"{mid}: a delta after its committed message"
            assert text.startswith(texts[mid]), f"{mid}: streamed text is not the committed one"
        at = rolled_back.get((d["run_id"], d["attempt"]))
        assert at is None or seen <= at, f"{mid}: a delta after its attempt's rollback"
    return texts


async def owner_and_follower(db: Db, nodes: list[Node], user: str) -> tuple[Sock, Sock]:
    """A socket on node a (which takes the user's lease) and one taking deltas on node b."""
    a, b = nodes
    owner = await Sock.open(a, user)
    await owner.wait_ended([await owner.say("warm up")])
    assert a.owns((await db.leases()).get(user))
    follower = await Sock.open(b, user, deltas=True)
    await follower.wait_seq(owner.last, within=10)
    return owner, follower


async def inject(db: Db, b: Node, payload: str) -> None:
    """Put ``payload`` on the relay as if another node had sent it, ahead of what comes next."""
    if db.kind == "postgres":
        conn = await asyncpg.connect(db.dsn, timeout=10)
        try:
            await conn.execute("SELECT pg_notify('netra_deltas', $1)", payload)
        finally:
            await conn.close()
        return
    assert db.path is not None
    directory = Path(str(db.path) + ".relay")
    port = _announced_port(directory, b.pid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        out.sendto(payload.encode(), ("127.0.0.1", port))


def _announced_port(directory: Path, pid: int) -> int:
    """The relay port the node with ``pid`` announced in ``directory`` (``_relay.py``)."""
    for entry in directory.iterdir():
        port, _, owner = entry.read_text().partition(" ")
        if int(owner) == pid:
            return int(port)
    raise AssertionError(f"the node (pid {pid}) announced no relay port in {directory}")


@pytest.mark.parametrize("kind", KINDS)
def test_cluster_deltas_reach_sockets_on_the_other_server(kind: str, tmp_path: Path) -> None:
    @bounded(90)
    async def scenario() -> None:
        async with fresh_database(kind, tmp_path) as db:
            async with cluster(tmp_path, db, 2, *AGENTS) as nodes:
                user = new_user("relay")
                owner, follower = await owner_and_follower(db, nodes, user)
                runs = [await owner.say("Add 2 and 40, please, and then some more words.")]
                runs.append(await owner.start("big_text", {"pieces": 3, "size": 5_000}))
                runs.append(await owner.start("crashy", {"crash_times": 1, "stream": True}))
                await follower.wait_ended(runs, within=30)
                texts = streamed(follower)
                committed = message_texts(follower)
                by_run = {run: mid for mid, (_i, _t, run, _a) in committed.items()}
                demo, big, crashy = (by_run[r] for r in runs)
                # the whole answers, streamed to the other server, equal the committed text
                assert texts.get(demo) == committed[demo][1]
                assert sum(1 for _s, d in follower.deltas if d["message_id"] == demo) >= 2
                assert texts.get(big) == committed[big][1]
                assert len(committed[big][1]) == 15_000
                assert texts.get(crashy) == committed[crashy][1]
                # the crashed attempt streamed too, and was retracted by its rollback
                crashed = {
                    d["message_id"]
                    for _s, d in follower.deltas
                    if d["run_id"] == runs[2] and d["attempt"] == 1
                }
                assert crashed
                assert crashed.isdisjoint(committed)
                await owner.close()
                await follower.close()

    scenario()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", ["garbled", "gap"])
def test_cluster_follower_stops_streaming_a_message_it_cannot_trust(
    kind: str, fault: str, tmp_path: Path
) -> None:
    @bounded(90)
    async def scenario() -> None:
        async with fresh_database(kind, tmp_path) as db:
            async with cluster(tmp_path, db, 2, *AGENTS) as nodes:
                user = new_user("trust")
                owner, follower = await owner_and_follower(db, nodes, user)
                run_id = await owner.start("hold")
                await owner.wait_event(run_id, "input_requested")
                first = "first part, still first; "
                await follower.wait_until(
                    lambda: "".join(d["text"] for _s, d in follower.deltas) == first
                )
                # a socket that connects mid-answer: the text so far, at offset 0
                late = await Sock.open(nodes[1], user, deltas=True)
                await late.wait_until(lambda: bool(late.deltas))
                assert [(d["offset"], d["text"]) for _s, d in late.deltas] == [(0, first)]
                mid = late.deltas[0][1]["message_id"]
                if fault == "garbled":
                    payload = "0badc0de " + json.dumps(["ghost", [[user, run_id, 1, mid, 25]]])
                else:  # what b sees after losing a notification: the text continues later on
                    ahead = Delta(run_id, 1, mid, len(first) + 7, "lost text")
                    payload = encode("ghost", [(user, ahead)])[0]
                await inject(db, nodes[1], payload)
                await owner.ack({"type": "send_input", "run_id": run_id, "input": {"text": "done"}})
                for sock in (follower, late):
                    await sock.wait_ended([run_id], within=30)
                    texts = streamed(sock)
                    assert texts == {mid: first}, texts  # nothing it could not vouch for
                    assert message_texts(sock)[mid][1] == first + "then done"
                    await sock.close()
                await owner.close()
                refused = nodes[1].metric("netra_relay_payloads_refused_total")
                assert refused == (1 if fault == "garbled" else 0)

    scenario()


def test_relay_agents_module_is_importable() -> None:
    """The servers import it by name (a typo would only show as a server that never starts)."""
    import relay_agents

    assert {a.name for a in relay_agents.AGENTS} >= {"demo", "big_text", "hold"}
