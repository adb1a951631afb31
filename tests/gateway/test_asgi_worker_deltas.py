"""The ASGI adapter under ``uvicorn --workers 2`` on one SQLite file: provisional text reaches
sockets and AG-UI streams on either worker (issue 21, item 4). The test decides where each
connection lands (``gwkit.Workers``): it does not leave that to the kernel.

The workers are two nodes of one cluster; the one that does not own the user follows it and
gets the owner's deltas through the relay (``netra_actors/_relay.py``: local datagrams on a
SQLite cluster). Before the relay, a socket or an AG-UI request on the other worker got the
committed message only (no ``delta`` frames, one ``TEXT_MESSAGE_CONTENT``).
"""

from __future__ import annotations

import asyncio
import http.client
import json
from pathlib import Path
from typing import Any

from gwkit import Client, UvicornServer, Workers, run_async, token


async def _socket(srv: UvicornServer, user: str) -> Client:
    """A socket that takes deltas (``features: ["deltas"]``)."""
    client = await Client.open(srv, hello=False)
    await client.send(
        {"type": "hello", "protocol": 1, "token": token(user), "features": ["deltas"]}
    )
    client.welcome = await client.next_frame()
    assert client.welcome["type"] == "welcome", client.welcome
    return client


def _agui_post(srv: UvicornServer, i: int) -> http.client.HTTPConnection:
    """An AG-UI request of dora's, sent (its answer is read by :func:`_agui_frames`)."""
    body = json.dumps(
        {
            "threadId": f"t-deltas-{i}",
            "runId": f"agui-deltas-{i}",
            "messages": [{"id": f"m{i}", "role": "user", "content": f"add {i} and 1, then more"}],
        }
    )
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request(
        "POST",
        "/agui",
        body=body,
        headers={"Authorization": f"Bearer {token('dora')}", "Content-Type": "application/json"},
    )
    return conn


def _agui_frames(conn: http.client.HTTPConnection) -> list[dict[str, Any]]:
    with conn.getresponse() as resp:
        assert resp.status == 200, resp.read()
        lines = resp.read().splitlines()
    conn.close()
    return [json.loads(line[len(b"data: ") :]) for line in lines if line.startswith(b"data: ")]


def test_two_workers_stream_deltas_to_sockets_on_either(tmp_path: Path) -> None:
    srv = UvicornServer(tmp_path, "--workers", "2", env={"NETRA_DEMO_TOKEN_PAUSE": "0.02"})
    srv.start()
    try:
        workers = Workers(srv, 2)

        @run_async
        async def scenario() -> None:
            clients: list[Client] = []
            for pid in workers.pids:  # two sockets of the user on each worker
                with workers.only(pid):
                    clients += [await _socket(srv, "dora"), await _socket(srv, "dora")]
            docs = [workers.healthz(pid) for pid in workers.pids]
            assert [doc["subscriptions"] for doc in docs] == [2, 2], docs
            assert sorted(doc["owned_users"] for doc in docs) == [0, 1], docs
            run_id = await clients[0].say("Add 2 and 40, please, and then some more words.")
            for client in clients:
                await client.wait_run_end(run_id, within=30)
                answer = next(
                    e
                    for e in client.events
                    if e["event"] == "message"
                    and e["run_id"] == run_id
                    and e["data"]["role"] == "assistant"
                )
                mid = answer["data"]["message_id"]
                deltas = [f for f in client.frames if f["type"] == "delta"]
                assert len(deltas) >= 2, deltas  # streamed, on either worker
                text = ""
                for d in deltas:
                    assert d["message_id"] == mid
                    assert d["offset"] == len(text)  # in order, never past the text
                    text += d["text"]
                assert text == answer["data"]["text"]
                last_delta = max(i for i, f in enumerate(client.frames) if f["type"] == "delta")
                committed = next(
                    i for i, f in enumerate(client.frames) if answer in [f, *f.get("events", [])]
                )
                assert last_delta < committed
            await asyncio.gather(*(c.ws.close() for c in clients))

        scenario()
        conns: list[http.client.HTTPConnection] = []
        for pid in workers.pids:  # two AG-UI requests on each worker, all at once
            with workers.only(pid):
                conns += [_agui_post(srv, len(conns)), _agui_post(srv, len(conns) + 1)]
        streams = [_agui_frames(conn) for conn in conns]
        for frames in streams:
            assert frames[-1]["type"] == "RUN_FINISHED", frames[-1]
            pieces = [f for f in frames if f["type"] == "TEXT_MESSAGE_CONTENT"]
            assert len(pieces) >= 2, frames  # streamed, not only the committed text
        assert srv.terminate(timeout=15) == 0
    finally:
        srv.stop()
