"""Embedding: the runtime inside a plain asyncio application.

The application is a tiny line-based TCP chat server written with ``asyncio.start_server``: a
client sends its user name on the first line, then chat messages, one per line; the server
answers with the user's committed events as JSON lines. The runtime joins the application's
event loop with ``netra_actors.embed`` (trio runs as a guest of asyncio, in the same thread).

By default the script starts the server on a free port, connects two clients to it, prints what
they receive and exits. With ``--serve`` it keeps serving (try ``nc 127.0.0.1 PORT``) until
Ctrl-C. The user name is taken on trust: a real server authenticates first (``docs/server.md``).

Run it with ``python examples/embed_asyncio.py [--db PATH] [--serve] [--port N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile

import orjson

import netra_actors as na
from netra_actors.demo_agents import DEMO_AGENTS, demo_metadata


async def pump(events: na.types.EmbeddedSubscription, writer: asyncio.StreamWriter) -> None:
    """Copy the user's committed events to the socket, in ``seq`` order.

    A reader that falls more than ``subscriber_buffer`` events behind gets
    :class:`~netra_actors.exceptions.SlowConsumerError` here: its connection is closed.
    """
    try:
        async for event in events:
            writer.write(orjson.dumps(event.to_wire()) + b"\n")
            await writer.drain()
    finally:
        writer.close()


async def handle(
    rt: na.EmbeddedRuntime, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One connection: the first line names the user, every further line is a chat message."""
    user = (await reader.readline()).decode().strip()
    if not user:
        writer.close()
        return
    events = await rt.subscribe(user)  # only events committed from now on
    pumping = asyncio.create_task(pump(events, writer))
    try:
        while line := (await reader.readline()).decode().strip():
            try:
                run_id = await rt.say(user, line)
            except na.CommandError as exc:  # refused commands are typed; the socket stays up
                reply: dict[str, na.JSON] = {"type": "error", "code": exc.code, "message": str(exc)}
            else:
                reply = {"type": "ack", "run_id": run_id}
            writer.write(orjson.dumps(reply) + b"\n")
    finally:
        events.close()
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError, na.SubscriptionClosedError):
            await pumping
        writer.close()


async def client(port: int, user: str, text: str) -> list[str]:
    """Connect, say one thing, read the events until the run has completed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{user}\n{text}\n".encode())
    lines = []
    while True:
        frame = orjson.loads(await reader.readline())
        if frame["type"] == "event":
            data = frame["data"]
            lines.append(f"{user} #{frame['seq']} {frame['event']} {data.get('state', '')}".strip())
            if frame["event"] == "run_state" and data["state"] == "completed":
                break
        else:
            lines.append(f"{user} {frame['type']}")
    writer.close()
    await writer.wait_closed()
    return lines


async def main(db_path: str, serve: bool, port: int) -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url(db_path))
    # In FastAPI or Starlette this `async with` goes in the app's lifespan (see docs/embedding.md).
    async with na.embed(config, agents=DEMO_AGENTS, metadata=[demo_metadata]) as rt:
        connections: set[asyncio.Task[object]] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            try:
                await handle(rt, reader, writer)
            except asyncio.CancelledError:
                pass  # closed at shutdown (see below)
            finally:
                connections.discard(task)

        # `limit` bounds a line (bytes): a client cannot make the server buffer without end.
        server = await asyncio.start_server(on_connect, "127.0.0.1", port, limit=64 * 1024)
        bound = server.sockets[0].getsockname()[1]
        print(f"chat server on 127.0.0.1:{bound}, store {db_path}")
        try:
            async with server:
                if serve:
                    await server.serve_forever()
                else:
                    results = await asyncio.gather(
                        client(bound, "alice", "Add 2 and 40, please."),
                        client(bound, "bob", "How many words are in this sentence?"),
                    )
                    for lines in results:
                        print("\n".join(lines))
            stats = await rt.statistics()
            print(f"committed {stats.store.events_committed} events for {stats.runs_started} runs")
        finally:
            # Stop every use of the runtime before leaving embed(): close the connections.
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="netra_actors embedded in an asyncio app.")
    parser.add_argument("--db", help="SQLite file (default: a fresh temporary file)")
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    args = parser.parse_args(argv)
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="netra-embed-"), "embed.db")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(db, args.serve, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
