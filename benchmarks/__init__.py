"""Benchmarks of netra_actors: ``./run bench SCENARIO``, i.e. ``python -m benchmarks SCENARIO``.

They live outside the package (not in the wheel) and import only runtime dependencies at import
time; a scenario that needs a dev-only package (``e2e``: ``websockets``) imports it when it runs.

Scenarios (one module each, which holds only its scenario; what they share is in
:mod:`benchmarks.harness`; see ``docs/benchmarks.md``):

* ``throughput``: committed-and-delivered events/s through the whole runtime, 1 to 10,000 users;
* ``store``: the group-commit writer alone vs raw ``sqlite3`` ``executemany`` of the same rows
  (``--db postgresql+asyncpg://…``: vs raw asyncpg ``COPY``);
* ``sessions``: 10,000 users with an open subscription (``--users 100000``: the idle-session
  goals' size): activation time, RSS, CPU while idle, passivation;
* ``peers``: the throughput workload built on pykka, the unsafe emit-then-write design and the
  minimal safe design (trio tasks + a ``sqlite3`` group-commit thread), in the same run;
* ``handoff``: thread → trio hand-off latency (idle / with a CPU-bound thread) and throughput;
* ``e2e``: events over loopback WebSockets to clients in separate processes (``--server asgi``:
  the ASGI adapter under uvicorn; ``--server both``: side by side, with the asgi/gateway ratios;
  ``--server floor``: the least a commit-before-send server must do, one idle user only;
  ``--server gateway+floor``: the gateway with the floor's idle row and the gateway/floor ratios);
* ``stream``: provisional token deltas over real WebSockets (100 users x 50 tokens/s, and
  1,000 users x 20 tokens/s sustained);
* ``cluster``: 1 / 2 / 3 ``netra-actors serve`` processes on one PostgreSQL database;
* ``history``: ``history`` and ``threads`` pages of one user in a store of 1,000,000 events
  (``--db postgresql+asyncpg://…``: on PostgreSQL), through the API, the store and the SQL alone;
* ``retention``: 1,000 users chatting while retention erases 1,000,000 old events, vs without;
* ``chaos``: 3 servers on one database killed, paused and restarted while 200 durable runs and
  questions are live, checked for exactly-once (PostgreSQL, and shorter on SQLite);
* ``recovery``: a lone server and a cluster recovering live runs after ``kill -9``, 10,000
  durable timers due in the same second, 100,000 runs waiting for an answer;
* ``all``: every scenario in turn.

Every scenario prints a table (``--json``: one JSON document) naming the command, the machine and
the date; it runs ``--repeat`` times (default 3) and reports medians. ``--quick`` runs in seconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from .harness.machine import filesystem_of, machine_info, now_iso
from .harness.progress import Progress
from .harness.report import BenchError, Options, Report

__all__ = ["SCENARIOS", "main"]

SCENARIOS: tuple[str, ...] = (
    "throughput",
    "store",
    "sessions",
    "peers",
    "handoff",
    "e2e",
    "replay",
    "stream",
    "cluster",
    "history",
    "retention",
    "chaos",
    "recovery",
)


def _runner(name: str) -> Callable[[Options, Progress], Report]:
    # Imported lazily: a scenario's dependencies (pykka, websockets) load only when it runs.
    module = importlib.import_module(f"{__name__}._{name}")
    run: Callable[[Options, Progress], Report] = module.run
    return run


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("every value must be >= 1")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m benchmarks`` (``./run bench``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quick", action="store_true", help="small sizes: every scenario in seconds (for CI)"
    )
    common.add_argument(
        "--repeat",
        type=_positive_int,
        default=3,
        metavar="N",
        help="measure N times and report the median (default 3)",
    )
    common.add_argument(
        "--json", action="store_true", help="print the results as JSON on stdout (table: stderr)"
    )
    common.add_argument("--out", metavar="FILE", help="also write the JSON results to FILE")
    common.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress on stderr"
    )
    common.add_argument(
        "--users",
        type=_int_list,
        metavar="N[,N...]",
        help="numbers of users (throughput, store, peers, sessions, e2e sockets)",
    )
    common.add_argument(
        "--events", type=_positive_int, metavar="E", help="events per run (per user)"
    )
    common.add_argument(
        "--every",
        type=_positive_int,
        metavar="K",
        help="events per unit of work / checkpoint (default 10)",
    )
    common.add_argument(
        "--dir", metavar="DIR", help="where the SQLite files go (default: the temp directory)"
    )
    common.add_argument(
        "--db",
        metavar="URL",
        help="store: measure on this PostgreSQL server (postgresql+asyncpg://user@host:port/db; "
        "fresh scratch databases are created and dropped); default SQLite",
    )
    common.add_argument(
        "--clients",
        type=_positive_int,
        metavar="P",
        help="e2e: client processes (default 2)",
    )
    common.add_argument(
        "--server",
        choices=("gateway", "asgi", "both", "floor", "gateway+floor"),
        help="e2e: the trio gateway (default), the ASGI adapter under uvicorn, or both side by "
        "side in one run (with their asgi/gateway ratios); floor: a minimal server that commits "
        "each event then sends it (one idle user only); gateway+floor: the gateway and the "
        "floor side by side (with their gateway/floor ratio)",
    )
    common.add_argument(
        "--loop",
        choices=("uvloop", "asyncio", "auto"),
        help="e2e --server asgi/both: uvicorn's event loop (default uvloop)",
    )
    common.add_argument(
        "--ws",
        choices=("websockets-sansio", "websockets", "wsproto", "auto"),
        help="e2e --server asgi/both: uvicorn's WebSocket implementation (default "
        "websockets-sansio, what auto picks when websockets is installed)",
    )

    common.add_argument(
        "--seconds", type=_positive_int, metavar="S", help="chaos: seconds of faults"
    )
    common.add_argument(
        "--runs", type=_positive_int, metavar="N", help="chaos: durable_steps runs (asks: N/5)"
    )
    common.add_argument("--seed", type=int, metavar="N", help="chaos: the fault schedule's seed")

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of netra_actors; see docs/benchmarks.md.",
    )
    sub = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    helps = {
        "throughput": "events/s through supervisor, group commit and socket mailboxes",
        "store": "the group-commit writer alone vs raw sqlite3 executemany (--db: asyncpg COPY)",
        "sessions": "10,000 users with open subscriptions: activation, RSS, idle CPU, passivation",
        "peers": "the throughput workload on pykka, unsafe emit-then-write, minimal safe design",
        "handoff": "thread -> trio hand-off latency (idle / CPU-bound thread) and throughput",
        "e2e": "events over loopback WebSockets to clients in separate processes",
        "replay": "a restarted attempt replaying a 100-step journal vs first-attempt bookkeeping",
        "stream": "token deltas over real WebSockets: 100 users x 50 tokens/s, 1,000 x 20 sustained",
        "cluster": "1/2/3 serve processes on PostgreSQL: cross-node lag, takeover, activation",
        "history": "history and threads pages of one user in a store of 1,000,000 events",
        "retention": "live chat commits while retention erases 1,000,000 old events",
        "chaos": "servers killed/paused/restarted under durable runs: exactly-once, checked",
        "recovery": "kill -9 recovery (lone, cluster), 10,000 durable timers, 100,000 waiting runs",
        "all": "every scenario in turn",
    }
    for name, text in helps.items():
        sub.add_parser(name, parents=[common], help=text, description=text)
    return parser


def _options(ns: argparse.Namespace, argv: Sequence[str], scenario: str) -> Options:
    extra: dict[str, Any] = {
        "users": ns.users,
        "events": ns.events,
        "every": ns.every,
        "dir": ns.dir,
        "clients": ns.clients,
        "db": ns.db,
        "server": ns.server,
        "loop": ns.loop,
        "ws": ns.ws,
        "seconds": ns.seconds,
        "runs": ns.runs,
        "seed": ns.seed,
    }
    return Options(
        scenario=scenario,
        argv=tuple(argv),
        quick=ns.quick,
        repeat=ns.repeat,
        json=ns.json,
        progress=ns.progress,
        extra=extra,
    )


def _without_out(args: list[str]) -> list[str]:
    """``args`` without ``--out FILE`` (it does not change a result)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks with ``argv`` (default ``sys.argv[1:]``). Returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns = parser.parse_args(args)
    if ns.db and ns.scenario not in ("store", "cluster", "history", "chaos", "all"):
        parser.error("--db applies to the store, cluster, history and chaos scenarios only")
    if (ns.seconds or ns.runs or ns.seed is not None) and ns.scenario not in ("chaos", "all"):
        parser.error("--seconds, --runs and --seed apply to the chaos scenario only")
    if (ns.server or ns.loop or ns.ws) and ns.scenario not in ("e2e", "all"):
        parser.error("--server, --loop and --ws apply to the e2e scenario only")
    if (ns.loop or ns.ws) and ns.server not in ("asgi", "both"):
        parser.error("--loop and --ws apply to e2e --server asgi or both only (uvicorn's)")
    names = SCENARIOS if ns.scenario == "all" else (ns.scenario,)
    reports: list[Report] = []
    status = 0
    for name in names:
        if ns.scenario == "all":
            scenario_argv = [name, *_without_out(args[1:])]
        else:
            scenario_argv = args
        options = _options(ns, scenario_argv, name)
        progress = Progress(ns.progress)
        machine = machine_info()  # the load average before the run
        db_dir = ns.dir or tempfile.gettempdir()
        machine["db_dir"] = db_dir
        machine["db_filesystem"] = filesystem_of(db_dir)
        date = now_iso()
        started = time.perf_counter()
        try:
            report = _runner(name)(options, progress)
        except BenchError as exc:
            progress.done()
            print(f"bench {name}: FAILED: {exc}", file=sys.stderr, flush=True)
            status = 1
            continue
        report.seconds = time.perf_counter() - started
        report.machine = machine
        report.started = date
        reports.append(report)
        text = report.render()
        print(text + "\n", file=sys.stderr if ns.json else sys.stdout, flush=True)
    documents = [r.to_json() for r in reports]
    payload: Any = documents[0] if ns.scenario != "all" and documents else documents
    if ns.json:
        print(json.dumps(payload, indent=2))
    if ns.out:
        with open(ns.out, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
    return status
