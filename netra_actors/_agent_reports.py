"""The owner's handlers of what its agents report: checkpoint, write, ask, sleep, heartbeat,
exit, slot.

Only the running attempt of a run is heard (``Session.running``); a late report of an attempt
that is over is fenced off. A checkpoint commits the attempt's staged work as one unit (with the
run's completion when it is the final one) and answers after the commit; a write streams
provisional text to the sockets that take it; a question commits what the attempt staged before
it and is answered from the run's inputs or committed (``_core/_inputs.py``); a crash or a failed
commit is carried out as the life cycle plans it (``_core/_lifecycle.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from . import _checkpoint
from ._core import _inputs as inputs
from ._core._lifecycle import Crash, Wait, on_crash, on_slot, on_wait
from ._exceptions import RunFencedError, StoreError
from ._journal_events import fold, fold_unit, question_diverged
from ._logs import log_crash
from ._messages import AgentExited, Ask, Checkpoint, Heartbeat, Sleep, SlotReady, Write
from ._owner import Owner
from ._runs import Run, stage_plan
from ._uow import UnitOfWork
from ._values import loads

_OVER = "this attempt of the run is over"

log = logging.getLogger("netra_actors.supervisor")


async def checkpoint(owner: Owner, msg: Checkpoint) -> None:
    """The checkpoint as a message (the supervisor was busy: ``_checkpoint.py``)."""
    run = owner.session.running(msg.run_id, msg.attempt)
    if run is None:
        msg.reply.fail(RunFencedError(_OVER))
        return
    if msg.beat:
        run.life = run.life.beat(trio.current_time())
    events, model = msg.events, msg.model
    unit, plan, result_json = _checkpoint.stage(
        owner, run, msg.attempt, events, msg.rows, model, msg.final_result, msg.is_final
    )
    if not unit:
        msg.reply.set(owner.feed.head)
        return
    try:
        await owner.committer.commit(unit)
    except StoreError as exc:
        msg.reply.fail(exc)
        await owner.crashed(run, msg.attempt, Crash.STORE_ERROR, str(exc))
        return
    msg.reply.set(owner.feed.head)
    _checkpoint.committed(owner, run, events, model, msg.closes, plan, result_json)


def write(owner: Owner, msg: Write) -> None:
    """Provisional text of an open message: to the sockets that take deltas, now."""
    if owner.session.running(msg.run_id, msg.attempt) is None:
        return  # a late write of an attempt that is over
    leases = owner._deps.leases
    if (
        owner.committer.epoch is not None
        and leases
        and time.monotonic() > leases.lease_valid_until(owner.user_id)
    ):  # past our own lease deadline: another node may own the user by now. The message
        owner.streams.stop(msg.run_id, msg.message_id)  # stops: its next pieces would skip this
        return
    delta = owner.streams.write(msg.run_id, msg.attempt, msg.message_id, msg.text)
    if delta is not None:
        owner.feed.deliver_delta(delta)
        if owner.committer.epoch is not None:  # a cluster: to the sockets on other nodes too
            owner._deps.cluster.publish(owner.user_id, delta)


def heartbeat(owner: Owner, msg: Heartbeat) -> None:
    run = owner.session.running(msg.run_id, msg.attempt)
    if run is not None:  # late beats of an attempt that is over are ignored
        run.life = run.life.beat(trio.current_time())


async def ask(owner: Owner, msg: Ask) -> None:
    run = owner.session.running(msg.run_id, msg.attempt)
    if run is None:
        msg.reply.fail(RunFencedError(_OVER))
        return
    run.life = run.life.beat(trio.current_time())
    recorded = inputs.ask(run)
    unit = UnitOfWork(owner.user_id, msg.events)  # what was staged before the question
    for row, params in msg.rows:
        unit.stage(row, params)
    if recorded is not None:  # answered already (or a new attempt): no new question
        if unit:
            try:
                await owner.committer.commit(unit)
            except StoreError as exc:
                msg.reply.fail(exc)
                await owner.crashed(run, msg.attempt, Crash.STORE_ERROR, str(exc))
                return
            fold_unit(run.journal, msg.events, None)
        msg.reply.set(loads(recorded))
        return
    if not msg.replayed:
        if msg.cut_at is not None:  # the course the journal recorded did not ask here
            cut = question_diverged(run.journal, run.run_id, msg.attempt, msg.data_json, msg.cut_at)
            unit.events.append(cut)
        unit.emit_encoded(run.run_id, "input_requested", msg.data_json)
    if msg.hold:  # a message streams: its attempt waits in memory (its text lives there)
        try:
            if unit:
                await owner.committer.commit(unit)
        except StoreError as exc:
            msg.reply.fail(exc)
            await owner.crashed(run, msg.attempt, Crash.STORE_ERROR, str(exc))
            return
        for ev in unit.events:
            fold(run.journal, ev.event, ev.data_json)
        run.question = msg.reply
        return
    await _wait(owner, run, msg.attempt, unit, Wait.INPUT, msg.reply)


async def sleep(owner: Owner, msg: Sleep) -> None:
    run = owner.session.running(msg.run_id, msg.attempt)
    if run is None:
        msg.reply.fail(RunFencedError(_OVER))
        return
    run.wake_wall = msg.until
    unit = UnitOfWork(owner.user_id, msg.events)
    for row, params in msg.rows:
        unit.stage(row, params)
    await _wait(owner, run, msg.attempt, unit, Wait.TIMER, msg.reply, msg.until)


async def _wait(
    owner: Owner,
    run: Run,
    attempt: int,
    unit: UnitOfWork,
    wait: Wait,
    reply: Any,
    until: float | None = None,
) -> None:
    """The attempt waits durably: commit ``unit`` with the run's row saying so, then stop the
    attempt (its wait's reply fails: it is over); the run holds no task until it wakes."""
    wake_at = None if until is None else trio.current_time() + (until - time.time())
    plan = on_wait(run.life, attempt=attempt, wait=wait, wake_at=wake_at)
    assert plan is not None  # the attempt is the running one: checked by the caller
    stage_plan(unit, owner.user_id, run, plan, run.result_json)
    try:
        await owner.committer.commit(unit)
    except StoreError as exc:
        reply.fail(exc)
        await owner.crashed(run, attempt, Crash.STORE_ERROR, str(exc))
        return
    for ev in unit.events:
        fold(run.journal, ev.event, ev.data_json)
    owner.applied(run, plan)
    reply.fail(RunFencedError("the run waits as a row: a new attempt goes on from here"))


async def exited(owner: Owner, msg: AgentExited) -> None:
    run = owner.session.runs.get(msg.run_id)
    if run is None:
        return
    error = f"{type(msg.error).__name__}: {msg.error}"
    plan = on_crash(
        run.life, attempt=msg.attempt, cause=Crash(msg.reason), error=error, now=trio.current_time()
    )
    if plan is None:
        return  # a late report of an attempt that is already over
    tracing = owner._deps.tracing
    log_crash(
        log,
        user_id=owner.user_id,
        run_id=run.run_id,
        attempt=msg.attempt,
        agent=run.agent,
        reason=msg.reason,
        error=msg.error,
        extra=None if tracing is None else tracing.log_fields(run),
    )
    await owner.execute(run, plan)


async def slot_ready(owner: Owner, msg: SlotReady) -> None:
    run = owner.session.runs.get(msg.run_id)
    plan = None if run is None else on_slot(run.life, now=trio.current_time())
    if run is None or plan is None:
        msg.release()
        return
    run.child = None
    unit = UnitOfWork(owner.user_id)
    stage_plan(unit, owner.user_id, run, plan, run.result_json)
    try:
        await owner.committer.commit_owned(unit)
    except BaseException:
        msg.release()
        raise
    owner.applied(run, plan, msg.release)
