"""A checkpoint: an attempt's staged work committed as one unit, in one hop when it can be.

A checkpoint is staged into a unit (with the run's completion when it is the final one), the
unit is committed, and then the run's journal, its open messages and its life take the result
(:func:`stage` and :func:`committed`, shared by both ways a checkpoint is taken).

Usually the supervisor is **parked**: it waits for its next message and its mailbox is empty.
Then the agent's own task takes the session's :class:`~._hold.Hold` and does the supervisor's work
itself (:func:`in_task`): no message, no reply object, no wake-up of the supervisor, one task
step for the unit instead of three. Invariant 1 holds because the hold is the supervisor's turn:

* **order**: an agent may take the hold only while the supervisor waits in its mailbox with
  nothing in it (it has handled every message sent before the checkpoint); a message that
  arrives meanwhile wakes the supervisor, which waits for the hold (:meth:`~._hold.Hold.settle`) before
  it handles that message, and other agents send theirs (the supervisor is no longer parked);
* **one at a time**: while the supervisor handles a message it is not parked, so nobody else
  takes the hold; while an agent holds it, the supervisor and every other agent wait;
* **errors are routed as before**: a commit that failed (``store_error``) or was fenced
  (:class:`~._commit.Lost`) is handed to the supervisor as the hold's *deferred* work, which it
  carries out before its next message (the crash plan, or unwinding its session), and the
  supervisor is woken for it;
* **cancellation**: a cancelled agent commits nothing (it checks before it takes the hold); a
  commit once submitted is not cancellable, here as in the supervisor.

The supervisor takes the slow path itself (the :class:`~._messages.Checkpoint` message) when it
is busy, when another agent holds the session, while the node drains, and for threaded agents.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ._core._lifecycle import Crash, Plan, on_finish
from ._exceptions import RunFencedError, StoreError
from ._journal_events import ModelStep, model_after, model_call_statement
from ._runs import Run, stage_plan
from ._uow import UnitOfWork
from ._values import StagedEvent, dumps

if TYPE_CHECKING:
    from ._owner import Owner

_OVER = "this attempt of the run is over"


def stage(
    owner: Owner,
    run: Run,
    attempt: int,
    events: list[StagedEvent],
    rows: list[tuple[Any, Any]],
    model: ModelStep | None,
    final_result: Any,
    is_final: bool,
) -> tuple[UnitOfWork, Plan | None, str | None]:
    """The checkpoint's unit, and the run's completion plan and result when it is the final."""
    unit = UnitOfWork(owner.user_id, events)
    for row, params in rows:
        unit.stage(row, params)
    if model is not None:  # kept beside the events, placed in the journal where it committed
        after = model_after(owner.feed.head, events)
        unit.stage(model_call_statement(owner.user_id, run.run_id, attempt, model, after))
    if not is_final:
        return unit, None, None
    plan = on_finish(run.life, attempt=attempt)
    assert plan is not None  # the attempt is the running one: checked by the caller
    result_json = dumps(final_result)
    unit.emit_encoded(run.run_id, "agent_completed", f'{{"result":{result_json}}}')
    stage_plan(unit, owner.user_id, run, plan, result_json)
    return unit, plan, result_json


def committed(
    owner: Owner,
    run: Run,
    events: list[StagedEvent],
    model: ModelStep | None,
    closes: tuple[str, ...],
    plan: Plan | None,
    result_json: str | None,
) -> None:
    """The checkpoint's unit committed: its run takes it (a new attempt replays it)."""
    run.fold_later(events, None if model is None else model.item())
    owner.streams.committed(closes)  # the committed message supersedes its deltas
    if plan is not None:
        run.result_json = result_json
        run.child = None  # the attempt finished: its task is returning, let it
        owner.applied(run, plan)
    elif owner.draining:
        owner.hand_over(run)  # it reached a commit: the next owner goes on from here


def _defer(owner: Owner, work: Callable[[], Awaitable[Any]]) -> None:
    """Leave ``work`` to the supervisor, before its next message, and wake it for it."""
    owner.hold.deferred = work
    owner.wake()


async def _reraise(exc: BaseException) -> None:
    raise exc  # in the supervisor's task: it ends (a lost lease) or crashes (a bug) as before


def parked(owner: Owner) -> bool:
    """The supervisor waits for its next message, its mailbox is empty, and nobody holds the
    session: an agent may take the hold (the node does not drain: then it hands runs over)."""
    return (
        not owner.hold.held
        and owner.hold.deferred is None
        and not owner.draining
        and owner._rx.statistics().tasks_waiting_receive > 0
    )


class InTask:
    """What an async agent's context calls to do the supervisor's work in its own task (one per
    session; its methods return None/False when the message must be sent instead)."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Owner) -> None:
        self._owner = owner

    def beat(self, run_id: str, attempt: int, now: float) -> bool:
        """A heartbeat without a message (the supervisor is parked). False: send it."""
        owner = self._owner
        if not parked(owner):
            return False
        run = owner.session.running(run_id, attempt)
        if run is not None:  # late beats of an attempt that is over are ignored
            run.life = run.life.beat(now)
        return True

    async def checkpoint(
        self,
        run_id: str,
        attempt: int,
        beat: bool,
        events: list[StagedEvent],
        rows: list[tuple[Any, Any]],
        model: ModelStep | None,
        final_result: Any,
        is_final: bool,
        closes: tuple[str, ...],
    ) -> int | None:
        """The checkpoint, in the agent's own task. Returns the head ``seq`` after it, or None if
        the supervisor is not parked (send the message instead). Raises what the reply would."""
        owner = self._owner
        if not parked(owner):
            return None
        run = owner.session.running(run_id, attempt)
        if run is None:
            raise RunFencedError(_OVER)
        hold = owner.hold
        hold.held = True
        try:
            if beat:
                run.life = run.life.beat(trio.current_time())
            unit, plan, result_json = stage(
                owner, run, attempt, events, rows, model, final_result, is_final
            )
            if unit:
                try:
                    await owner.committer.commit(unit)
                except StoreError as exc:
                    _defer(
                        owner,
                        functools.partial(owner.crashed, run, attempt, Crash.STORE_ERROR, str(exc)),
                    )
                    raise
                committed(owner, run, events, model, closes, plan, result_json)
            head = owner.feed.head
        except (StoreError, RunFencedError):
            raise
        except Exception as exc:  # fenced (Lost), or a bug: the supervisor's, as if it raised it
            _defer(owner, functools.partial(_reraise, exc))
            raise RunFencedError("the user's session stopped") from None
        finally:
            hold.release()
        if plan is not None:  # the run ended: its deadlines and queued runs are the supervisor's
            owner.wake()
        if not unit:
            await trio.lowlevel.checkpoint()  # nothing to commit: still a point to schedule at
        return head
