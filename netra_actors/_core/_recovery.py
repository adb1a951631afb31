"""Recovery: what activation does with the runs a stopped process (or a lost owner) left live.

Pure. Each run found live in the store is read back as a :class:`~._lifecycle.RunLife` and
planned by :func:`~._lifecycle.on_recover`: ``completing`` completes, a ``pending`` run goes on
(a queued one stays queued behind the runs before it that stay live, so queued runs keep their
order), anything that had started ends ``dead`` with one rollback. Durable runs will change the
last rule here (resume instead of ``dead``): this is the one place that decides.
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
        )
        plan = on_recover(life, now=now, runnable=run.runnable)
        blockers = None
        if plan.life.wait is Wait.QUEUE:
            blockers = frozenset(r.run_id for r in done if not r.plan.life.state.is_terminal)
        done.append(Recovery(run_id=run.run_id, life=life, plan=plan, blockers=blockers))
    return done
