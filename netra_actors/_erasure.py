"""The owner's handlers of the data lifecycle: delete a thread, a retention batch, erase the user.

Each runs inside the user's supervisor, in mailbox order, and commits through its committer
under the lease epoch: an erasure is a unit like any other, fenced in the same transaction as
its statements, so a node that lost the user can neither erase nor write back what another node
erased. The rules (which runs a deletion cancels, when retention may erase) are the core's
(``_core/_erasure.py``); the SQL is the store's (``_store/_erase.py``).

* :func:`delete_thread` — the thread's live runs are cancelled first (each with its one
  rollback), then ONE unit turns every event of the thread into an ``erased`` placeholder,
  removes its summary, message ids, its runs' inputs and results and their model calls, and
  commits one ``thread_deleted`` event (in no thread).
* a retention batch (``DeleteThread`` with ``idle_before``) — erases at most ``limit`` events of
  an expired thread per unit; the last one commits ``thread_deleted`` with reason ``retention``.
* :func:`erase_user` — stops every attempt, deletes every row of the user in one fenced unit,
  closes the user's subscriptions (``erased``: close code 4410) and goes on as a fresh session
  (still the owner, under the same lease: its next event is seq 1).
"""

from __future__ import annotations

from ._commit import SessionFailed
from ._core import _erasure as rules
from ._core import _threads as threads
from ._exceptions import RuntimeClosedError, StoreError
from ._messages import DeleteThread, EraseUser
from ._owner import Owner
from ._uow import Erasure, UnitOfWork

DONE = "done"
"""The thread is erased (or there was nothing to erase)."""
MORE = "more"
"""A retention batch erased some events; more are left (send the next batch)."""
KEPT = "kept"
"""Retention: the thread has a live run or recent activity; nothing was erased."""


async def delete_thread(owner: Owner, msg: DeleteThread) -> str:
    """Delete ``msg.thread`` (or, with ``idle_before``, erase one retention batch of it)."""
    thread = threads.check_thread(msg.thread)
    if msg.idle_before is not None:
        return await _retention_batch(owner, thread, msg.idle_before, msg.limit)
    session = owner.session
    doomed = [session.runs[r] for r in rules.runs_of_thread(session.runs.values(), thread)]
    for run in doomed:
        rules.check_cancellable(run.life.state)
    for run in doomed:
        if run.run_id in session.runs:  # an interrupt may have ended it meanwhile
            await owner.execute(run, session.cancel(run))
    await _final(owner, thread, "deleted")
    return DONE


async def _final(owner: Owner, thread: str, reason: str) -> None:
    """The thread's last erasing unit: everything left, and ``thread_deleted`` if any event of
    the thread was left (else only the summary's leftovers are removed, without an event)."""
    latest = await owner._store.history(owner.user_id, thread=thread, limit=1)
    unit = UnitOfWork(owner.user_id)
    unit.erase = Erasure(thread=thread)
    if latest.events:
        unit.emit(None, rules.THREAD_DELETED, rules.thread_deleted(thread, reason))
    await owner.committer.commit(unit)


async def _retention_batch(owner: Owner, thread: str, idle_before: float, limit: int | None) -> str:
    """One bounded batch of retention (see the module docstring)."""
    live = len(rules.runs_of_thread(owner.session.runs.values(), thread))
    latest = await owner._store.history(owner.user_id, thread=thread, limit=1)
    last = latest.events[-1] if latest.events else None
    verdict = rules.retention_verdict(live, None if last is None else last.ts, idle_before)
    if verdict is rules.Verdict.KEEP:
        return KEPT
    if last is None:  # erased meanwhile (another sweep): clean the summary, no second event
        await _final(owner, thread, "retention")
        return DONE
    unit = UnitOfWork(owner.user_id)
    unit.erase = Erasure(thread=thread, up_to_seq=last.seq, limit=limit, final=False)
    await owner.committer.commit(unit)
    left = await owner._store.history(
        owner.user_id, thread=thread, before_seq=last.seq + 1, limit=1
    )
    if left.events:
        return MORE
    unit = UnitOfWork(owner.user_id)
    unit.erase = Erasure(thread=thread, up_to_seq=last.seq)
    unit.emit(None, rules.THREAD_DELETED, rules.thread_deleted(thread, "retention"))
    await owner.committer.commit(unit)
    return DONE


async def erase_user(owner: Owner, msg: EraseUser) -> None:
    """Delete every row of the user, fenced; close its sockets; stop (see the module docstring).

    The attempts are stopped first (what they staged is discarded); if the erasing unit then
    fails, memory no longer matches the store: the session fails and is rebuilt from it.
    """
    session = owner.session
    for run in session.runs.values():
        owner.stop_attempt(run)
    unit = UnitOfWork(owner.user_id)
    unit.erase = Erasure(thread=None)
    try:
        await owner.committer.commit(unit)
    except StoreError as exc:
        raise SessionFailed(exc) from exc
    error = RuntimeClosedError("the user's data was erased")
    for run in session.runs.values():
        run.close_inbox()
        for reply in run.waiters:
            reply.fail(error)
        if run.question is not None:
            run.question.fail(error)
    session.runs.clear()
    session.threads.clear()
    owner.streams = owner._new_streams()
    owner.feed.erased(0)  # the owner goes on, as a fresh session: its next event is seq 1
