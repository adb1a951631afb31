"""``e2e``: events delivered over loopback WebSockets to clients in separate processes.

Per repeat, one server process (:mod:`._e2e_server`: the real gateway and runtime on a fresh
SQLite file, with the demo agents and the ``bench_e2e`` agent) and, per phase, fresh client
processes (:mod:`._e2e_client`, the ``websockets`` library) that open one socket per user, say
``hello`` with a token minted for that user, then — all at once — start one run each and read every
event of it. Each event's ``seq`` is checked; afterwards the events of the phase's users are counted
in the server's SQLite file: delivered must equal committed.

Phases:

* *max load*, for every number of sockets: each run emits its events as fast as it can (units of
  ``every`` events); events/s = all events read by all clients / (last end - first start).
* *half of max load*: at the socket count that reached the highest rate, the runs are paced to
  half of that rate for a few seconds (each run starts at a random offset within one interval, so
  the load is steady rather than synchronized bursts); p50/p99 of emit→client latency.
* *one idle user*: one socket, one event per unit of work every 20 ms; p50/p99 emit→client.

emit→client latency = the client's receive time - the emit time the agent wrote into the event
(wall clock; same machine). It includes staging, the commit, the gateway and the client.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import tempfile
import time
from typing import IO, Any

from netra_actors.gateway import mint_token

from ._common import (
    BenchError,
    Column,
    Goal,
    Options,
    Progress,
    Report,
    Row,
    child_env,
    median_rows,
    module_command,
    percentile,
    rate,
)
from ._throughput import TEXT, users_list

NAME = "e2e"
TITLE = "events over loopback WebSockets to websockets clients in separate processes"
RUNTIME_EVENTS_PER_RUN = 7


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


class Server:
    """The e2e server as a subprocess."""

    def __init__(self, db: str, log: IO[str]) -> None:
        self.secret = secrets.token_urlsafe(24)
        self.db = db
        self._log = log
        self.proc = subprocess.Popen(
            module_command("benchmarks._e2e_server", "--db", db, "--secret", self.secret),
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise BenchError(f"the e2e server did not start: {line!r} {self.log_tail()}")
        self.url = f"ws://127.0.0.1:{int(line.split()[1])}/ws"

    def token(self, user: str) -> str:
        return mint_token(self.secret.encode(), user, 3600.0, now=time.time())

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def log_tail(self) -> str:
        try:
            self._log.flush()
            with open(self._log.name) as f:
                return f.read()[-2000:]
        except (OSError, AttributeError):
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _committed(db: str, prefix: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        n = conn.execute(
            "SELECT COUNT(*) FROM netra_events WHERE user_id LIKE ?", (prefix + "%",)
        ).fetchone()[0]
    conn.close()
    return int(n)


def run_phase(
    server: Server,
    prefix: str,
    sockets: int,
    run_input: dict[str, Any],
    clients: int,
    progress: Progress,
) -> Row:
    """One phase: ``sockets`` users, one socket and one run each, over ``clients`` processes."""
    users = [f"{prefix}{i:05d}" for i in range(sockets)]
    tokens = [server.token(u) for u in users]
    n = max(1, min(clients, sockets))
    chunks = [tokens[i::n] for i in range(n)]
    procs = []
    for chunk in chunks:
        proc = subprocess.Popen(
            module_command("benchmarks._e2e_client"),
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"url": server.url, "tokens": chunk, "input": run_input}))
        proc.stdin.write("\n")
        proc.stdin.flush()
        procs.append(proc)
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                _, err = proc.communicate(timeout=30)
                raise BenchError(f"an e2e client could not connect: {err[-2000:]}")
        cpu0 = server.cpu()
        t0 = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            if proc.returncode != 0 or not out.strip():
                raise BenchError(f"an e2e client failed ({proc.returncode}): {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        wall = time.time() - t0
        cpu = server.cpu() - cpu0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    progress.done()
    delivered = sum(r["events"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    completed = sum(r["completed"] for r in results)
    committed = _committed(server.db, prefix)
    if errors or completed != sockets or delivered != committed:
        raise BenchError(
            f"e2e {prefix}: delivered {delivered}, committed {committed}, runs completed "
            f"{completed} of {sockets}; errors: {errors[:3]} {server.log_tail()[-500:]}"
        )
    latencies = [x for r in results for x in r["latencies"]]
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    seconds = end - start
    return {
        "sockets": sockets,
        "clients": n,
        "events": delivered,
        "committed": committed,
        "seconds": seconds,
        "events_per_s": rate(delivered, seconds),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "server_cpu": cpu / wall if wall > 0 else 0.0,
        "verified": True,
    }


def events_per_run(sockets: int, quick: bool) -> int:
    """Enough events per run that each phase lasts a measurable time."""
    if quick:
        return max(20, 1_000 // sockets)
    return max(100, 20_000 // sockets)


def run_once(
    socket_counts: list[int],
    every: int,
    clients: int,
    quick: bool,
    fixed_events: int | None,
    progress: Progress,
    directory: str | None,
    repeat: int,
) -> list[Row]:
    """One repeat: the max-load phases, then half load, then one idle user."""
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="netra-bench-", dir=directory) as tmp,
        open(os.path.join(tmp, "server.log"), "w") as log,
    ):
        server = Server(os.path.join(tmp, "e2e.db"), log)
        try:
            for s in socket_counts:
                progress.step(f"e2e max load, {s} socket(s), run {repeat}")
                events = fixed_events or events_per_run(s, quick)
                row = run_phase(
                    server,
                    f"max{s}-",
                    s,
                    {"events": events, "every": every, "text": TEXT},
                    clients,
                    progress,
                )
                row.update(case=f"max load, {s} sockets", mode="max load")
                rows.append(row)
            best = max(rows, key=lambda r: r["events_per_s"])
            s = best["sockets"]
            target = best["events_per_s"] / 2
            per_user = target / s
            duration = 1.0 if quick else 5.0
            interval = every / per_user
            events = max(every, int(per_user * duration) // every * every)
            progress.step(f"e2e half of max load ({target:,.0f} events/s over {s} sockets)")
            row = run_phase(
                server,
                "half-",
                s,
                {"events": events, "every": every, "interval": interval, "text": TEXT},
                clients,
                progress,
            )
            row.update(case="half of max load", mode="half of max load", offered_per_s=target)
            rows.append(row)
            progress.step("e2e one idle user")
            idle_events = 50 if quick else 250
            row = run_phase(
                server,
                "idle-",
                1,
                {"events": idle_events, "every": 1, "interval": 0.02, "text": TEXT},
                1,
                progress,
            )
            row.update(case="one idle user", mode="one idle user")
            rows.append(row)
        finally:
            server.stop()
    return rows


COLUMNS = [
    Column(key="mode", title="phase"),
    Column(key="sockets", title="sockets"),
    Column(key="events", title="events delivered"),
    Column(key="events_per_s", title="events/s"),
    Column(key="p50_ms", title="emit->client p50 ms", fmt="{:,.2f}"),
    Column(key="p99_ms", title="p99 ms", fmt="{:,.2f}"),
    Column(key="server_cpu", title="server CPU", fmt="{:.0%}"),
    Column(key="verified", title="verified"),
]


def run(options: Options, progress: Progress) -> Report:
    """The scenario."""
    if importlib.util.find_spec("websockets") is None:
        raise BenchError(
            "e2e needs the websockets package (a dev extra): pip install -e '.[dev]' or ./run"
        )
    socket_counts = users_list(options, [1, 10, 100, 1000], [1, 20])
    every: int = options.extra.get("every") or 10
    clients: int = options.extra.get("clients") or 2
    directory: str | None = options.extra.get("dir")
    fixed: int | None = options.extra.get("events")
    runs = []
    for i in range(options.repeat):
        runs.append(
            run_once(
                socket_counts,
                every,
                clients,
                options.quick,
                fixed,
                progress,
                directory,
                i + 1,
            )
        )
    rows = median_rows(runs, "case")
    max_rate = max((r["events_per_s"] for r in rows if r["mode"] == "max load"), default=None)
    half = next((r for r in rows if r["mode"] == "half of max load"), None)
    idle = next((r for r in rows if r["mode"] == "one idle user"), None)
    return Report(
        scenario=NAME,
        title=TITLE,
        options=options,
        columns=COLUMNS,
        rows=rows,
        runs=runs,
        goals=[
            Goal(
                text=">= 50,000 events/s delivered (best socket count)",
                measured=max_rate,
                target=50_000,
                unit=" events/s",
            ),
            Goal(
                text="one idle user p50 <= 1 ms",
                measured=idle["p50_ms"] if idle else None,
                target=1,
                higher_is_better=False,
                unit=" ms",
            ),
            Goal(
                text="one idle user p99 <= 5 ms",
                measured=idle["p99_ms"] if idle else None,
                target=5,
                higher_is_better=False,
                unit=" ms",
            ),
            Goal(
                text="p99 emit->client <= 20 ms at half of the maximum load",
                measured=half["p99_ms"] if half else None,
                target=20,
                higher_is_better=False,
                unit=" ms",
            ),
        ],
        notes=[
            f"server: the real gateway + runtime in its own process; clients: {clients} "
            "processes with the websockets library, one socket and one user each",
            f"max load: one run per socket, {every} events per unit, no pauses; the clients "
            "share the machine's cores with the server (server CPU = its CPU time / wall time)",
            "half of max load: the best max-load socket count, runs paced to half its rate "
            "with random start offsets (steady load, not synchronized bursts)",
            "delivered == committed checked per phase against the server's SQLite file",
        ],
    )
