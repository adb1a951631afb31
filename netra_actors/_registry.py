"""The registry of this node's active users: activation on first request, and the mailbox hand-off.

A user is active while a task runs their session (:func:`~._roles.run_user`); the registry maps
the user id to that task's :class:`~._roles.ActiveUser`. A request activates the user if needed
and puts its message in the user's mailbox; a session that just stopped closed its mailbox, so
the request activates the next one. Sessions remove themselves when they passivate, fail or stop.
The registry also refuses new users while the node drains and takes the active ones through a
planned shutdown (:meth:`Registry.drain`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import trio

from ._deps import SupervisorDeps
from ._exceptions import MailboxFullError, RuntimeClosedError
from ._follower import UserFollower
from ._messages import Drain, Message, Reply
from ._roles import ActiveUser, run_user
from ._supervisor import UserSupervisor


class Registry:
    """The users with a session on this node, each reached through its mailbox."""

    def __init__(self, deps: SupervisorDeps, nursery: trio.Nursery) -> None:
        self._deps = deps
        self._nursery = nursery
        self._users: dict[str, ActiveUser] = {}
        self.closed = False
        """Set when the runtime closes: every request fails with ``RuntimeClosedError``."""
        self._draining = False

    def users(self) -> list[ActiveUser]:
        """The active users right now."""
        return list(self._users.values())

    def is_active(self, user_id: str) -> bool:
        return user_id in self._users

    def member(self, user_id: str) -> UserSupervisor | UserFollower | None:
        """The role running the user's session here, if the user is active."""
        user = self._users.get(user_id)
        return None if user is None else user.supervisor

    async def request(self, user_id: str, make: Callable[[], Any]) -> Any:
        """Put ``make()`` in the user's mailbox (activating the user) and wait for its reply."""
        for _ in range(3):
            user = self._activate(user_id)
            msg = make()
            try:
                user.send.send_nowait(msg)
            except trio.WouldBlock:
                raise MailboxFullError("too many requests for this user; slow down") from None
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue  # that supervisor just stopped: the next one is activated
            return await msg.reply.wait()
        raise RuntimeClosedError("the user's session could not be activated")

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (a budget, not a deadline)
        """Take no new users, let live runs finish for up to ``timeout`` seconds, then have every
        owner end its live runs ``dead`` and release its lease (see ``Runtime.drain``)."""
        self._draining = True
        with trio.move_on_after(timeout):
            while any(u.supervisor.runs for u in self._users.values()):  # noqa: ASYNC110
                await trio.sleep(0.05)  # (runs end in many supervisors: a poll is simplest)
        replies: list[Reply[None]] = []
        for user in list(self._users.values()):
            if isinstance(user.supervisor, UserSupervisor):
                reply: Reply[None] = Reply()
                try:
                    user.send.send_nowait(Drain(reply))
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    continue
                replies.append(reply)
        with trio.move_on_after(max(1.0, timeout)):
            for reply in replies:
                with contextlib.suppress(Exception):
                    await reply.wait()

    def _activate(self, user_id: str) -> ActiveUser:
        if self.closed:
            raise RuntimeClosedError("the runtime is closed")
        user = self._users.get(user_id)
        if user is None:
            if self._draining:
                raise RuntimeClosedError("this server is shutting down; use another one")
            config = self._deps.config
            if len(self._users) >= config.max_sessions:
                raise MailboxFullError("too many active users right now; try again shortly")
            send, receive = trio.open_memory_channel[Message](config.mailbox_size)
            user = ActiveUser(user_id, send, UserSupervisor(self._deps, user_id, receive, send))
            self._users[user_id] = user
            self._nursery.start_soon(run_user, self._deps, user, receive, self._forget)
        return user

    def _forget(self, user: ActiveUser) -> None:
        if self._users.get(user.user_id) is user:
            del self._users[user.user_id]
