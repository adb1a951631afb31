"""The registry of this node's active users: activation on first request, and the mailbox hand-off.

A user is active while a task runs their session (:func:`~._roles.run_user`); the registry maps
the user id to that task's :class:`~._roles.ActiveUser`. A request activates the user if needed
and puts its message in the user's mailbox; a session that just stopped closed its mailbox, so
the request activates the next one. Sessions remove themselves when they passivate, fail or stop.
The registry also refuses new users while the node drains and takes the active ones through a
planned shutdown (:meth:`Registry.drain`), and activates the users the recovery scan finds
(:meth:`Registry.wake`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import trio

from ._deps import SupervisorDeps
from ._exceptions import MailboxFullError, RuntimeClosedError
from ._follower import UserFollower
from ._messages import Drain, Message, Poke, Reply
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

    @property
    def draining(self) -> bool:
        return self._draining or self.closed

    def wake(self, user_id: str) -> bool:
        """The recovery scan found the user's runs without an owner: activate the user here
        (it takes the lease and recovers them). False if it is active already or cannot be."""
        if user_id in self._users:
            return False
        try:
            user = self._activate(user_id)
            user.send.send_nowait(Poke())
        except (MailboxFullError, RuntimeClosedError, trio.WouldBlock, trio.BrokenResourceError):
            return False
        return True

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (a budget, not a deadline)
        """Hand every user over (see ``Runtime.drain``): take no new users, let each attempt
        reach its next commit for up to ``timeout`` seconds (it stops there), then stop the
        rest without committing their open unit; each owner then stops and releases its lease."""
        self._draining = True
        self._tell_owners(final=False)
        with trio.move_on_after(timeout):
            while any(  # noqa: ASYNC110 (attempts end in many supervisors: a poll is simplest)
                isinstance(u.supervisor, UserSupervisor) and u.supervisor.session.attempts()
                for u in self._users.values()
            ):
                await trio.sleep(0.05)
        replies = self._tell_owners(final=True)
        with trio.move_on_after(max(1.0, timeout)):
            for reply in replies:
                with contextlib.suppress(Exception):
                    await reply.wait()
            while any(isinstance(u.supervisor, UserSupervisor) for u in self._users.values()):  # noqa: ASYNC110
                await trio.sleep(0.05)

    def _tell_owners(self, *, final: bool) -> list[Reply[None]]:
        replies: list[Reply[None]] = []
        for user in list(self._users.values()):
            if isinstance(user.supervisor, UserSupervisor):
                reply: Reply[None] = Reply()
                try:
                    user.send.send_nowait(Drain(reply, final))
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    continue
                replies.append(reply)
        return replies

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
