"""The task that runs one active user's session on this node, and its roles.

While this node holds the user's lease the session runs as its owner (:class:`UserSupervisor`);
while another node holds it, as a follower (:class:`UserFollower`) that forwards commands and
relays the owner's commits to the sockets here. The task switches between the two as the lease
moves, handing the user's sockets (one :class:`~._feed.Feed`) from role to role. A store without
leases has only the owner role. When the session stops (idle, crashed or shut down) the task
answers every message still queued and closes the mailbox, so that the next request activates a
new session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ._commit import SessionFailed
from ._deps import SupervisorDeps
from ._exceptions import RuntimeClosedError, StoreError
from ._follower import UserFollower
from ._logs import STORE_FAILURES, log_limited
from ._messages import Message, fail_message
from ._supervisor import UserSupervisor

log = logging.getLogger("netra_actors")


class ActiveUser:
    """The registry's entry for one active user: its mailbox and the role running its session."""

    __slots__ = ("send", "supervisor", "user_id")

    def __init__(
        self,
        user_id: str,
        send: trio.MemorySendChannel[Message],
        supervisor: UserSupervisor | UserFollower,
    ) -> None:
        self.user_id = user_id
        self.send = send
        self.supervisor = supervisor


def store_failure(exc: BaseException) -> StoreError | None:
    """The :class:`StoreError` that stopped a supervisor, if that is what ``exc`` is: the error
    itself, a :class:`SessionFailed` around it, or an exception group of nothing else."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, SessionFailed):
        return exc.error
    if isinstance(exc, BaseExceptionGroup):
        errors = [store_failure(e) for e in exc.exceptions]
        if errors and all(errors):
            return errors[0]
    return None


async def run_user(
    deps: SupervisorDeps,
    user: ActiveUser,
    receive: trio.MemoryReceiveChannel[Message],
    forget: Callable[[ActiveUser], None],
) -> None:
    """Run the user's session until it passivates or fails; ``forget`` removes its entry."""

    def on_idle() -> bool:
        # Synchronous: nothing can slip into the mailbox between this check and removal.
        if receive.statistics().current_buffer_used:
            return False
        forget(user)
        return True

    reason = "shutdown"
    error: StoreError | None = None
    try:
        await _run_roles(deps, user, receive, on_idle)
        reason = "closed"
    except Exception as exc:
        reason, error = "session_failed", store_failure(exc)
        if error is None:
            # One line per kind of failure and period.
            msg = "the supervisor of user %r crashed; it restarts on next use"
            log_limited(log, logging.ERROR, type(exc).__name__, msg, user.user_id, exc_info=exc)
        else:
            # The database, not the session's code: one line per period, however many users
            # and retries hit it (a full disk fails every activation); the callers are told.
            log_limited(
                log,
                logging.ERROR,
                "session",
                "the session of user %r stopped: the store failed (%s); it restarts on next use",
                user.user_id,
                error,
                limiter=STORE_FAILURES,
            )
    finally:
        # Synchronous from here on: answer everything still queued, then close the mailbox
        # so later senders get BrokenResourceError and activate a new supervisor. If the store
        # stopped it, the answer says so (its cause): "try again later", not "the server is
        # shutting down".
        stopped = None
        if error is not None:
            stopped = RuntimeClosedError(f"the user's session stopped: the store failed: {error}")
            stopped.__cause__ = error
        forget(user)
        while True:
            try:
                fail_message(receive.receive_nowait(), stopped)
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        receive.close()
        user.supervisor.abandon(reason)


async def _run_roles(
    deps: SupervisorDeps,
    user: ActiveUser,
    receive: trio.MemoryReceiveChannel[Message],
    on_idle: Callable[[], bool],
) -> None:
    """Own the user while this node holds its lease, follow it while another node does."""
    owner = user.supervisor
    assert isinstance(owner, UserSupervisor)
    if deps.leases is None:
        await owner.run(on_idle=on_idle)
        return
    user_id = user.user_id
    feed = owner.feed  # the user's sockets here: handed from role to role
    first: Message | None = None
    epoch = await deps.leases.claim(user_id)  # no lease write to wait for: fencing decides
    took_over = False
    unused: UserSupervisor | None = owner  # the registry's, never run: the first owner
    while True:
        if epoch is None:
            unused = None
            follower = UserFollower(deps, user_id, receive, user.send, feed=feed)
            user.supervisor = follower
            acquired = await follower.run(on_idle=on_idle)
            if acquired is None:
                return  # idle
            epoch, first = acquired.epoch, acquired.first
            took_over = True
        if unused is not None:  # claimed at once: it owns the user under that epoch
            owner, unused = unused, None
            owner.committer.epoch = epoch
        else:
            owner = UserSupervisor(
                deps, user_id, receive, user.send, epoch=epoch, feed=feed, first=first
            )
        user.supervisor = owner
        if took_over:  # the follower's own forwarded command may wait in the inbox: read it now
            took_over = False
            deps.cluster.on_inbox(user_id)
        if await owner.run(on_idle=on_idle):
            return  # idle (the lease is released)
        first, epoch = None, None  # fenced: follow
