"""Helpers of the gateway tests: the example server as a real subprocess, and a protocol client
built on the independent ``websockets`` library (never on our own code).

The server runs exactly as a user starts it (``python -m netra_actors._cli serve …``) on a free
port of 127.0.0.1 with a SQLite file under the test's ``tmp_path``. Tests are plain functions that
call :func:`run_async` (pytest-trio's ``trio_mode`` only takes ``async def`` tests, so asyncio
scenarios stay out of its way).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from netra_actors.gateway import mint_token

SECRET = "test-secret-0123456789abcdef"
STARTUP_TIMEOUT = 20.0
FRAME_TIMEOUT = 10.0

P = ParamSpec("P")
T = TypeVar("T")


def run_async(fn: Callable[P, Coroutine[Any, Any, T]], *, timeout: float = 60.0) -> Callable[P, T]:
    """Turn an asyncio scenario into a plain test function, bounded by ``timeout`` seconds."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        async def bounded() -> T:
            try:
                async with asyncio.timeout(timeout):
                    return await fn(*args, **kwargs)
            finally:
                await close_all()

        return asyncio.run(bounded())

    return wrapper


_OPEN: list[ClientConnection] = []


def track(ws: ClientConnection) -> ClientConnection:
    """Have :func:`close_all` (the end of every :func:`run_async` scenario) close ``ws``."""
    _OPEN.append(ws)
    return ws


async def close_all() -> None:
    """Close every client socket a scenario opened (no transport outlives its event loop)."""
    while _OPEN:
        ws = _OPEN.pop()
        try:
            async with asyncio.timeout(5):
                await ws.close()
        except TimeoutError:
            ws.transport.abort()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago, and never handed out before by this
    process: two ports picked before either is bound (a proxy's HTTP and HTTPS ports, a server's
    before it starts) are never the same port, whatever the kernel picks."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port that was not handed out already")


def token(user: str, ttl: float = 3600.0, secret: str = SECRET) -> str:
    """A token the test server accepts."""
    return mint_token(secret.encode(), user, ttl, now=time.time())


