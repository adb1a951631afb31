"""Harness of the cluster suite: several ``netra-actors serve`` processes on one database.

Self-contained on purpose (it mirrors ``tests/gateway/gwkit.py`` and ``tests/reliability/
relkit.py`` instead of importing them): ``mypy tests/cluster`` must type-check this folder on its
own, and mypy cannot resolve the gateway kit's top-level module name from here.

* :func:`fresh_database` — a new SQLite file, or a new PostgreSQL database ``netra_c_<hex>``
  created on the maintenance database (``postgres``) and dropped ``WITH (FORCE)`` afterwards.
* :class:`Db` reads that database directly (``sqlite3`` / ``asyncpg``), never through our code
  (the benchmarks' :class:`~benchmarks.harness.durable_cluster.StoreReader`, with a name).
* :class:`Node` is one server process (``python -m netra_actors._cli serve --db … --lease-ttl …
  --node-id …``) with kill -9 / SIGSTOP / SIGCONT / SIGTERM and ``/healthz``.
* :class:`Sock` is one user's socket over the independent ``websockets`` library, with a
  background reader that checks on the fly that ``seq`` continues exactly (gapless, no repeat).
* :func:`store_problems` checks a user's stored stream: gapless seq, legal ``run_state`` chains,
  one ``agent_started`` per attempt, one rollback before each following state, runs table equal to
  the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
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
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import asyncpg
import pytest
from sqlalchemy import make_url
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from gwkit import free_port as free_port

from benchmarks.harness.durable_cluster import StoreReader
from netra_actors._core import TRANSITIONS, RunState
from netra_actors.gateway import mint_token

SECRET = "test-secret-0123456789abcdef"
STARTUP_TIMEOUT = 20.0
FINAL_STATES = frozenset({"completed", "failed", "timeout", "dead", "cancelled"})
LIVE_STATES = frozenset(s.value for s in RunState if s.is_live)

PG_URL = os.environ.get(
    "NETRA_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
"""Where PostgreSQL is (only host, port and user are used: every test gets its own database)."""

P = ParamSpec("P")
T = TypeVar("T")


def pg_reachable() -> bool:
    url = make_url(PG_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            return True
    except OSError:
        return False


PG_SKIP = pytest.mark.skipif(
    not pg_reachable(),
    reason=f"PostgreSQL is not reachable at {make_url(PG_URL).host}:{make_url(PG_URL).port} "
    "(set NETRA_TEST_PG_URL)",
)
KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=[pytest.mark.postgres, PG_SKIP]),
]
"""Parametrize a test over both dialects: ``@pytest.mark.parametrize("kind", KINDS)``."""


def bounded(timeout: float) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, T]]:
    """An asyncio scenario as a plain test function, bounded by ``timeout`` seconds (the suite
    runs in pytest-trio's ``trio_mode``, which only takes ``async def`` trio tests)."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            async def main() -> T:
                async with asyncio.timeout(timeout):
                    return await fn(*args, **kwargs)

            return asyncio.run(main())

        return wrapper

    return decorate


def new_user(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def token(user: str) -> str:
    return mint_token(SECRET.encode(), user, 3600.0, now=time.time())


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def figures(name: str, **values: Any) -> None:
    """Print a test's measurements (visible with ``-s`` or in the captured output of a failure)."""
    print(f"[figures] {name}: {json.dumps(values, default=str)}", flush=True)


# -- the database, read directly ----------------------------------------------------------------


def _maintenance_dsn() -> str:
    url = make_url(PG_URL).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


class Db(StoreReader):
    """One test database: its ``--db`` argument, read with ``sqlite3`` or ``asyncpg``."""

    def __init__(self, kind: str, arg: str, *, path: Path | None = None, dsn: str | None = None):
        super().__init__(kind, arg, path=path, dsn=dsn)
        self.name = path.name if path is not None else (dsn or "").rsplit("/", 1)[-1]

    async def problems(self, *, allow_live: bool = False) -> list[str]:
        """The invariants of every user's stored stream (see :func:`store_problems`)."""
        return store_problems(await self.events(), await self.runs(), allow_live=allow_live)


async def pg_admin(sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(_maintenance_dsn(), timeout=10)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(kind: str, tmp_path: Path) -> AsyncIterator[Db]:
    """A new, empty database for one test (PostgreSQL: ``netra_c_<hex>``, dropped after)."""
    if kind == "sqlite":
        path = tmp_path / f"cluster-{uuid.uuid4().hex[:6]}.db"
        yield Db("sqlite", str(path), path=path)
        return
    name = f"netra_c_{uuid.uuid4().hex[:12]}"
    try:
        await pg_admin(f"CREATE DATABASE {name}")
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"cannot create a PostgreSQL database at {PG_URL}: {exc}")
    base = make_url(PG_URL).set(database=name)
    try:
        yield Db(
            "postgres",
            base.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False),
            dsn=base.set(drivername="postgresql").render_as_string(hide_password=False),
        )
    finally:
        await pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- the servers --------------------------------------------------------------------------------


class Node:
    """One ``netra-actors serve`` process of the cluster."""

    def __init__(self, tmp_path: Path, db: Db, name: str, *args: str, ttl: float = 2.0) -> None:
        self.tmp_path = tmp_path
        self.db = db
        self.name = name
        self.port = free_port()
        self.args = ["--lease-ttl", str(ttl), "--node-id", name, *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp_path / f"node-{name}.log"
        self.node_id: str | None = None
        """The node's id in the cluster (``{name}-{pid}-{hex}``), from ``/healthz``."""

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> None:
        env = dict(os.environ, NETRA_HOME=str(self.tmp_path / "home"), PYTHONUNBUFFERED="1")
        env.pop("NETRA_SECRET", None)
        cmd = [
            sys.executable, "-m", "netra_actors._cli", "serve",
            "--port", str(self.port), "--db", self.db.arg, "--secret", SECRET,
            *self.args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)

    def wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                doc = self.health()
                self.node_id = doc["node"]
                return
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)  # polling the health endpoint, bounded by the deadline
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log()}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc

    async def ahealth(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.health)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return bytes(resp.read()).decode()

    def metric(self, name: str) -> float:
        """The sum of the samples of one metric (0.0 when absent)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.split()[-1])
        return total

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9, and reap."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """End the process whatever its state (SIGCONT first: a stopped process ignores TERM)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def owns(self, lease: tuple[str, int, float] | None) -> bool:
        return lease is not None and lease[0] == self.node_id


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path,
    db: Db,
    n: int,
    *args: str,
    ttl: float = 2.0,
    extra: dict[int, list[str]] | None = None,
) -> AsyncIterator[list[Node]]:
    """``n`` started nodes (``a``, ``b``, ``c``…) that are always stopped at the end (in
    threads, so that the sockets of this loop still answer the servers' closing handshakes)."""
    nodes = [
        Node(tmp_path, db, "abcdefgh"[i], *args, *(extra or {}).get(i, []), ttl=ttl)
        for i in range(n)
    ]
    try:
        nodes[0].spawn()
        await asyncio.to_thread(nodes[0].wait_healthy)  # the first one migrates the schema
        for node in nodes[1:]:
            node.spawn()
        await asyncio.gather(*(asyncio.to_thread(node.wait_healthy) for node in nodes[1:]))
        yield nodes
    finally:
        await asyncio.gather(*(asyncio.to_thread(node.stop) for node in nodes))


