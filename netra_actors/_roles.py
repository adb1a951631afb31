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

from ._deps import SupervisorDeps
from ._feed import Feed
from ._follower import UserFollower
from ._logs import log_limited
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
    try:
        await _run_roles(deps, user, receive, on_idle)
        reason = "closed"
    except Exception as exc:
        # One line per kind of failure and period (a failing store would log one per attempt).
        msg = "the supervisor of user %r crashed; it restarts on next use"
        log_limited(log, logging.ERROR, type(exc).__name__, msg, user.user_id, exc_info=exc)
        reason = "session_failed"
    finally:
        # Synchronous from here on: answer everything still queued, then close the mailbox
        # so later senders get BrokenResourceError and activate a new supervisor.
        forget(user)
        while True:
            try:
                fail_message(receive.receive_nowait())
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
    feed = Feed()  # the user's sockets here: handed from role to role
    first: Message | None = None
    epoch = await deps.leases.acquire(user_id)
    while True:
        if epoch is None:
            follower = UserFollower(deps, user_id, receive, user.send, feed=feed)
            user.supervisor = follower
            acquired = await follower.run(on_idle=on_idle)
            if acquired is None:
                return  # idle
            epoch, first = acquired.epoch, acquired.first
        owner = UserSupervisor(
            deps, user_id, receive, user.send, epoch=epoch, feed=feed, first=first
        )
        user.supervisor = owner
        if await owner.run(on_idle=on_idle):
            return  # idle (the lease is released)
        first, epoch = None, None  # fenced: follow
