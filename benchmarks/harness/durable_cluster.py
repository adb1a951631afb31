"""Servers that lose their processes, and their database read directly.

* :class:`Node` is one ``netra-actors serve`` process (the CLI's own ``serve``, with the agents
  of :mod:`.durable_agents`: ``python -m benchmarks.harness.durable_cluster ARGS``) on a fixed
  loopback port, so that clients reconnect to the same address after a restart. It can be killed
  (``kill -9``), paused (SIGSTOP … SIGCONT), stopped (SIGTERM: the drain) and started again; each
  start gets a new process, so a new epoch.
* :class:`StoreReader` reads the events and runs of a SQLite file (``sqlite3``) or a PostgreSQL
  database (``asyncpg``), never through netra's code.
* :func:`database` is a fresh store for one measurement: a SQLite file, or a PostgreSQL database
  created and dropped (:mod:`.postgres`); :class:`~.postgres.PgUnavailable` when there is none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .durable_agents import AGENTS, EFFECTS_ENV
from .postgres import PgServer, scratch_database
from .processes import child_env, free_port, serve_with
from .report import BenchError

SECRET = "bench-durable-secret-0123456789"
PG_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


class StoreReader:
    """One database, read directly: ``arg`` is what ``serve --db`` takes."""

    def __init__(
        self, kind: str, arg: str, *, path: str | Path | None = None, dsn: str | None = None
    ) -> None:
        self.kind = kind
        self.arg = arg
        self.path = path
        self.dsn = dsn

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of one parameterless query."""
        if self.kind == "sqlite":
            return await asyncio.to_thread(self._sqlite, sql)
        import asyncpg

        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    def _sqlite(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(str(self.path), timeout=30)
        try:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()

    async def events(self) -> dict[str, list[dict[str, Any]]]:
        """Every committed event, per user, in the wire shape."""
        rows = await self.fetch(
            "SELECT user_id, seq, run_id, event, ts, data FROM netra_events ORDER BY user_id, seq"
        )
        out: dict[str, list[dict[str, Any]]] = {}
        for user, seq, run_id, name, ts, data in rows:
            out.setdefault(user, []).append(
                {"seq": seq, "run_id": run_id, "event": name, "ts": ts, "data": json.loads(data)}
            )
        return out

    async def runs(self) -> dict[tuple[str, str], dict[str, Any]]:
        rows = await self.fetch("SELECT user_id, run_id, agent, state, attempt FROM netra_runs")
        return {(u, r): {"agent": a, "state": s, "attempt": n} for u, r, a, s, n in rows}

    async def heads(self) -> dict[str, int]:
        rows = await self.fetch("SELECT user_id, max(seq) FROM netra_events GROUP BY user_id")
        return {u: int(s) for u, s in rows}

    async def leases(self) -> dict[str, tuple[str, int, float]]:
        """user → (node, epoch, expires_at)."""
        rows = await self.fetch("SELECT user_id, node, epoch, expires_at FROM netra_leases")
        return {u: (n, int(e), float(x)) for u, n, e, x in rows}

    async def now(self) -> float:
        """The database's clock (the one leases are counted on)."""
        if self.kind == "sqlite":
            sql = "SELECT (julianday('now') - 2440587.5) * 86400.0"
        else:
            sql = "SELECT extract(epoch from clock_timestamp())::float8"
        return float((await self.fetch(sql))[0][0])


@contextlib.contextmanager
def database(kind: str, directory: Path, pg_url: str | None = None) -> Iterator[StoreReader]:
    """A fresh store: a SQLite file in ``directory``, or a scratch PostgreSQL database."""
    if kind == "sqlite":
        path = directory / "durable.db"
        yield StoreReader("sqlite", str(path), path=str(path))
        return
    server = PgServer.connect(pg_url or PG_DEFAULT)  # PgUnavailable: the caller skips
    with scratch_database(server, "netra_chaos_") as name:
        yield StoreReader("postgres", server.sa_url(name), dsn=server.dsn(name))


class Node:
    """One server process of a cluster, on a fixed port, that faults can hit."""

    def __init__(
        self,
        directory: Path,
        store: StoreReader,
        name: str,
        *,
        ttl: float,
        effects: Path,
        shutdown_timeout: float = 5.0,
        extra: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.port = free_port()
        self.effects = effects
        self.log_path = directory / f"node-{name}.log"
        self.shutdown_timeout = shutdown_timeout
        self.args = [
            "--port", str(self.port), "--db", store.arg, "--secret", SECRET,
            "--lease-ttl", str(ttl), "--node-id", name,
            "--shutdown-timeout", str(shutdown_timeout), "--log-level", "warning", *extra,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts: list[float] = []
        """Seconds from each spawn to a healthy ``/healthz``."""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def up(self) -> bool:
        """Running and not paused: a client may connect."""
        return self.proc is not None and self.proc.poll() is None and not self.paused

    def start(self, timeout: float = 60.0) -> float:
        """Spawn and wait until healthy; the seconds it took."""
        env = child_env()
        env[EFFECTS_ENV] = str(self.effects)
        env.pop("NETRA_SECRET", None)
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        self.paused = False
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"node {self.name} exited: {self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                self.health()
                took = time.monotonic() - started
                self.starts.append(took)
                return took
            time.sleep(0.05)  # polling /healthz, bounded by the deadline
        raise BenchError(f"node {self.name} did not become healthy: {self.log_tail()}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
            doc: dict[str, Any] = json.loads(r.read())
            return doc

    def kill(self) -> None:
        """``kill -9`` and reap."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.paused = False

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def terminate(self) -> int | None:
        """SIGTERM (the drain) and wait for the exit (``kill -9`` if it overstays)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.shutdown_timeout + 20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.paused = False
        return self.proc.returncode

    def stop(self) -> None:
        """End it whatever its state (at the end of a measurement)."""
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(serve_with(AGENTS, sys.argv[1:]))
