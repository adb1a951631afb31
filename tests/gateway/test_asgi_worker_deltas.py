"""The ASGI adapter under ``uvicorn --workers 2`` on one SQLite file: provisional text reaches
sockets and AG-UI streams on whichever worker the connection lands on (issue 21, item 4).

The workers are two nodes of one cluster; the one that does not own the user follows it and
gets the owner's deltas through the relay (``netra_actors/_relay.py``: local datagrams on a
SQLite cluster). Before the relay, a socket or an AG-UI request on the other worker got the
committed message only (no ``delta`` frames, one ``TEXT_MESSAGE_CONTENT``).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gwkit import Client, UvicornServer, run_async, token


async def _socket(srv: UvicornServer, user: str) -> Client:
    """A socket that takes deltas (``features: ["deltas"]``)."""
    client = await Client.open(srv, hello=False)
    await client.send(
        {"type": "hello", "protocol": 1, "token": token(user), "features": ["deltas"]}
    )
    client.welcome = await client.next_frame()
    assert client.welcome["type"] == "welcome", client.welcome
    return client


def _spread(srv: UvicornServer) -> dict[str, int]:
    """Subscriptions per worker (node), asked in concurrent bursts so that both answer."""
    docs: dict[str, int] = {}
    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(8) as pool:
        while len(docs) < 2 and time.monotonic() < deadline:
            for status, doc in pool.map(lambda _: srv.get_json("/healthz"), range(16)):
                assert status == 200, doc
                docs[doc["node"]] = doc["subscriptions"]
    return docs


def _agui(srv: UvicornServer, i: int) -> list[dict[str, Any]]:
    body = json.dumps(
        {
            "threadId": f"t-deltas-{i}",
            "runId": f"agui-deltas-{i}",
            "messages": [{"id": f"m{i}", "role": "user", "content": f"add {i} and 1, then more"}],
        }
    ).encode()
    request = urllib.request.Request(
        f"{srv.http}/agui",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token('dora')}"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return [
            json.loads(line[len(b"data: ") :])
            for line in resp.read().splitlines()
            if line.startswith(b"data: ")
        ]


def test_two_workers_stream_deltas_to_sockets_on_either(tmp_path: Path) -> None:
    srv = UvicornServer(tmp_path, "--workers", "2", env={"NETRA_DEMO_TOKEN_PAUSE": "0.02"})
    srv.start()
    try:

        @run_async
        async def scenario() -> None:
            clients: list[Client] = []
            for _ in range(12):  # until both workers hold sockets of the user
                clients.append(await _socket(srv, "dora"))
                if len(clients) >= 4:
                    spread = await asyncio.to_thread(_spread, srv)
                    if len(spread) == 2 and all(spread.values()):
                        break
            else:
                raise AssertionError(f"the sockets all landed on one worker: {spread}")
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
        with ThreadPoolExecutor(4) as pool:  # in bursts: they reach both workers
            streams = list(pool.map(lambda i: _agui(srv, i), range(12)))
        for frames in streams:
            assert frames[-1]["type"] == "RUN_FINISHED", frames[-1]
            pieces = [f for f in frames if f["type"] == "TEXT_MESSAGE_CONTENT"]
            assert len(pieces) >= 2, frames  # streamed, not only the committed text
        assert srv.terminate(timeout=15) == 0
    finally:
        srv.stop()
