"""Admission of a new run into a user's session, and the busy policies (pure).

A new run is refused when its agent is unknown here, its input is not JSON or too large, its
busy policy is unknown, or the user has ``max_live_runs`` live runs already. While the user has
live runs, ``if_busy`` decides: ``parallel`` starts it alongside, ``reject`` refuses it
(:class:`BusyError`), ``enqueue`` makes it a ``pending`` run queued behind every live run (its
turn: ``Session.next_turn``), and ``interrupt`` cancels the live runs first (``interrupted``),
leaving a ``completing`` one to finish. A run scheduled for later (``start_at``) does not make
the user busy until it starts; a scheduled run itself is admitted as ``parallel``. The checks run in this order, so the first that fails
names the error.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .._exceptions import (
    BusyError,
    CommandError,
    MailboxFullError,
    TooLargeError,
    UnknownAgentError,
)
from . import _lifecycle as lc
from ._execution import RunState
from ._lifecycle import Plan
from ._liveness import LivenessPolicy
from ._restart import RestartPolicy
from ._session import LiveRun, SessionRules

IF_BUSY = ("parallel", "reject", "enqueue", "interrupt")
"""The busy policies: what a new run does while the user has live runs."""


@attrs.frozen(kw_only=True)
class Admission:
    """How a new run is admitted: the live runs to cancel first, and whether it waits."""

    interrupts: tuple[tuple[str, Plan], ...] = ()
    """``(run_id, cancel plan)`` of each live run to cancel first, in order."""
    blockers: frozenset[str] | None = None
    """Queued behind these runs (None: it starts at once)."""


def check_input(input_json: str | None, *, limit: int) -> str:
    """An input, encoded (None: it was not JSON). Raises the command's error if unusable."""
    if input_json is None:
        raise CommandError("input must be a JSON value")
    if len(input_json) > limit:
        raise TooLargeError(f"input is {len(input_json)} bytes of JSON; the limit is {limit}")
    return input_json


def admit(
    live: Iterable[LiveRun],
    rules: SessionRules,
    *,
    agent: str | None,
    known: bool,
    input_json: str | None,
    policy: str | None,
    scheduled: bool = False,
) -> Admission:
    """Admit a new run of ``agent`` (``known``: this process has it) beside the ``live`` runs,
    or raise why not."""
    if not known:
        raise UnknownAgentError(f"no agent named {agent!r}")
    check_input(input_json, limit=rules.max_input_chars)
    policy = rules.if_busy if policy is None else policy
    if policy not in IF_BUSY:
        raise CommandError(f"if_busy must be one of {', '.join(IF_BUSY)}")
    runs = list(live)
    if len(runs) >= rules.max_live_runs:
        raise MailboxFullError(f"this user already has {len(runs)} live runs; wait for one to end")
    runs = [run for run in runs if run.life.wait is not lc.Wait.SCHEDULED]  # not busy yet
    if not runs or policy == "parallel" or scheduled:
        return Admission()
    if policy == "reject":
        raise BusyError(f"this user has {len(runs)} live run(s) (if_busy is reject)")
    if policy == "enqueue":
        return Admission(blockers=frozenset(run.run_id for run in runs))
    return Admission(  # interrupt: a completing run is left to finish
        interrupts=tuple(
            (run.run_id, lc.on_cancel(run.life, error="interrupted"))
            for run in runs
            if run.life.state is not RunState.COMPLETING
        )
    )


def begin(
    admission: Admission,
    *,
    now: float,
    threaded: bool,
    restart: RestartPolicy,
    liveness: LivenessPolicy,
    start_at: float | None = None,
) -> Plan:
    """The plan of an admitted run, once its interrupts were carried out (``start_at``: when a
    scheduled run starts, on the caller's clock)."""
    return lc.begin(
        now=now,
        threaded=threaded,
        restart=restart,
        liveness=liveness,
        queued=admission.blockers is not None,
        start_at=start_at,
    )
