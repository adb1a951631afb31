"""The owner's handlers of the user's commands: start, cancel, inputs, reads, subscribe, drain.

Each handler asks the core (admission, the queue, inputs, cancellation: ``_core``) and carries
out what it says: a refused command raises its :class:`CommandError` and changes nothing; an
accepted one commits its unit before it answers. An input that answers a run waiting for it
starts the run's next attempt in the same unit; a drain hands the runs over to the next owner.
Commands other nodes posted for this user arrive through the cluster inbox (:func:`on_inbox`)
and are answered through the store.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import trio

from . import _erasure as erasure
from ._cluster_codec import error_payload, message_of
from ._commit import Lost, SessionFailed
from ._conversation import CLIENT_TOOLS
from ._core import _admission as admission
from ._core import _inputs as inputs
from ._core import _threads as threads
from ._core._lifecycle import on_wake
from ._exceptions import (
    CommandError,
    IllegalStateError,
    MailboxFullError,
    RuntimeClosedError,
    StoreError,
    UnknownRunError,
)
from ._ids import new_message_id, new_run_id
from ._messages import (
    CancelRun,
    DeleteThread,
    EraseUser,
    GetRuns,
    Reply,
    SendInput,
    SendToRun,
    StartRun,
    Subscribe,
    WaitRun,
)
from ._owner import Owner
from ._runs import Run, RunsSnapshot, stage_plan
from ._uow import UnitOfWork
from ._values import JSON, RunInfo, dumps, loads

T = TypeVar("T")


async def answer(reply: Reply[T], coro: Awaitable[T]) -> None:
    """Run a command handler; answer its reply with the result or the command error."""
    try:
        result = await coro
    except Lost:
        reply.fail(RuntimeClosedError("the user's session moved to another node; try again"))
        raise
    except (CommandError, StoreError) as exc:
        reply.fail(exc)  # a StoreError here: the command's own unit failed, nothing changed
    except SessionFailed as exc:
        reply.fail(exc.error)
        raise  # memory may differ from the store now: crash, and rebuild from the store
    except BaseException as exc:
        reply.fail(exc)
        raise
    else:
        reply.set(result)


def encoded(value: JSON) -> str | None:
    """A command's input as JSON text (None: it is not a JSON value)."""
    try:
        return dumps(value)
    except TypeError:
        return None


async def start_run(owner: Owner, msg: StartRun) -> str:
    deps = owner._deps
    config = deps.config
    agents = deps.agents
    name = msg.agent if msg.agent is not None else agents.default
    cls = agents.get(name) if name is not None else None
    session = owner.session
    input_json = encoded(msg.input)
    thread = threads.check_thread(msg.thread)
    client_ids = await _unused_message_ids(owner, msg)
    admitted = admission.admit(
        session.runs.values(),
        session.rules,
        agent=name,
        known=cls is not None,
        input_json=input_json,
        policy=msg.if_busy,
        scheduled=msg.start_at is not None,
    )
    assert cls is not None
    assert input_json is not None
    for run_id, plan in admitted.interrupts:
        other = session.runs.get(run_id)
        if other is not None:
            await owner.execute(other, plan)
    now = trio.current_time()
    start_at = None if msg.start_at is None else now + (msg.start_at - time.time())
    plan = admission.begin(
        admitted,
        now=now,
        threaded=cls.threaded,
        restart=cls.restart_policy or config.restart,
        liveness=cls.liveness or config.liveness,
        start_at=start_at,
    )
    run = Run(
        run_id=new_run_id(),
        agent=cls.name,
        agent_cls=cls,
        life=plan.life,
        input_json=input_json,
        created_at=time.time(),
        inbox_size=config.agent_mailbox_size,
        thread=thread,
        wake_wall=msg.start_at,
    )
    unit = UnitOfWork(owner.user_id)
    if msg.user_text is not None:
        texts = [*msg.earlier, (msg.message_id or new_message_id(), msg.user_text)]
        for n, (message_id, text) in enumerate(texts, 1):  # each with the meta (AG-UI ids)
            message: dict[str, JSON] = dict(msg.message_meta or {})
            if n < len(texts):  # the client's tools go with the run's own message only
                message.pop(CLIENT_TOOLS, None)
            message.update(role="user", text=text, message_id=message_id)
            unit.emit(run.run_id, "message", message)
    unit.message_ids.extend((message_id, thread) for message_id in client_ids)
    run.start_seq = owner.head + 1  # the unit's first event (one unit in flight per user)
    if admitted.blockers is None and start_at is None:  # else set when it starts (execute)
        run.history_seq = owner.head + max(1, len(unit.events))
    stage_plan(unit, owner.user_id, run, plan, None)
    session.add(run, admitted.blockers)
    if deps.tracing is not None:
        deps.tracing.admitted(owner.user_id, run, msg.trace_context, recovered=False)
    try:
        await owner.committer.commit(unit)
    except BaseException:
        del session.runs[run.run_id]
        raise
    deps.counters.runs_started += 1
    owner.applied(run, plan)
    return run.run_id