# -- a socket -----------------------------------------------------------------------------------


def events_of(frame: dict[str, Any]) -> list[dict[str, Any]]:
    if frame["type"] == "event":
        return [frame]
    if frame["type"] == "batch":
        return list(frame["events"])
    return []


def wire(event: dict[str, Any]) -> dict[str, Any]:
    """An event without its envelope's ``type`` (the shape :meth:`Db.events` returns)."""
    return {k: event[k] for k in ("seq", "run_id", "event", "ts", "data")}


class SockClosed(Exception):
    pass


class NoAnswer(AssertionError):
    """A command got no answer in time (the server never answered it)."""


class Sock:
    """One socket of a user on one node; every event it received, checked gapless on the fly."""

    def __init__(self, node: Node, user: str) -> None:
        self.node = node
        self.user = user
        self.events: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        """``time.time()`` when each event arrived."""
        self.violations: list[str] = []
        self.unmatched: list[dict[str, Any]] = []
        self.deltas: list[tuple[int, dict[str, Any]]] = []
        """``delta`` frames (``features: ["deltas"]``), each with the number of events received
        before it."""
        self.last = 0
        self.close_code: int | None = None
        self.ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Event()
        self._ids = 0

    @classmethod
    async def open(
        cls, node: Node, user: str, *, resume_from: int = 0, deltas: bool = False
    ) -> Sock:
        sock = cls(node, user)
        await sock.connect(resume_from, deltas=deltas)
        return sock

    async def connect(self, resume_from: int, *, deltas: bool = False) -> None:
        ws = await connect(self.node.ws_url, open_timeout=10, close_timeout=2, max_queue=None)
        hello: dict[str, Any] = {"type": "hello", "protocol": 1, "token": token(self.user)}
        hello["resume_from"] = resume_from
        if deltas:
            hello["features"] = ["deltas"]
        await ws.send(json.dumps(hello))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if welcome.get("type") != "welcome":
            await ws.close()
            raise RuntimeError(f"{self.user}@{self.node.name}: no welcome: {welcome}")
        self.last = resume_from
        self.ws = ws
        self._reader = asyncio.create_task(self._read(ws))

    @property
    def closed(self) -> bool:
        return self._reader is None or self._reader.done()

    async def close(self) -> None:
        if self.ws is not None and not self.closed:
            try:
                async with asyncio.timeout(5):
                    await self.ws.close()
            except TimeoutError:
                self.ws.transport.abort()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.shield(self._reader)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                now = time.time()
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind in ("event", "batch"):
                    for event in events_of(frame):
                        if event["seq"] != self.last + 1:
                            self.violations.append(
                                f"{self.user}@{self.node.name}: seq {event['seq']} after "
                                f"{self.last}"
                            )
                            continue
                        self.last = event["seq"]
                        self.events.append(wire(event))
                        self.received_at.append(now)
                    self._wake()
                    continue
                if kind == "delta":
                    self.deltas.append((len(self.events), frame))
                    self._wake()
                    continue
                fut = self._answers.pop(frame.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
                else:
                    self.unmatched.append(frame)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            for fut in self._answers.values():
                if not fut.done():
                    fut.set_exception(SockClosed(f"closed {ws.close_code}"))
                    fut.exception()
            self._answers.clear()
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], within: float = 20.0) -> None:
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    if self.closed:
                        raise SockClosed(f"{self.user}@{self.node.name} closed {self.close_code}")
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.user}@{self.node.name}: not reached within {within}s; last seq "
                f"{self.last}, tail {[(e['seq'], e['event']) for e in self.events[-5:]]}"
            ) from None

    async def wait_seq(self, seq: int, within: float = 20.0) -> None:
        await self.wait_until(lambda: self.last >= seq, within)

    def find(self, run_id: str | None, name: str, **data: Any) -> dict[str, Any] | None:
        for e in self.events:
            if (
                e["run_id"] == run_id
                and e["event"] == name
                and all(e["data"].get(k) == v for k, v in data.items())
            ):
                return e
        return None

    def state(self, run_id: str) -> str | None:
        state = None
        for e in self.events:
            if e["run_id"] == run_id and e["event"] == "run_state":
                state = e["data"]["state"]
        return state

    async def wait_event(
        self, run_id: str | None, name: str, within: float = 20.0, **data: Any
    ) -> dict[str, Any]:
        await self.wait_until(lambda: self.find(run_id, name, **data) is not None, within)
        found = self.find(run_id, name, **data)
        assert found is not None
        return found

    async def wait_ended(self, run_ids: Iterable[str], within: float = 30.0) -> None:
        ids = list(run_ids)
        await self.wait_until(lambda: all(self.state(r) in FINAL_STATES for r in ids), within)

    async def command(self, frame: dict[str, Any], within: float = 10.0) -> dict[str, Any]:
        if self.closed or self.ws is None:
            raise SockClosed(f"{self.user}@{self.node.name} closed {self.close_code}")
        self._ids += 1
        cid = f"c{self._ids}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[cid] = fut
        await self.ws.send(json.dumps({**frame, "id": cid}))
        try:
            async with asyncio.timeout(within):
                return await fut
        except TimeoutError:
            self._answers.pop(cid, None)
            raise NoAnswer(
                f"{self.user}@{self.node.name}: no answer to {frame} within {within}s"
            ) from None

    async def ack(self, frame: dict[str, Any], within: float = 10.0) -> dict[str, Any]:
        answer = await self.command(frame, within)
        assert answer["type"] == "ack", (self.node.name, frame, answer)
        return answer

    async def say(self, text: str, within: float = 10.0) -> str:
        run_id: str = (await self.ack({"type": "say", "text": text}, within))["run_id"]
        return run_id

    async def start(self, agent: str, input: Any = None, within: float = 10.0) -> str:
        answer = await self.ack({"type": "start_run", "agent": agent, "input": input}, within)
        run_id: str = answer["run_id"]
        return run_id

    async def get_runs(self) -> dict[str, dict[str, Any]]:
        answer = await self.command({"type": "get_runs", "limit": 1000})
        assert answer["type"] == "runs", answer
        return {r["run_id"]: r for r in answer["runs"]}