class Server:
    """``netra-actors serve`` in a subprocess."""

    def __init__(self, tmp_path: Path, *args: str, port: int | None = None) -> None:
        self.tmp_path = tmp_path
        self.db = tmp_path / "netra.db"
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp_path / f"server-{self.port}.log"
        self.out_path = tmp_path / f"server-{self.port}.out"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> Server:
        """Start the process and wait until ``/healthz`` answers ok."""
        env = dict(os.environ, NETRA_HOME=str(self.tmp_path / "home"), PYTHONUNBUFFERED="1")
        env.pop("NETRA_SECRET", None)
        cmd = [
            sys.executable, "-m", "netra_actors._cli", "serve",
            "--port", str(self.port), "--db", str(self.db), "--secret", SECRET,
            *self.args,
        ]  # fmt: skip
        with self.log_path.open("ab") as err, self.out_path.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        return self._wait_healthy()

    def _wait_healthy(self) -> Server:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self.get("/healthz")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)  # polling the health endpoint, bounded by the deadline
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def get(self, path: str, *, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
        """One HTTP request; (status, body)."""
        req = urllib.request.Request(self.http + path, data=body, method=method,
                                     headers=headers or {})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def get_json(self, path: str) -> tuple[int, Any]:
        status, body = self.get(path)
        return status, json.loads(body)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()


ROOT = Path(__file__).resolve().parents[2]


SAFE_UVICORN = (
    "--http", "examples.fastapi_app:HeadTimeoutH11Protocol",
    "--h11-max-incomplete-event-size", "16384",
    "--timeout-keep-alive", "5",
    "--limit-concurrency", "1000",
)  # fmt: skip
"""The uvicorn settings docs/embedding.md gives for facing clients ("Safe uvicorn settings")."""
UVICORN_HEAD_TIMEOUT = 10.0
"""``examples.fastapi_app.HEAD_TIMEOUT``: a request head must arrive within it."""


class UvicornServer(Server):
    """``uvicorn examples.fastapi_app:app`` in a subprocess, run as its docstring says (from the
    repository root, configured by ``NETRA_SECRET``/``NETRA_DB``): the ASGI adapter under a real
    ASGI server. ``args`` go to uvicorn (``--loop uvloop``, ``--workers 2`` …)."""

    def __init__(
        self, tmp_path: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(tmp_path, *args, port=port)
        self.env = env or {}

    def start(self) -> Server:
        env = dict(os.environ, NETRA_HOME=str(self.tmp_path / "home"), PYTHONUNBUFFERED="1")
        env.update(NETRA_SECRET=SECRET, NETRA_DB=str(self.db), **self.env)
        cmd = [
            sys.executable, "-m", "uvicorn", "examples.fastapi_app:app",
            "--host", "127.0.0.1", "--port", str(self.port), *self.args,
        ]  # fmt: skip
        with self.log_path.open("ab") as err, self.out_path.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        return self._wait_healthy()


# -- the protocol client -----------------------------------------------------------------------


def events_of(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of an ``event`` or ``batch`` frame (checking the batch element shape)."""
    if frame["type"] == "event":
        return [frame]
    if frame["type"] == "batch":
        assert frame["events"], "an empty batch"
        for event in frame["events"]:
            assert event["type"] == "event"
        return list(frame["events"])
    return []


class Client:
    """One protocol v1 socket over ``websockets``. Keeps every event it saw, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] | None = None
        self.batches = 0

    @classmethod
    async def open(
        cls,
        server: Server,
        user: str | None = None,
        *,
        resume_from: int | None = None,
        tok: str | None = None,
        hello: bool = True,
        **kwargs: Any,
    ) -> Client:
        ws = track(await connect(server.ws_url, open_timeout=10, close_timeout=2, **kwargs))
        client = cls(ws)
        if hello:
            assert user is not None or tok is not None
            frame: dict[str, Any] = {"type": "hello", "protocol": 1}
            frame["token"] = tok if tok is not None else token(user or "")
            if resume_from is not None:
                frame["resume_from"] = resume_from
            await client.send(frame)
            client.welcome = await client.next_frame()
            assert client.welcome["type"] == "welcome", client.welcome
        return client

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def next_frame(self, within: float = FRAME_TIMEOUT) -> dict[str, Any]:
        """The next frame; events are also recorded in :attr:`events`."""
        raw = await asyncio.wait_for(self.ws.recv(), within)
        assert isinstance(raw, str), "the server sent a binary frame"
        frame: dict[str, Any] = json.loads(raw)
        assert isinstance(frame.get("type"), str)
        self.frames.append(frame)
        if frame["type"] == "batch":
            self.batches += 1
        self.events.extend(events_of(frame))
        return frame

    async def reply(self, within: float = FRAME_TIMEOUT) -> dict[str, Any]:
        """The next frame that is not an event."""
        while True:
            frame = await self.next_frame(within)
            if frame["type"] not in ("event", "batch"):
                return frame

    async def command(self, frame: dict[str, Any], within: float = FRAME_TIMEOUT) -> dict[str, Any]:
        """Send a command and return its answer (matched by ``id`` if it has one)."""
        await self.send(frame)
        while True:
            answer = await self.reply(within)
            if "id" not in frame or answer.get("id") == frame["id"]:
                return answer

    async def say(self, text: str, **extra: Any) -> str:
        answer = await self.command(
            {"type": "say", "id": f"say-{len(self.frames)}", "text": text, **extra}
        )
        assert answer["type"] == "ack", answer
        run_id: str = answer["run_id"]
        return run_id

    async def start(self, agent: str, input: Any = None) -> str:
        answer = await self.command(
            {"type": "start_run", "id": f"start-{len(self.frames)}", "agent": agent, "input": input}
        )
        assert answer["type"] == "ack", answer
        run_id: str = answer["run_id"]
        return run_id

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 20.0
    ) -> dict[str, Any]:
        """Read until an event matching ``predicate`` arrives (or one already did)."""
        for event in self.events:
            if predicate(event):
                return event
        async with asyncio.timeout(within):
            while True:
                frame = await self.next_frame(within)
                for event in events_of(frame):
                    if predicate(event):
                        return event

    async def wait_run_end(self, run_id: str, within: float = 20.0) -> str:
        """Read until the run reaches a final state; that state."""
        event = await self.wait_for(lambda e: is_final_state(e, run_id), within)
        state: str = event["data"]["state"]
        return state

    async def closed(self, within: float = FRAME_TIMEOUT) -> int | None:
        """Read (recording events) until the server closes; the close code."""
        try:
            async with asyncio.timeout(within):
                while True:
                    await self.next_frame(within)
        except ConnectionClosed:
            pass
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["run_id"] == run_id]


