"""``e2e``: events delivered over loopback WebSockets to clients in separate processes.

Per repeat, one server process and, per phase, fresh client processes (:mod:`._e2e_client`, the
``websockets`` library) that open one socket per user, say ``hello`` with a token minted for that
user, then — all at once — start one run each and read every event of it. Each event's ``seq`` is
checked; afterwards the events of the phase's users are counted in the server's SQLite file:
delivered must equal committed.

Servers (``--server``):

* ``gateway`` (the default): :mod:`._e2e_server`, the real trio gateway and runtime on a fresh
  SQLite file, with the demo agents and the ``bench_e2e`` agent;
* ``asgi``: uvicorn (``python -m uvicorn``, ``--loop uvloop`` by default) serving
  :mod:`._e2e_asgi` — :class:`netra_actors.asgi.NetraApp` mounted in FastAPI, with the same agents
  and configuration on a fresh SQLite file;
* ``both``: one of each per repeat, one after the other (who goes first alternates per repeat),
  every phase on both, plus *asgi/gateway* rows: asgi / gateway of each figure within the repeat;
* ``floor``: :mod:`._e2e_floor`, a measuring floor, not a product: per socket one trio task that
  INSERTs and COMMITs each event into a ``sqlite3`` WAL file, then sends its frame (no writer
  thread, no actors); the *one idle user* phase only;
* ``gateway+floor``: the gateway (every phase) and the floor (one idle user) per repeat, who goes
  first alternating, plus a *gateway/floor* row: how many times the floor's idle latency the
  gateway's is, within the repeat.

Phases:

* *max load*, for every number of sockets: each run emits its events as fast as it can (units of
  ``every`` events); events/s = all events read by all clients / (last end - first start).
* *half of max load*: at the socket count that reached this server's highest rate, the runs are
  paced to half of that rate for a few seconds (each run starts at a random offset within one
  interval, so the load is steady rather than synchronized bursts); p50/p99 of emit→client latency.
* *one idle user*: one socket, one event per unit of work every 20 ms; p50/p99 emit→client.

emit→client latency = the client's receive time - the emit time the agent wrote into the event
(wall clock; same machine). It includes staging, the commit, the gateway and the client.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import time
from collections.abc import Sequence
from typing import IO, Any

import attrs

from ._e2e_asgi import DB_ENV, SECRET_ENV
from .harness.agents import paced_input
from .harness.clients import ClientProcesses, deal, require_websockets, user_token
from .harness.emitter import TEXT
from .harness.inprocess import scratch_dir, sqlite_counts
from .harness.processes import (
    ServerProcess,
    child_env,
    module_command,
    start_announced,
    start_polled,
)
from .harness.progress import Progress, alternate
from .harness.report import BenchError, Column, Goal, Options, Report, Row
from .harness.stats import latency_ms, rate, ratio

TITLE = "events over loopback WebSockets to websockets clients in separate processes"

GATEWAY = "gateway"
ASGI = "asgi"
FLOOR = "floor"
RATIO = "asgi/gateway"
FLOOR_RATIO = "gateway/floor"
RATIOS = frozenset({RATIO, FLOOR_RATIO})
#: ``--server`` choices that run two servers side by side, and which.
PAIRS = {"both": (GATEWAY, ASGI), "gateway+floor": (GATEWAY, FLOOR)}


class Server:
    """An e2e server of ``kind`` as a subprocess, on its SQLite file, with its token secret:
    the trio gateway (:mod:`._e2e_server`), the floor (:mod:`._e2e_floor`), or uvicorn serving
    :mod:`._e2e_asgi` (NetraApp mounted in FastAPI) on a port picked here, ready once
    ``/healthz`` answers."""

    def __init__(self, kind: str, db: str, log: IO[str], loop: str, ws: str) -> None:
        self.kind = kind
        self.db = db
        self.secret = secrets.token_urlsafe(24)
        self.process: ServerProcess
        if kind == ASGI:
            env = child_env()
            env.update({DB_ENV: db, SECRET_ENV: self.secret, "PYTHONUNBUFFERED": "1"})
            self.process = start_polled(
                lambda port: uvicorn_command(port, loop, ws),
                log,
                "the e2e ASGI server (uvicorn)",
                env=env,
            )
        else:
            module = "benchmarks._e2e_floor" if kind == FLOOR else "benchmarks._e2e_server"
            command = module_command(module, "--db", db, f"--secret={self.secret}")
            self.process = start_announced(
                command,
                log,
                r"^PORT (\d+)",
                f"the e2e {kind} server",
                stop_signal=signal.SIGINT,
                stop_timeout=20,
            )


def uvicorn_command(port: int, loop: str, ws: str) -> list[str]:
    """uvicorn serving :func:`._e2e_asgi.create_app` on ``port``."""
    return module_command(
        "uvicorn",
        "--factory",
        "benchmarks._e2e_asgi:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        loop,
        "--ws",
        ws,
        "--no-access-log",
        "--log-level",
        "warning",
    )


def _committed(db: str, prefix: str) -> int:
    sql = "SELECT COUNT(*) FROM netra_events WHERE user_id LIKE ?"
    (n,) = sqlite_counts(db, sql, prefix + "%")
    return n


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
    tokens = [user_token(server.secret, u) for u in users]
    jobs = [
        {"url": server.process.url, "tokens": chunk, "input": run_input}
        for chunk in deal(tokens, clients)
    ]
    with ClientProcesses.of("benchmarks._e2e_client", jobs=jobs, what="an e2e client") as fleet:
        fleet.wait_ready()
        cpu0 = server.process.cpu()
        t0 = fleet.go()
        results = fleet.results(600)
        wall = time.time() - t0
        cpu = server.process.cpu() - cpu0
    progress.done()
    delivered = sum(r["events"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    completed = sum(r["completed"] for r in results)
    committed = _committed(server.db, prefix)
    if errors or completed != sockets or delivered != committed:
        raise BenchError(
            f"e2e {prefix}: delivered {delivered}, committed {committed}, runs completed "
            f"{completed} of {sockets}; errors: {errors[:3]} {server.process.log_tail()[-500:]}"
        )
    latencies = [x for r in results for x in r["latencies"]]
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    seconds = end - start
    return {
        "sockets": sockets,
        "clients": len(jobs),
        "events": delivered,
        "committed": committed,
        "seconds": seconds,
        "events_per_s": rate(delivered, seconds),
        **latency_ms(latencies),
        "server_cpu": cpu / wall if wall > 0 else 0.0,
        "cpu_us_per_event": cpu / delivered * 1e6 if delivered else 0.0,
        "verified": True,
    }


def events_per_run(sockets: int, quick: bool) -> int:
    """Enough events per run that each phase lasts a measurable time."""
    if quick:
        return max(20, 1_000 // sockets)
    return max(100, 20_000 // sockets)


def run_once(
    kinds: Sequence[str], options: Options, progress: Progress, repeat: int, loop: str, ws: str
) -> dict[str, list[Row]]:
    """One repeat: the max-load phases, then half load, then one idle user, on every server of
    ``kinds`` (each phase on each server in turn, in that order; all of them run meanwhile).

    Half load is at the best max-load socket count of the server, paced to half its rate; with
    two servers, both get the gateway's (the same load, so that their latencies compare). The
    floor runs the one idle user phase only."""
    every, clients, quick = options.every, options.clients, options.quick
    socket_counts = options.users([1, 10, 100, 1000], [1, 20])
    rows: dict[str, list[Row]] = {kind: [] for kind in kinds}
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        for kind in kinds:
            tmp = stack.enter_context(scratch_dir(options.directory))
            log = stack.enter_context(open(os.path.join(tmp, "server.log"), "w"))
            progress.step(f"e2e {kind}: starting the server, run {repeat}")
            servers[kind] = Server(kind, os.path.join(tmp, "e2e.db"), log, loop, ws)
            stack.callback(servers[kind].process.stop)

        def phase(kind: str, prefix: str, sockets: int, run_input: dict[str, Any]) -> Row:
            return run_phase(servers[kind], prefix, sockets, run_input, clients, progress)

        loaded = [kind for kind in kinds if kind != FLOOR]
        for s in socket_counts if loaded else []:
            events = options.events or events_per_run(s, quick)
            for kind in loaded:
                progress.step(f"e2e {kind} max load, {s} socket(s), run {repeat}")
                row = phase(kind, f"max{s}-", s, {"events": events, "every": every, "text": TEXT})
                row.update(mode="max load", case=f"max load, {s} sockets")
                rows[kind].append(row)
        bests = {kind: max(rows[kind], key=_rate) for kind in loaded}
        for kind in loaded:
            best = bests[GATEWAY if len(loaded) > 1 else kind]
            s = best["sockets"]
            target = best["events_per_s"] / 2
            paced = paced_input(target, s, every, 1.0 if quick else 5.0, TEXT)
            progress.step(f"e2e {kind} half of max load ({target:,.0f} events/s over {s} sockets)")
            row = phase(kind, "half-", s, paced)
            row.update(mode="half of max load", case="half of max load", offered_per_s=target)
            rows[kind].append(row)
        idle_events = 50 if quick else 250
        for kind in kinds:
            progress.step(f"e2e {kind} one idle user")
            row = run_phase(
                servers[kind],
                "idle-",
                1,
                {"events": idle_events, "every": 1, "interval": 0.02, "text": TEXT},
                1,
                progress,
            )
            row.update(mode="one idle user", case="one idle user")
            rows[kind].append(row)
    for kind, mine in rows.items():
        for row in mine:
            row["server"] = kind
            row["case"] = f"{row['case']} | {kind}"
    return rows


#: The figures an asgi/gateway row divides (the others are None there).
RATIO_KEYS = ("events_per_s", "p50_ms", "p99_ms", "server_cpu", "cpu_us_per_event")


def ratio_row(top: Row, bottom: Row, mode: str, case: str, name: str = RATIO) -> Row:
    """A ratio row ``name`` (*asgi/gateway*, *gateway/floor*): every figure of ``RATIO_KEYS``
    as top / bottom (asgi / gateway, gateway / floor)."""
    row: Row = {
        "server": name,
        "mode": mode,
        "case": f"{case} | {name}",
        "sockets": top["sockets"] if top["sockets"] == bottom["sockets"] else None,
        "offered_per_s": bottom.get("offered_per_s"),
        "events": None,
        "verified": bool(top["verified"] and bottom["verified"]),
    }
    for key in RATIO_KEYS:
        row[key] = ratio(top.get(key), bottom.get(key))
    return row


def floor_side_by_side(by_server: dict[str, list[Row]]) -> list[Row]:
    """One repeat of ``gateway+floor``: the gateway's rows, then the floor's one idle user and
    the *gateway/floor* row (gateway / floor)."""
    gateway, (floor,) = by_server[GATEWAY], by_server[FLOOR]
    idle = next(r for r in gateway if r["mode"] == floor["mode"])
    case = floor["case"].rsplit(" | ", 1)[0]
    return [*gateway, floor, ratio_row(idle, floor, floor["mode"], case, FLOOR_RATIO)]


def side_by_side(by_server: dict[str, list[Row]]) -> list[Row]:
    """One repeat of ``both``: per phase the gateway's row, the adapter's and their ratio; after
    the max-load phases, the ratio of the best max-load rates (each at its best socket count).
    (``gateway+floor``: :func:`floor_side_by_side`.)"""
    if FLOOR in by_server:
        return floor_side_by_side(by_server)
    gateway, asgi = by_server[GATEWAY], by_server[ASGI]
    rows: list[Row] = []
    for g, a in zip(gateway, asgi, strict=True):
        rows += [g, a, ratio_row(a, g, g["mode"], g["case"].rsplit(" | ", 1)[0])]
    best_g = max((r for r in gateway if r["mode"] == "max load"), key=_rate)
    best_a = max((r for r in asgi if r["mode"] == "max load"), key=_rate)
    best = ratio_row(best_a, best_g, "max load (best)", "max load, best socket count")
    # Rates at each one's best socket count; their latencies are in the per-count rows.
    best.update(
        sockets=None,
        p50_ms=None,
        p99_ms=None,
        gateway_sockets=best_g["sockets"],
        asgi_sockets=best_a["sockets"],
    )
    after = max(i for i, r in enumerate(rows) if r["mode"] == "max load") + 1
    rows.insert(after, best)
    return rows


def _rate(row: Row) -> float:
    value: float = row["events_per_s"]
    return value


@attrs.frozen(kw_only=True)
class RatioColumn(Column):
    """A column that shows the figures of the ratio rows (asgi/gateway, gateway/floor) as
    ratios (``0.85x``)."""

    def render(self, row: Row) -> str:
        value = row.get(self.key)
        if row.get("server") in RATIOS and isinstance(value, float):
            return f"{value:.2f}x"
        return Column.render(self, row)


COLUMNS = [
    Column(key="server", title="server"),
    Column(key="mode", title="phase"),
    Column(key="sockets", title="sockets"),
    Column(key="events", title="events delivered"),
    RatioColumn(key="events_per_s", title="events/s"),
    RatioColumn(key="p50_ms", title="emit->client p50 ms", fmt="{:,.2f}"),
    RatioColumn(key="p99_ms", title="p99 ms", fmt="{:,.2f}"),
    RatioColumn(key="server_cpu", title="server CPU", fmt="{:.0%}"),
    RatioColumn(key="cpu_us_per_event", title="server CPU us/event", fmt="{:,.1f}"),
    Column(key="verified", title="verified"),
]


def _server_goals(rows: list[Row], kind: str, labelled: bool) -> list[Goal]:
    """The issue's goals for one server's rows (``labelled``: the server named in each)."""
    mine = [r for r in rows if r["server"] == kind]
    max_rate = max((r["events_per_s"] for r in mine if r["mode"] == "max load"), default=None)
    half = next((r for r in mine if r["mode"] == "half of max load"), None)
    idle = next((r for r in mine if r["mode"] == "one idle user"), None)
    tag = f" ({kind})" if labelled else ""
    return [
        Goal.at_least(
            f">= 50,000 events/s delivered (best socket count){tag}", max_rate, 50_000, " events/s"
        ),
        Goal.at_most(f"one idle user p50 <= 1 ms{tag}", idle["p50_ms"] if idle else None, 1, " ms"),
        Goal.at_most(f"one idle user p99 <= 5 ms{tag}", idle["p99_ms"] if idle else None, 5, " ms"),
        Goal.at_most(
            f"p99 emit->client <= 20 ms at half of the maximum load{tag}",
            half["p99_ms"] if half else None,
            20,
            " ms",
        ),
    ]


#: The adapter's goal: >= 0.8x the gateway; for a latency, <= 1/0.8 = 1.25x the gateway's.
ADAPTER_SPEED = 0.8


def ratio_goals(rows: list[Row]) -> list[Goal]:
    """asgi/gateway: the best max-load rate >= 0.8x, idle and half-load latencies <= 1.25x."""
    ratios = {r["case"].rsplit(" | ", 1)[0]: r for r in rows if r["server"] == RATIO}
    best = ratios.get("max load, best socket count")
    half = ratios.get("half of max load")
    idle = ratios.get("one idle user")
    slower = 1 / ADAPTER_SPEED
    goals = [
        Goal.at_least(
            f"asgi max events/s >= {ADAPTER_SPEED}x the gateway's (best socket count each)",
            best["events_per_s"] if best else None,
            ADAPTER_SPEED,
            "x",
        )
    ]
    for label, row in (("one idle user", idle), ("half of max load", half)):
        for p in ("p50", "p99"):
            goals.append(
                Goal.at_most(
                    f"asgi {label} {p} <= {slower:.2f}x the gateway's ({ADAPTER_SPEED}x its speed)",
                    row[f"{p}_ms"] if row else None,
                    slower,
                    "x",
                )
            )
    return goals


def run(options: Options, progress: Progress) -> Report:
    """The scenario."""
    require_websockets(options.scenario)
    choice: str = options.extra.get("server") or GATEWAY
    kinds = PAIRS.get(choice, (choice,))
    if ASGI in kinds:
        missing = [m for m in ("uvicorn", "fastapi") if importlib.util.find_spec(m) is None]
        if missing:
            raise BenchError(
                f"e2e --server {choice} needs {' and '.join(missing)} (the asgi or dev extra): "
                "pip install -e '.[dev]' or ./run"
            )
    loop: str = options.extra.get("loop") or "uvloop"
    ws: str = options.extra.get("ws") or "websockets-sansio"
    clients = options.clients
    every = options.every
    runs = []
    for i in range(options.repeat):
        by_server = run_once(alternate(kinds, i), options, progress, i + 1, loop, ws)
        runs.append(side_by_side(by_server) if len(kinds) == 2 else by_server[choice])
    report = Report.of(TITLE, options, COLUMNS, runs, "case")
    rows = report.rows
    goals = [
        g
        for kind in kinds
        if kind != FLOOR  # a floor has no goals: it is what the others are measured against
        for g in _server_goals(rows, kind, labelled=choice != GATEWAY)
    ]
    notes = [
        f"clients: {clients} processes with the websockets library, one socket and one user each"
    ]
    if GATEWAY in kinds:
        notes.append(
            "gateway: the real trio gateway + runtime in its own process (benchmarks/"
            "_e2e_server.py: what netra-actors serve runs, plus the bench_e2e agent)"
        )
    if ASGI in kinds:
        notes.append(
            f"asgi: uvicorn (--loop {loop} --ws {ws}, python -m uvicorn in its own process) "
            "serving NetraApp "
            "mounted at / of a FastAPI app (benchmarks/_e2e_asgi.py): the same agents, runtime "
            "and gateway configuration, a fresh SQLite file"
        )
    if FLOOR in kinds:
        notes.append(
            "floor: a measuring floor, not a product (benchmarks/_e2e_floor.py): per socket one "
            "trio task that, per unit, INSERTs the events into a sqlite3 WAL file "
            "(synchronous=NORMAL, the store's netra_events schema) and COMMITs in its own thread "
            "(no writer thread, no actors), then sends the gateway's frames; one idle user only"
        )
    if len(kinds) == 2 and FLOOR in kinds:
        notes.append(
            "gateway+floor: per repeat one gateway and one floor server; the floor runs the "
            "one idle user phase only, after or before the gateway's (alternating per repeat); "
            "gateway/floor row = gateway / floor within each repeat, median over the repeats"
        )
    elif len(kinds) == 2:
        goals += ratio_goals(rows)
        notes.append(
            "both: per repeat one gateway and one asgi server, both running; every phase runs "
            "on one, then on the other (who goes first alternates per repeat); half load is "
            "the same for both: half of the gateway's best rate, at its socket count; "
            "asgi/gateway rows = asgi / gateway within each repeat, median over the repeats"
        )
    if kinds != (FLOOR,):
        notes += [
            f"max load: one run per socket, {every} events per unit, no pauses; the clients "
            "share the machine's cores with the server (server CPU = its CPU time / wall time)",
            "half of max load: the best max-load socket count, runs paced to half its rate "
            "with random start offsets (steady load, not synchronized bursts)",
        ]
    notes.append("delivered == committed checked per phase against the server's SQLite file")
    report.goals = goals
    report.notes = notes
    return report
