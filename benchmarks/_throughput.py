"""``throughput``: committed-and-delivered events per second through the whole runtime.

N users, one run each of an agent that emits ``events`` ``agent_thinking`` events with a
checkpoint every ``every`` events (a unit of work = the events between two checkpoints). Every
event goes agent → supervisor → unit of work → group commit on a real SQLite file (WAL) →
the user's socket mailbox → an in-process subscriber that reads every event, checks that ``seq``
is gapless, and counts it (the workload: :mod:`.harness.emitter`).

Measured from the first ``start_run`` to the moment the subscribers have read every committed
event. Afterwards the SQLite file is opened with plain ``sqlite3`` and its rows are counted: the
run fails loudly unless delivered == committed == rows in the file and every run completed.
"""

from __future__ import annotations

import statistics

from .harness.emitter import RUNTIME_EVENTS_PER_RUN, run_emitter, workloads
from .harness.progress import Progress, measure_repeats
from .harness.report import Column, Goal, Options, Report, Row

TITLE = "committed-and-delivered events/s through supervisor, group commit, socket mailboxes"
GOAL_1000 = 110_000
"""Issue 9: >= 110k events/s at 1,000 users (0.8x the minimal safe design)."""
STRETCH_1000 = 150_000
GOAL_1 = 30_000
GOAL_FLAT = 0.9

COLUMNS = [
    Column(key="users", title="users"),
    Column(key="events_per_user", title="events/run"),
    Column(key="committed", title="events committed"),
    Column(key="delivered", title="delivered"),
    Column(key="events_per_s", title="events/s"),
    Column(key="cpu_us_per_event", title="CPU us/event", fmt="{:,.1f}"),
    Column(key="units_per_s", title="units/s"),
    Column(key="units_per_commit", title="units/commit", fmt="{:,.1f}"),
    Column(key="seconds", title="seconds", fmt="{:.2f}"),
    Column(key="gc_share", title="in GC", fmt="{:.0%}"),
    Column(key="verified", title="verified"),
]


def run(options: Options, progress: Progress) -> Report:
    """The scenario: every N in ``--users``, ``--repeat`` times, medians reported."""
    runs = measure_repeats(
        options,
        progress,
        workloads(options, [1, 100, 1000, 10_000], [1, 100, 1000]),
        lambda w: run_emitter(w, progress, options.directory),
        label=lambda w: f"{w.users} users x {w.events} events",
    )
    report = Report.of(TITLE, options, COLUMNS, runs, "users")
    at_1000 = _at(report.rows, 1000)
    report.goals = [
        Goal.at_least(
            f">= {GOAL_1000:,} committed-and-delivered events/s at 1,000 users",
            at_1000,
            GOAL_1000,
            " events/s",
        ),
        Goal.at_least(
            f"stretch: >= {STRETCH_1000:,} events/s at 1,000 users",
            at_1000,
            STRETCH_1000,
            " events/s",
        ),
        Goal.at_least(
            f">= {GOAL_1:,} events/s for 1 user", _at(report.rows, 1), GOAL_1, " events/s"
        ),
        Goal.at_least(
            f"10,000 users >= {GOAL_FLAT:g}x the rate of 1,000 users (flat in N)",
            scaling_ratio(runs, 10_000, 1000),
            GOAL_FLAT,
            "x",
        ),
    ]
    report.notes = [
        f"one run per user; {options.every} events per unit of work; each run also commits "
        f"{RUNTIME_EVENTS_PER_RUN} runtime events (run states, agent_started/completed), "
        "counted in 'events committed'",
        "subscribers: one per user, receive_batch(256) like the gateway; each event's seq "
        "checked; rows counted afterwards in the SQLite file with sqlite3",
        "in GC: share of the wall time spent in Python's garbage collector (gc.callbacks)",
        "10,000 vs 1,000 users: median over the repeats of the ratio within each repeat",
    ]
    return report


def _at(rows: list[Row], users: int) -> float | None:
    return next((r["events_per_s"] for r in rows if r["users"] == users), None)


def scaling_ratio(runs: list[list[Row]], many: int, few: int) -> float | None:
    """Median over the repeats of events/s at ``many`` users / at ``few`` users (same repeat)."""
    ratios = []
    for rows in runs:
        a, b = _at(rows, many), _at(rows, few)
        if a is not None and b:
            ratios.append(a / b)
    return statistics.median(ratios) if ratios else None
