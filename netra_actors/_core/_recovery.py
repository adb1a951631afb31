"""Recovery: what taking a user over does with the runs a stopped process (or a lost owner) left.

Pure. Each run found live in the store is read back as a :class:`~._lifecycle.RunLife` — with
the durable wait its row records and the restarts its events record — and planned by
:func:`~._lifecycle.on_recover`: ``completing`` completes, a run waiting for an answer, a timer
or its start time keeps waiting, a ``pending`` run goes on (a queued one stays queued behind the
runs before it that stay live, so queued runs keep their order), a run whose attempt was lost
is rolled back (``lost``) and resumed as a new attempt that replays its journal, as its restart
policy allows. This is the one place that decides.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ._execution import RunState
from ._lifecycle import Plan, RunLife, Wait, on_recover, recovered
from ._liveness import LivenessPolicy
from ._restart import RestartPolicy


@attrs.frozen(kw_only=True)
class StoredRun:
    """A run the store holds live, as activation found it (in the order the runs began)."""

    run_id: str
    state: RunState
    attempt: int
    queued: bool
    runnable: bool
    """This process has the run's agent (if not, the run cannot go on: it ends)."""
    threaded: bool
    restart: RestartPolicy
    liveness: LivenessPolicy
    wait: Wait = Wait.NONE
    """The durable wait its row records (``INPUT``, ``TIMER``, ``SCHEDULED``), or ``NONE``."""
    wake_at: float | None = None
    """When a timer or a scheduled start is due (the caller's clock)."""
    restarts: tuple[float, ...] = ()
    """When its earlier restarts were granted (the caller's clock), within the policy window."""


@attrs.frozen(kw_only=True)
class Recovery:
    """What becomes of one stored run: read back as ``life``, then ``plan`` (one unit for all)."""

    run_id: str
    life: RunLife
    plan: Plan
    blockers: frozenset[str] | None
    """A run that stays queued: the runs before it that stay live."""


def recover(stored: Iterable[StoredRun], *, now: float) -> list[Recovery]:
    """The recovery of every run left live, in order."""
    done: list[Recovery] = []
    for run in stored:
        life = recovered(
            run.state,
            run.attempt,
            threaded=run.threaded,
            queued=run.queued,
            restart=run.restart,
            liveness=run.liveness,
            now=now,
            wait=run.wait,
            wake_at=run.wake_at,
            restarts=run.restarts,
        )
        plan = on_recover(life, now=now, runnable=run.runnable)
        blockers = None
        if plan.life.wait is Wait.QUEUE:
            blockers = frozenset(
                r.run_id
                for r in done
                if not r.plan.life.state.is_terminal and r.plan.life.wait is not Wait.SCHEDULED
            )
        done.append(Recovery(run_id=run.run_id, life=life, plan=plan, blockers=blockers))
    return done
