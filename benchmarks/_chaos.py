"""``chaos``: servers on one database lose their processes while 200 runs and questions are live.

Issue 18's chaos test at full size (the test suite runs a short one,
``tests/reliability/test_rel_chaos.py``): on PostgreSQL, 3 servers for 3 minutes while a random
one is killed (``kill -9``), paused past the lease TTL (SIGSTOP/SIGCONT) or restarted (SIGTERM)
every ~4 s; 200 ``durable_steps`` runs of 8 tool steps (each appends its effect, with its
idempotency key, to a side-effect log) and 40 ``durable_ask`` runs answered by the client from a
random server. The same, shorter (90 s, 60 + 15 runs), on one SQLite file. See
:mod:`.harness.chaos` for the run and :mod:`.harness.chaos_check` for what is checked.

One run per store (``--repeat`` does not apply: the faults are random; ``--seed`` replays a
schedule). ``--quick``: 20 s, 12 + 4 runs. ``--seconds`` and ``--runs`` override the size.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from .harness.chaos import ChaosPlan, ChaosResult, run_chaos
from .harness.durable_cluster import PG_DEFAULT, database
from .harness.postgres import PgUnavailable
from .harness.progress import Progress
from .harness.report import Column, Goal, Options, Report, Row

TITLE = "3 servers on one database, killed / paused / restarted while runs and questions are live"

COLUMNS = [
    Column(key="store", title="store"),
    Column(key="seconds", title="faults s"),
    Column(key="kills", title="kill -9"),
    Column(key="pauses", title="paused"),
    Column(key="restarts", title="SIGTERM"),
    Column(key="requested", title="runs asked"),
    Column(key="completed", title="completed once"),
    Column(key="dead", title="dead"),
    Column(key="attempts", title="attempts"),
    Column(key="lost", title="lost rollbacks"),
    Column(key="recovered", title="recovered"),
    Column(key="effects", title="effects"),
    Column(key="repeated", title="effects repeated"),
    Column(key="committed", title="events committed"),
    Column(key="delivered", title="events delivered"),
    Column(key="settle_s", title="settle s", fmt="{:.1f}"),
    Column(key="problems", title="problems"),
]


def plan_for(kind: str, options: Options) -> ChaosPlan:
    """The issue's sizes (PostgreSQL: 3 minutes, 200 runs; SQLite: shorter), or ``--quick``."""
    if options.quick:
        plan = ChaosPlan(seconds=20, users=4, runs=12, asks=4, pause=0.5)
    elif kind == "postgres":
        plan = ChaosPlan(seconds=180, users=20, runs=200, asks=40, pause=1.0, ttl=3.0)
    else:
        plan = ChaosPlan(seconds=90, users=10, runs=60, asks=15, pause=1.0, ttl=3.0)
    seconds = options.extra.get("seconds")
    runs = options.extra.get("runs")
    seed = options.extra.get("seed")
    from attrs import evolve

    return evolve(
        plan,
        seconds=float(seconds or plan.seconds),
        runs=int(runs or plan.runs),
        asks=int(runs // 5 if runs else plan.asks),
        seed=int(seed if seed is not None else plan.seed),
    )


def row_of(kind: str, result: ChaosResult) -> Row:
    c = result.verdict.counts
    return {
        "store": kind,
        "seconds": result.plan.seconds,
        "kills": result.faults["kill"],
        "pauses": result.faults["pause"],
        "restarts": result.faults["restart"],
        "requested": result.plan.runs + result.plan.asks,
        "completed": c["requested runs completed"],
        "dead": c["runs dead"],
        "attempts": c["attempts"],
        "lost": c["rollbacks lost"],
        "recovered": c["recovered attempts"],
        "effects": c["effects executed"],
        "repeated": c["effects repeated (in flight at a loss)"],
        "committed": c["events committed"],
        "delivered": c["events delivered"],
        "settle_s": result.settle_seconds,
        "problems": len(result.verdict.problems),
    }


def run(options: Options, progress: Progress) -> Report:
    rows: list[Row] = []
    notes: list[str] = []
    for kind in ("postgres", "sqlite"):
        plan = plan_for(kind, options)
        progress.step(f"chaos on {kind}: {plan.seconds:.0f} s, {plan.runs} + {plan.asks} runs")
        with tempfile.TemporaryDirectory(prefix="netra-chaos-", dir=options.directory) as tmp:
            try:
                with database(kind, Path(tmp), options.extra.get("db") or PG_DEFAULT) as store:
                    result = asyncio.run(run_chaos(plan, store, Path(tmp), progress))
            except PgUnavailable as exc:
                notes.append(f"postgres skipped: {exc}")
                continue
        rows.append(row_of(kind, result))
        notes.append(
            f"{kind}: seed {plan.seed}, TTL {plan.ttl} s, {plan.steps} steps of "
            f"{plan.pause} s, {plan.users} users x 2 sockets, commands re-sent "
            f"{result.resent}, server start-ups {len(result.restart_seconds)}"
        )
        notes += [f"{kind} problem: {p}" for p in result.verdict.problems[:20]]
    report = Report.of(TITLE, options, COLUMNS, [rows], key="store")
    for row in rows:
        report.goals.append(
            Goal.at_most(
                f"{row['store']}: every promise kept (runs completed once, effects once per loss, "
                "messages once, 0 events lost / twice / uncommitted, no run dead)",
                row["problems"],
                0,
            )
        )
    report.notes += notes
    return report
