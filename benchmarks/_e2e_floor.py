"""The ``floor`` server of the ``e2e`` scenario: a measuring floor, not a product.

``python -m benchmarks._e2e_floor --db FILE --secret S [--port 0]`` does the least that any
server which commits an event before it sends it must do, so that ``e2e --server gateway+floor``
shows how far the gateway's *one idle user* latency is from what this machine allows. Per
socket, in one trio task (no writer thread, no actors, no runtime):

* ``hello`` (its token checked with the gateway's :func:`~netra_actors.gateway.verify_token`)
  → ``welcome``; ``start_run`` → ``ack`` with a run id;
* the run, paced like :class:`~benchmarks.harness.agents.BenchE2E` (a random offset within one
  interval, then one unit of ``every`` ``bench_tick`` events, ``data.t`` = ``time.time()`` at
  emit, every ``interval`` seconds): per unit, ``INSERT`` its rows into ``netra_events`` (the
  store's schema and indexes) of a ``sqlite3`` WAL file (``synchronous=NORMAL``) and ``COMMIT``,
  then send them as the gateway frames them (an ``event`` frame, or a ``batch`` of several);
* the run's first four events (pending, starting, agent_started, running) and its last three
  (agent_completed, completing, completed) as one commit and one ``batch`` each, so that the
  client reads the same sequence, ``seq`` 1, 2, … as from the gateway.

It prints ``PORT <n>`` once it listens; SIGINT or SIGTERM stop it. Nothing else of the protocol exists.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from netra_actors.gateway import verify_token

from .harness.processes import server_arguments

SCHEMA = """
CREATE TABLE IF NOT EXISTS netra_events (
    user_id VARCHAR(128) NOT NULL, seq INTEGER NOT NULL, run_id VARCHAR(64),
    event VARCHAR(64) NOT NULL, ts FLOAT NOT NULL, data TEXT NOT NULL, thread VARCHAR(128),
    PRIMARY KEY (user_id, seq));
CREATE INDEX IF NOT EXISTS netra_events_user_thread ON netra_events (user_id, thread, seq);
CREATE INDEX IF NOT EXISTS netra_events_run ON netra_events (run_id);
"""
INSERT = "INSERT INTO netra_events VALUES (?, ?, ?, ?, ?, ?, 'main')"
STARTING = [
    ("run_state", {"state": "pending", "previous": None}),
    ("run_state", {"state": "starting", "previous": "pending"}),
    ("agent_started", {"agent": "bench_e2e", "attempt": 1}),
    ("run_state", {"state": "running", "previous": "starting"}),
]


def open_db(path: str) -> sqlite3.Connection:
    """The SQLite file in WAL mode, ``synchronous=NORMAL``, transactions begun explicitly."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


class Log:
    """One user's event log: commit events, then the frame that carries them."""

    def __init__(self, db: sqlite3.Connection, user: str, run_id: str) -> None:
        self.db, self.user, self.run_id = db, user, run_id
        (self.seq,) = db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM netra_events WHERE user_id = ?", (user,)
        ).fetchone()

    def commit(self, events: Sequence[tuple[str, str]]) -> str:
        """``(event, data JSON)`` rows inserted and committed; their ``event``/``batch`` frame."""
        ts = time.time()
        run = orjson.dumps(self.run_id).decode()
        frames = []
        self.db.execute("BEGIN")
        for event, data in events:
            self.seq += 1
            self.db.execute(INSERT, (self.user, self.seq, self.run_id, event, ts, data))
            frames.append(
                f'{{"type":"event","seq":{self.seq},"run_id":{run},"event":"{event}",'
                f'"ts":{ts!r},"data":{data},"thread":"main"}}'
            )
        self.db.execute("COMMIT")
        if len(frames) == 1:
            return frames[0]
        return '{"type":"batch","events":[' + ",".join(frames) + "]}"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def bench_run(ws: WebSocketConnection, log: Log, run_input: dict[str, Any]) -> None:
    """What ``bench_e2e`` and the gateway do for one run, minus everything optional."""
    events: int = run_input["events"]
    every: int = run_input["every"]
    interval: float = run_input.get("interval", 0.0)
    text: str = run_input.get("text", "")
    await ws.send_message(log.commit([(e, _json(d)) for e, d in STARTING]))
    next_at = trio.current_time()
    if interval > 0:
        next_at += random.uniform(0, interval)
        await trio.sleep_until(next_at)
    unit: list[tuple[str, str]] = []
    for i in range(1, events + 1):
        unit.append(("bench_tick", _json({"t": time.time(), "text": text})))
        if i % every == 0 or i == events:
            await ws.send_message(log.commit(unit))
            unit = []
            if interval > 0 and i < events:
                next_at += interval
                await trio.sleep_until(next_at)
    ending = [
        ("agent_completed", {"result": {"events": events}}),
        ("run_state", {"state": "completing", "previous": "running"}),
        ("run_state", {"state": "completed", "previous": "completing"}),
    ]
    await ws.send_message(log.commit([(e, _json(d)) for e, d in ending]))


async def session(request: WebSocketRequest, db: sqlite3.Connection, secret: bytes) -> None:
    """One socket: ``hello``/``welcome``, then every ``start_run`` runs to its end."""
    ws = await request.accept()
    with contextlib.suppress(ConnectionClosed):
        hello = orjson.loads(await ws.get_message())
        user = verify_token(secret, hello.get("token"), now=time.time()).user
        log = Log(db, user, "")
        welcome = {"type": "welcome", "protocol": 1, "user_id": user, "head_seq": log.seq}
        await ws.send_message(_json({**welcome, "features": []}))
        while True:
            command = orjson.loads(await ws.get_message())
            if command.get("type") != "start_run":
                continue
            log.run_id = "r_" + secrets.token_hex(12)
            await ws.send_message(_json({"type": "ack", "id": command["id"], "run_id": log.run_id}))
            await bench_run(ws, log, command["input"])


async def serve(db_path: str, secret: bytes, port: int) -> None:
    db = open_db(db_path)

    async def handler(request: WebSocketRequest) -> None:
        await session(request, db, secret)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", port, None)
            print(f"PORT {server.port}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    db.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM."""
    trio.run(serve, *server_arguments("benchmarks._e2e_floor", argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
