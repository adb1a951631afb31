"""Questions and inputs of a live run (pure).

An attempt asks (``ctx.ask``) for the run's next input. The run keeps every committed
``run_input`` in order, and each attempt takes them from the first again (a new attempt replays
its questions without asking the user twice); only when it has taken them all is a new question
committed (``input_requested``, unless the journal has it already), and the run waits for the
answer as a row (``Wait.INPUT``: the attempt stops) until ``send_input`` commits the next one,
which starts a new attempt. ``send_input`` is taken while the run is ``pending``, ``starting`` or
``running``, up to ``max_inputs`` per run.
"""

from __future__ import annotations

from .._exceptions import IllegalStateError, MailboxFullError
from ._admission import check_input
from ._execution import RunState
from ._lifecycle import Wait
from ._session import LiveRun, SessionRules

#: The states in which a run takes ``send_input``.
TAKES_INPUT = frozenset({RunState.PENDING, RunState.STARTING, RunState.RUNNING})


def ask(run: LiveRun) -> str | None:
    """The running attempt asks: the input to answer with (recorded already), or None: the
    run waits for the answer (``Wait.INPUT``)."""
    if run.consumed < len(run.inputs):
        run.consumed += 1
        return run.inputs[run.consumed - 1]
    return None


def accept_input(run: LiveRun, input_json: str | None, rules: SessionRules) -> str:
    """``send_input`` to ``run`` (``input_json`` None: not JSON): the input to commit, or the
    command's error."""
    if run.life.state not in TAKES_INPUT:
        raise IllegalStateError(f"the run is {run.life.state.value}")
    checked = check_input(input_json, limit=rules.max_input_chars)
    if len(run.inputs) >= rules.max_inputs:
        raise MailboxFullError(f"the run already has {len(run.inputs)} inputs")
    return checked


def input_committed(run: LiveRun, input_json: str) -> None:
    """The input is committed: every attempt of the run may take it."""
    run.inputs.append(input_json)


def answers(run: LiveRun) -> bool:
    """True if an input for ``run`` answers its question: the run waits for it as a row, and
    the commit of the input starts its next attempt (``_lifecycle.on_wake``)."""
    return run.life.wait is Wait.INPUT