# -- the invariants of a stored stream ----------------------------------------------------------


def store_problems(
    events: dict[str, list[dict[str, Any]]],
    runs: dict[tuple[str, str], dict[str, Any]],
    *,
    allow_live: bool = False,
) -> list[str]:
    """Per user: seq is 1..N; per run: the ``run_state`` chain starts at ``pending`` and follows
    legal transitions only; each ``run_rolled_back`` is followed by a state before another
    rollback; ``agent_started`` attempts are 1, 2, … (one per attempt: never two nodes running
    one attempt); the runs table has the last state; (unless ``allow_live``) nothing is live."""
    problems: list[str] = []
    for user, evs in events.items():
        seqs = [e["seq"] for e in evs]
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"{user}: seq not gapless: {seqs}")
        states: dict[str, RunState] = {}
        awaiting: set[str] = set()
        attempts: dict[str, list[int]] = {}
        for e in evs:
            run_id, name, data = e["run_id"], e["event"], e["data"]
            if run_id is None:
                continue
            if name == "agent_started":
                attempts.setdefault(run_id, []).append(data.get("attempt"))
            if name == "run_rolled_back":
                if run_id in awaiting:
                    problems.append(f"{user} seq {e['seq']}: a second rollback before a state")
                awaiting.add(run_id)
                continue
            if name != "run_state":
                if run_id in states and not states[run_id].is_live:
                    problems.append(f"{user} seq {e['seq']}: {name} after {run_id} ended")
                continue
            awaiting.discard(run_id)
            target = RunState(data["state"])
            if run_id not in states:
                if data["previous"] is not None or target is not RunState.PENDING:
                    problems.append(f"{user} seq {e['seq']}: {run_id} starts with {data}")
            else:
                current = states[run_id]
                if data["previous"] != current.value or target not in TRANSITIONS[current]:
                    problems.append(f"{user} seq {e['seq']}: illegal {current.value} -> {data}")
            states[run_id] = target
        if awaiting:
            problems.append(f"{user}: rollback without a following state: {sorted(awaiting)}")
        for run_id, got in attempts.items():
            if got != list(range(1, len(got) + 1)):
                problems.append(f"{user}: run {run_id} agent_started attempts {got}")
        for run_id, st in states.items():
            row = runs.get((user, run_id))
            if row is None:
                problems.append(f"{user}: run {run_id} has events but no row")
            elif row["state"] != st.value:
                problems.append(f"{user}: run {run_id} row {row['state']} != events {st.value}")
            if st.is_live and not allow_live:
                problems.append(f"{user}: run {run_id} left live ({st.value})")
    return problems


