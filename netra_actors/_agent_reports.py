"""The owner's handlers of what its agents report: checkpoint, write, ask, heartbeat, exit, slot.

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

import trio

from ._core import _inputs as inputs
from ._core._lifecycle import Crash, Plan, on_crash, on_finish, on_slot
from ._exceptions import AgentError, RunFencedError, StoreError
from ._logs import log_crash
from ._messages import AgentExited, Ask, Checkpoint, Heartbeat, SlotReady, Write
from ._owner import Owner
from ._runs import stage_plan
from ._uow import UnitOfWork
from ._values import dumps, loads

log = logging.getLogger("netra_actors.supervisor")


async def checkpoint(owner: Owner, msg: Checkpoint) -> None:
    run = owner.session.running(msg.run_id, msg.attempt)
    if run is None:
        msg.reply.fail(RunFencedError("this attempt of the run is over"))
        return
    if msg.beat:
        run.life = run.life.beat(trio.current_time())
    unit = UnitOfWork(owner.user_id, msg.events)
    for row, params in msg.rows:
        unit.stage(row, params)
    plan: Plan | None = None
    result_json = None
    if msg.is_final:
        plan = on_finish(run.life, attempt=msg.attempt)
        assert plan is not None  # the attempt is the running one: checked above
        result_json = dumps(msg.final_result)
        unit.emit_encoded(run.run_id, "agent_completed", f'{{"result":{result_json}}}')
        stage_plan(unit, owner.user_id, run, plan, result_json)
    if not unit:
        if msg.journal is not None:
            run.journal.record(msg.journal)
        msg.reply.set(owner.feed.head)
        return
    try:  # inline, not shared with ``ask``: no extra coroutine per checkpoint (the hot path)
        await owner.committer.commit(unit)
    except StoreError as exc:
        msg.reply.fail(exc)
        await owner.crashed(run, msg.attempt, Crash.STORE_ERROR, str(exc))
        return
    if msg.journal is not None:  # committed: a restarted attempt may rely on it
        run.journal.record(msg.journal)
    msg.reply.set(owner.feed.head)
    owner.streams.committed(msg.closes)  # the committed message supersedes its deltas
    if plan is not None:
        run.result_json = result_json
        run.child = None  # the attempt finished: its task is returning, let it
        owner.applied(run, plan)


def write(owner: Owner, msg: Write) -> None:
    """Provisional text of an open message: to the sockets that take deltas, now."""
    if owner.session.running(msg.run_id, msg.attempt) is None:
        return  # a late write of an attempt that is over
    leases = owner._deps.leases
    if (
        owner.committer.epoch is not None
        and leases
        and time.monotonic() > leases.lease_valid_until(owner.user_id)
    ):
        return  # past our own lease deadline: another node may own the user by now
    delta = owner.streams.write(msg.run_id, msg.attempt, msg.message_id, msg.text)
    if delta is not None:
        owner.feed.deliver_delta(delta)


def heartbeat(owner: Owner, msg: Heartbeat) -> None:
    run = owner.session.running(msg.run_id, msg.attempt)
    if run is not None:  # late beats of an attempt that is over are ignored
        run.life = run.life.beat(trio.current_time())


async def ask(owner: Owner, msg: Ask) -> None:
    run = owner.session.running(msg.run_id, msg.attempt)
    if run is None:
        msg.reply.fail(RunFencedError("this attempt of the run is over"))
        return
    run.life = run.life.beat(trio.current_time())
    recorded: str | None = None
    refused: AgentError | None = None
    try:
        recorded = inputs.ask(run)
    except AgentError as exc:  # it waits for an input already
        refused = exc
    unit = UnitOfWork(owner.user_id, msg.events)  # what was staged before the question
    for row, params in msg.rows:
        unit.stage(row, params)
    if recorded is None and refused is None:  # not answered already: a new question
        unit.emit_encoded(run.run_id, "input_requested", msg.data_json)
    if unit:
        try:
            await owner.committer.commit(unit)
        except StoreError as exc:
            msg.reply.fail(exc)
            await owner.crashed(run, msg.attempt, Crash.STORE_ERROR, str(exc))
            return
    if refused is not None:
        msg.reply.fail(refused)
        return
    if recorded is not None:
        msg.reply.set(loads(recorded))
        return
    inputs.asked(run)
    run.question = msg.reply


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