FINAL_STATES = frozenset({"completed", "failed", "timeout", "dead", "cancelled"})


def is_final_state(event: dict[str, Any], run_id: str) -> bool:
    return (
        event["run_id"] == run_id
        and event["event"] == "run_state"
        and event["data"]["state"] in FINAL_STATES
    )


def seq_is(seq: int) -> Callable[[dict[str, Any]], bool]:
    """A :meth:`Client.wait_for` predicate: the event with this ``seq``."""
    return lambda event: event["seq"] == seq


def event_is(run_id: str, name: str) -> Callable[[dict[str, Any]], bool]:
    """A :meth:`Client.wait_for` predicate: an event ``name`` of ``run_id``."""
    return lambda event: event["run_id"] == run_id and event["event"] == name


def assert_gapless(events: Sequence[dict[str, Any]], start: int = 1) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(start, start + len(seqs))), f"not gapless from {start}: {seqs}"


def names(events: Iterable[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


async def gather(*aws: Awaitable[T]) -> list[T]:
    return list(await asyncio.gather(*aws))


class Workers:
    """The worker processes of a ``uvicorn --workers N`` server, each reachable on purpose.

    Every worker accepts from the one listening socket, so the kernel decides which worker a new
    connection reaches. :meth:`only` makes that decision: it stops the other workers (SIGSTOP), so
    the one left running accepts every connection made inside the block, and resumes them on the
    way out. Before it resumes them it asks ``/healthz`` once more: the accept queue is FIFO and
    only the pinned worker accepts, so its answer proves that every connection made before it in
    the block was accepted there. Stopped workers miss no lease renewal as long as a block stays
    well under the lease TTL.
    """

    def __init__(self, srv: Server, count: int, within: float = 20.0) -> None:
        assert srv.proc is not None
        self.srv = srv
        deadline = time.monotonic() + within
        while len(pids := self._children(srv.proc.pid)) < count:
            assert time.monotonic() < deadline, f"uvicorn started {pids}, not {count} workers"
            time.sleep(0.05)  # the master spawns its workers after the listening socket
        assert len(pids) == count, pids
        self.pids = pids
        self.nodes = {pid: self.healthz(pid)["node"] for pid in pids}

    @staticmethod
    def _children(pid: int) -> list[int]:
        """The worker processes (``multiprocessing`` spawns) among ``pid``'s children."""
        found = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                except FileNotFoundError:
                    continue
                if b"spawn_main" in cmdline:
                    found.append(int(child))
        return sorted(found)

    def only(self, pid: int) -> _Pinned:
        """A block in which every new connection reaches worker ``pid``."""
        return _Pinned(self, pid)

    def healthz(self, pid: int) -> dict[str, Any]:
        """Worker ``pid``'s ``/healthz`` document."""
        with self.only(pid) as doc:
            return doc

    def other(self, pid: int) -> int:
        """The first worker that is not ``pid``."""
        return next(p for p in self.pids if p != pid)


class _Pinned:
    def __init__(self, workers: Workers, pid: int) -> None:
        self.workers = workers
        self.pid = pid
        self.stopped: list[int] = []

    def _barrier(self) -> dict[str, Any]:
        status, doc = self.workers.srv.get_json("/healthz")
        assert status == 200, doc
        assert doc["node"].rsplit("-", 2)[1] == str(self.pid), (doc["node"], self.pid)
        return dict(doc)

    def __enter__(self) -> dict[str, Any]:
        for pid in self.workers.pids:
            if pid != self.pid:
                os.kill(pid, signal.SIGSTOP)
                self.stopped.append(pid)
        return self._barrier()

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._barrier()  # every connection made in the block is accepted by now
        finally:
            for pid in self.stopped:
                os.kill(pid, signal.SIGCONT)