async def _unused_message_ids(owner: Owner, msg: StartRun) -> list[str]:
    """The client-chosen message ids of a ``say``, checked: well formed, distinct, and not used
    by this user before (else CommandError, and nothing changes)."""
    ids = [threads.check_message_id(m) for m, _ in msg.earlier]
    if msg.message_id is not None:
        ids.append(threads.check_message_id(msg.message_id))
    checked = [m for m in ids if m is not None]
    if not checked:
        return []
    if len(set(checked)) != len(checked):
        raise CommandError("message ids must be distinct")
    used = await owner._store.message_ids(owner.user_id, checked)
    if used:
        taken = next(iter(used))
        raise CommandError(f"message_id {taken!r} is already used (thread {used[taken]!r})")
    return checked


async def _ended_run(owner: Owner, run_id: str) -> RunInfo:
    """A run that is not live: its stored snapshot, or UnknownRunError."""
    info = await owner._store.get_run(owner.user_id, run_id)
    if info is None:
        raise UnknownRunError("no such run")
    return info


async def _live(owner: Owner, run_id: str) -> Run:
    """A live run of the user, or the error for one that ended (or never was)."""
    run = owner.session.runs.get(run_id)
    if run is None:
        await _ended_run(owner, run_id)
        raise IllegalStateError("the run already ended")
    return run


async def cancel_run(owner: Owner, msg: CancelRun) -> None:
    run = owner.session.runs.get(msg.run_id)
    if run is None:
        info = await _ended_run(owner, msg.run_id)
        raise IllegalStateError(f"the run already ended ({info.state.value})")
    await owner.execute(run, owner.session.cancel(run))


async def get_runs(owner: Owner, msg: GetRuns) -> RunsSnapshot:
    runs = await owner._store.list_runs(owner.user_id, msg.limit)
    return RunsSnapshot(head_seq=owner.feed.head, runs=tuple(runs))


async def send_to_run(owner: Owner, msg: SendToRun) -> None:
    run = await _live(owner, msg.run_id)
    try:
        run.inbox_sender().send_nowait(msg.message)
    except trio.WouldBlock:
        raise MailboxFullError("the run's inbox is full") from None


async def send_input(owner: Owner, msg: SendInput) -> None:
    run = await _live(owner, msg.run_id)
    input_json = inputs.accept_input(run, encoded(msg.input), owner.session.rules)
    unit = UnitOfWork(owner.user_id)
    extra = f",{msg.meta}" if msg.meta else ""
    unit.emit_encoded(run.run_id, "run_input", f'{{"input":{input_json}{extra}}}')
    plan = on_wake(run.life, now=trio.current_time()) if inputs.answers(run) else None
    if plan is not None:  # the run waits for it as a row: its next attempt starts
        stage_plan(unit, owner.user_id, run, plan, run.result_json)
    await owner.committer.commit(unit)
    inputs.input_committed(run, input_json)
    if plan is not None:
        owner.applied(run, plan)
    elif run.question is not None:  # its attempt waits in memory (a message streams)
        reply, run.question = run.question, None
        inputs.ask(run)  # it takes this input
        reply.set(loads(input_json))


async def wait_run(owner: Owner, msg: WaitRun) -> None:
    run = owner.session.runs.get(msg.run_id)
    if run is None:
        await answer(msg.reply, _ended_run(owner, msg.run_id))
        return
    try:
        owner.session.may_wait(len(run.waiters))
    except MailboxFullError as exc:
        msg.reply.fail(exc)
    else:
        run.waiters.append(msg.reply)


def subscribe(owner: Owner, msg: Subscribe, on_close: Any) -> None:
    owner.feed.subscribe(msg, on_close, owner.streams.snapshot())


async def drain(owner: Owner, final: bool) -> None:
    """A planned shutdown hands the user over: every attempt stops at its next commit (the
    checkpoint handler hands its run over), one that waits for a thread or its restart stops
    now, and so does every attempt when the drain is ``final``. Nothing is committed for it:
    the next owner finds the runs live and resumes them. The session stops once no attempt
    runs (and then releases the lease)."""
    owner.draining = True
    owner.session.turns_due = False
    for run in list(owner.session.runs.values()):
        if final or run.life.running_attempt is None:
            owner.hand_over(run)


async def on_inbox(owner: Owner, item: Any) -> None:
    """Carry out a command from another node; answer it through the store."""
    ok, payload = True, "{}"
    committer = owner.committer
    committer.consuming = item
    try:
        msg = message_of(item.kind, loads(item.payload))
        match msg:
            case StartRun():
                payload = dumps({"run_id": await start_run(owner, msg)})
            case CancelRun():
                await cancel_run(owner, msg)
            case SendInput():
                await send_input(owner, msg)
            case SendToRun():
                await send_to_run(owner, msg)
            case DeleteThread():
                payload = dumps({"result": await erasure.delete_thread(owner, msg)})
            case EraseUser():
                await erasure.erase_user(owner, msg)
    except CommandError as exc:
        ok, payload = False, error_payload(exc)
    except StoreError as exc:
        ok, payload = False, error_payload(CommandError(f"the store failed: {exc}"))
    unit = UnitOfWork(owner.user_id)  # the answer (and the deletion, if nothing committed)
    unit.replies.append((item.request_id, owner.user_id, ok, payload))
    await committer.commit_owned(unit)
    committer.consuming = None
    owner._deps.cluster.replied(item.request_id)  # committed: the asker's read will find it
