"""A user's session on a node that does not own the user: it follows, and forwards commands.

While another node holds the user's lease, this node's session for the user is a follower. It
owns the same things a supervisor owns for its sockets — the user's subscriptions on this node
and the head ``seq`` they have been given — and nothing else: no runs, no units of work.

* Events: it reads the user's new commits from the store when the cluster loop says there are
  some (a PostgreSQL notification, or a poll) and hands them to its subscriptions, in ``seq``
  order, gapless, exactly as the owner would (invariants 2, 3, 7).
* Commands that change the session (``start_run``, ``say``, ``cancel_run``, ``send_input``,
  ``send_to_run``) are posted to the store's inbox, in the order they arrived, for the owner;
  the owner's answer comes back to the caller. Before posting, and while it waits, the follower
  tries to take the lease: if the owner is gone (its lease expired), this node becomes the owner
  and handles the command itself.
* Reads (``get_runs``, ``wait_run``) are answered from the store.
* Provisional text: the deltas the owner's node relays (``_cluster.py``, ``_relay.py``) go to
  the subscriptions that take deltas, while this node is sure of the message's text from
  offset 0 (:class:`~netra_actors._streams.FollowedMessages`); a socket that subscribes
  mid-answer gets the text so far at offset 0, as on the owner.

It ends when it is idle (no socket, nothing pending) or when this node took the lease; the
session then runs an owner (:class:`~netra_actors._supervisor.UserSupervisor`) with the same
mailbox and sockets (:class:`~netra_actors._feed.Feed`). Its mailbox loop is the owner's
(``_mailbox.py``); the cluster codec is ``_cluster_codec.py``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._cluster_codec import command_of
from ._core._session import LiveRun, Session
from ._exceptions import (
    CommandError,
    RunFencedError,
    StoreError,
    UnknownRunError,
)
from ._feed import Feed
from ._mailbox import serve
from ._messages import (
    AgentExited,
    Ask,
    CancelRun,
    Checkpoint,
    DeleteThread,
    EraseUser,
    GetRuns,
    Heartbeat,
    Message,
    Poke,
    Relayed,
    Reply,
    SendInput,
    SendToRun,
    Sleep,
    SlotReady,
    StartRun,
    Subscribe,
    TookLease,
    TryLease,
    WaitRun,
    Write,
)
from ._runs import RunsSnapshot
from ._streams import FollowedMessages
from ._values import Delta, loads

if TYPE_CHECKING:
    from ._deps import SupervisorDeps
    from ._subscription import Subscription

log = logging.getLogger("netra_actors.cluster")


@attrs.define
class Acquired:
    """How a follower ended: this node took the lease (``epoch``); ``first`` is handled first."""

    epoch: int
    first: Message | None


class UserFollower:
    """A user's session on a node that does not own the user (see the module docstring)."""

    following = True

    def __init__(
        self,
        deps: SupervisorDeps,
        user_id: str,
        mailbox: trio.MemoryReceiveChannel[Message],
        send: trio.MemorySendChannel[Message],
        *,
        feed: Feed,
    ) -> None:
        self.user_id = user_id
        self._deps = deps
        self._store = deps.store
        self._rx = mailbox
        self._tx = send
        self.feed = feed
        self.session: Session[LiveRun] = Session(deps.rules)
        """Always without runs: its idle clock."""
        self._forwarding = 0
        self._done = False
        """True once this follower has ended (the session moved on)."""
        self.acquired: Acquired | None = None
        """How it ended: this node took the lease (None: it passivated)."""
        self.deadline: float | None = None
        self.wake_at = math.inf
        self.due = False
        self.behind: int | None = None
        """The store's head when the cluster loop saw it below ours: the user was erased."""
        config = deps.config
        self.followed = FollowedMessages(
            max_open=config.max_open_messages, max_chars=config.max_message_chars
        )
        """The messages the owner's node is streaming, as relayed."""
        self._unsure = False
        """Relayed text may have been lost (set by the cluster loop, acted on in the loop)."""

    @property
    def runs(self) -> dict[str, LiveRun]:
        return self.session.runs  # a follower has none (statistics read this)

    @property
    def subs(self) -> list[Subscription]:
        return self.feed.subs

    @property
    def head(self) -> int:
        return self.feed.head

    def wake(self) -> None:
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self._tx.send_nowait(Poke())

    def take_over(self) -> None:
        """The cluster loop saw the user's lease free: try to take it (on the loop's turn)."""
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self._tx.send_nowait(TryLease())

    def inbox(self, item: Any) -> bool:
        return False  # only an owner takes commands from the inbox

    def went_back(self, head: int) -> None:
        """The cluster loop saw the store's head below ours: the user's data was erased."""
        self.behind = head
        self.wake()

    def relayed(self, deltas: list[Delta]) -> None:
        """The cluster loop: provisional text the owner's node relayed (never blocks)."""
        try:
            self._tx.send_nowait(Relayed(deltas))
        except trio.WouldBlock:  # busy: these are lost, so the open messages stop here
            self.relay_unsure()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def relay_unsure(self) -> None:
        """The cluster loop: relayed text may have been lost or garbled (never blocks)."""
        self._unsure = True
        self.wake()

    def abandon(self, reason: str) -> None:
        self.feed.close(reason)

    async def run(self, *, on_idle: Callable[[], bool]) -> Acquired | None:
        """Follow until idle (None) or until this node takes the lease (:class:`Acquired`)."""
        cluster = self._deps.cluster
        async with trio.open_nursery() as nursery:
            if self.feed.head < 0:
                assert self._deps.leases is not None
                heads = await self._deps.leases.heads([self.user_id])
                self.feed.head = heads.get(self.user_id, 0)
            await self._catch_up()
            cluster.follow(self)
            try:
                await serve(self, self._rx, self._deps.deadlines, on_idle)
            finally:
                self._done = True
                cluster.unfollow(self)
                nursery.cancel_scope.cancel()
        return self.acquired

    # -- the mailbox loop's role -----------------------------------------------------------

    def quiet(self) -> bool:
        """No socket open, no command waiting for the owner's answer, nothing in the mailbox."""
        return (
            not self._forwarding
            and not self.feed.active()
            and self._rx.statistics().current_buffer_used == 0
        )

    def next_deadline(self) -> float | None:
        return self.session.next_deadline(trio.current_time(), self)

    async def on_time(self) -> bool:
        return self.session.may_passivate(trio.current_time(), self)

    async def handle(self, msg: Message) -> bool:
        """Handle one message. True once this node took the lease (``acquired``)."""
        if self._unsure:  # before anything relayed after the loss
            self._unsure = False
            self.followed.unsure()
        match msg:
            case Relayed():
                followed, feed = self.followed, self.feed
                for delta in msg.deltas:
                    sure = followed.accept(delta)
                    if sure is not None:
                        feed.deliver_delta(sure)
            case Poke():
                if self.behind is not None:
                    self.behind = None
                    self.feed.erased(0)
                await self._catch_up()
            case Subscribe():
                await self._catch_up()
                self.feed.subscribe(msg, self.wake, self.followed.snapshot())
            case (
                StartRun() | CancelRun() | SendInput() | SendToRun() | DeleteThread() | EraseUser()
            ):
                epoch = await self._try_acquire()
                if epoch is not None:
                    self.acquired = Acquired(epoch, msg)
                else:
                    await self._forward(msg)
            case GetRuns():
                await self._answer(msg.reply, self._get_runs(msg.limit))
            case WaitRun():
                self._deps.cluster.spawn(self._wait_run, msg)
            case TookLease():
                self.acquired = Acquired(msg.epoch, None)
            case TryLease():
                epoch = await self._try_acquire()
                if epoch is not None:
                    self.acquired = Acquired(epoch, None)
            case Checkpoint() | Ask() | Sleep():
                msg.reply.fail(RunFencedError("this node no longer owns the user's session"))
            case SlotReady():
                msg.release()
            case Heartbeat() | Write() | AgentExited():
                pass  # from an attempt of a time when this node owned the user: over
        return self.acquired is not None

    async def _try_acquire(self) -> int | None:
        leases = self._deps.leases
        if leases is None:
            return None
        try:
            return await leases.acquire(self.user_id)
        except StoreError as exc:
            log.warning("user %r: taking the lease failed: %s", self.user_id, exc)
            return None

    async def _forward(self, msg: Any) -> None:
        kind, payload = command_of(msg)  # type: ignore[misc]
        try:
            request_id = await self._deps.cluster.post(self.user_id, kind, payload)
        except StoreError as exc:
            msg.reply.fail(exc)
            return
        self._forwarding += 1
        # In the cluster's nursery: the answer may come after this follower became the owner.
        self._deps.cluster.spawn(self._await_answer, msg, kind, request_id)

    async def _await_answer(self, msg: Any, kind: str, request_id: str) -> None:
        async def owner_gone() -> None:
            if self._forwarding == 0 or self._done:
                return
            epoch = await self._try_acquire()
            if epoch is not None:  # the owner is gone: be the owner (its inbox has our command)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._tx.send(TookLease(epoch))

        try:
            payload = await self._deps.cluster.answer(request_id, on_wait=owner_gone)
        except BaseException as exc:
            msg.reply.fail(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            data = loads(payload)
            msg.reply.set(data.get("run_id") if kind == "start_run" else data.get("result"))
        finally:
            self._forwarding -= 1
            self.wake()

    async def _catch_up(self) -> None:
        """Hand the subscriptions every event committed after ``head``, in order."""
        deps = self._deps
        await self.feed.follow(
            self._store,
            self.user_id,
            page=deps.config.replay_page,
            counters=deps.counters,
            on_events=self.followed.committed,
        )

    async def _get_runs(self, limit: int) -> RunsSnapshot:
        runs = await self._store.list_runs(self.user_id, limit)
        return RunsSnapshot(head_seq=self.feed.head, runs=tuple(runs))

    async def _wait_run(self, msg: WaitRun) -> None:
        """Poll the store until the run ended (bounded by the caller's own patience)."""
        try:
            while True:
                info = await self._store.get_run(self.user_id, msg.run_id)
                if info is None:
                    raise UnknownRunError("no such run")
                if info.state.is_terminal:
                    msg.reply.set(info)
                    return
                await trio.sleep(0.1)
        except (CommandError, StoreError) as exc:
            msg.reply.fail(exc)

    async def _answer(self, reply: Reply[Any], coro: Any) -> None:
        try:
            result = await coro
        except (CommandError, StoreError) as exc:
            reply.fail(exc)
        else:
            reply.set(result)