def rollbacks(events: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["run_id"] == run_id and e["event"] == "run_rolled_back"]


def final_state(events: list[dict[str, Any]], run_id: str) -> str | None:
    state = None
    for e in events:
        if e["run_id"] == run_id and e["event"] == "run_state":
            state = e["data"]["state"]
    return state


async def wait_for(
    predicate: Callable[[], Coroutine[Any, Any, bool]], within: float, what: str, step: float = 0.05
) -> float:
    """Poll an async predicate until true; the seconds it took (AssertionError past ``within``)."""
    start = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(step)


# -- PostgreSQL: a node's backends --------------------------------------------------------------


def tcp_ports_to(pid: int, remote_port: int) -> set[int]:
    """Local ports of ``pid``'s TCP connections to ``remote_port`` (from ``/proc``)."""
    inodes = set()
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        with contextlib.suppress(OSError):
            target = os.readlink(f"{base}/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def listener_backends(db: Db, node: Node) -> list[int]:
    """The PostgreSQL backend pids of ``node``'s listener connection: its connections whose last
    statement was a ``LISTEN`` or the listener's health check ``SELECT 1`` (the writer's last
    statement is a COMMIT, a released pool connection's the pool's reset)."""
    ports = tcp_ports_to(node.pid, make_url(PG_URL).port or 5432)
    rows = await pg_admin(
        "SELECT pid, client_port, query FROM pg_stat_activity "
        f"WHERE datname = '{db.name}' AND pid <> pg_backend_pid()"
    )
    return [
        pid
        for pid, port, query in rows
        if port in ports and (query.startswith("LISTEN") or query.strip() == "SELECT 1")
    ]
