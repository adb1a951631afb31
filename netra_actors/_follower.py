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

It ends when it is idle (no socket, nothing pending) or when this node took the lease; the
session then runs an owner (:class:`~netra_actors._supervisor.UserSupervisor`) with the same
mailbox and subscriptions.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._exceptions import (
    CommandError,
    ResumeBeyondHeadError,
    RunFencedError,
    StoreError,
    SubscriptionClosedError,
    UnknownRunError,
)
from ._messages import (
    AgentExited,
    Ask,
    CancelRun,
    Checkpoint,
    GetRuns,
    Heartbeat,
    Message,
    Poke,
    Reply,
    SendInput,
    SendToRun,
    SlotReady,
    StartRun,
    Subscribe,
    TookLease,
    TryLease,
    WaitRun,
    Write,
)
from ._runs import RunsSnapshot
from ._values import JSON, loads

if TYPE_CHECKING:
    from ._subscription import Subscription
    from ._supervisor import SupervisorDeps

log = logging.getLogger("netra_actors.cluster")


@attrs.define
class Acquired:
    """How a follower ended: this node took the lease (``epoch``); ``first`` is handled first."""

    epoch: int
    first: Message | None


def command_of(msg: Message) -> tuple[str, dict[str, JSON]] | None:
    """The inbox form of a command that changes the session (None for anything else)."""
    match msg:
        case StartRun():
            return "start_run", {
                "agent": msg.agent,
                "input": msg.input,
                "user_text": msg.user_text,
                "if_busy": msg.if_busy,
                "message_meta": msg.message_meta,
            }
        case CancelRun():
            return "cancel_run", {"run_id": msg.run_id}
        case SendInput():
            return "send_input", {"run_id": msg.run_id, "input": msg.input}
        case SendToRun():
            return "send_to_run", {"run_id": msg.run_id, "message": msg.message}
    return None


def message_of(kind: str, payload: dict[str, Any]) -> Message:
    """The supervisor message for a command read from the inbox (its reply is the owner's)."""
    reply: Reply[Any] = Reply()
    match kind:
        case "start_run":
            return StartRun(
                agent=payload["agent"],
                input=payload["input"],
                user_text=payload["user_text"],
                reply=reply,
                if_busy=payload["if_busy"],
                message_meta=payload.get("message_meta"),
            )
        case "cancel_run":
            return CancelRun(run_id=payload["run_id"], reply=reply)
        case "send_input":
            return SendInput(run_id=payload["run_id"], input=payload["input"], reply=reply)
        case "send_to_run":
            return SendToRun(run_id=payload["run_id"], message=payload["message"], reply=reply)
    raise CommandError(f"unknown inbox command {kind!r}")


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
        subs: list[Subscription],
        head: int | None,
    ) -> None:
        self.user_id = user_id
        self._deps = deps
        self._store = deps.store
        self._rx = mailbox
        self._tx = send
        self.subs = subs
        self.head = head if head is not None else -1
        self.runs: dict[str, Any] = {}  # a follower has none (statistics read this)
        self._forwarding = 0
        self._done = False
        """True once this follower has ended (the session moved on)."""
        self._idle_since: float | None = None
        self.deadline: float | None = None
        self.wake_at = math.inf

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

    def abandon(self, reason: str) -> None:
        for sub in self.subs:
            sub._close(SubscriptionClosedError(reason))

    async def run(self, *, on_idle: Any) -> Acquired | None:
        """Follow until idle (None) or until this node takes the lease (:class:`Acquired`)."""
        cluster = self._deps.cluster
        async with trio.open_nursery() as nursery:
            if self.head < 0:
                assert self._deps.leases is not None
                heads = await self._deps.leases.heads([self.user_id])
                self.head = heads.get(self.user_id, 0)
            await self._catch_up()
            cluster.follow(self)
            try:
                result = await self._loop(nursery, on_idle)
            finally:
                self._done = True
                cluster.unfollow(self)
                nursery.cancel_scope.cancel()
        return result

    async def _loop(self, nursery: trio.Nursery, on_idle: Any) -> Acquired | None:
        wheel = self._deps.deadlines
        idle_timeout = self._deps.config.idle_timeout
        while True:
            try:
                msg = self._rx.receive_nowait()
            except trio.WouldBlock:
                now = trio.current_time()
                if self._idle():
                    if self._idle_since is None:
                        self._idle_since = now
                    self.deadline = self._idle_since + idle_timeout
                    if now >= self.deadline:
                        if on_idle():
                            return None
                        self._idle_since = None
                        continue
                    wheel.schedule(self, self.deadline)
                else:
                    self._idle_since = None
                    self.deadline = None
                msg = await self._rx.receive()
            if type(msg) is not Poke:
                self._idle_since = None
            acquired = await self._handle(nursery, msg)
            if acquired is not None:
                return acquired

    def _idle(self) -> bool:
        self.subs = [s for s in self.subs if not s.closed]
        return not self.subs and not self._forwarding

    async def _handle(self, nursery: trio.Nursery, msg: Message) -> Acquired | None:
        match msg:
            case Poke():
                await self._catch_up()
            case Subscribe():
                await self._catch_up()
                self._on_subscribe(msg)
            case StartRun() | CancelRun() | SendInput() | SendToRun():
                epoch = await self._try_acquire()
                if epoch is not None:
                    return Acquired(epoch, msg)
                await self._forward(nursery, msg)
            case GetRuns():
                await self._answer(msg.reply, self._get_runs(msg.limit))
            case WaitRun():
                self._deps.cluster.spawn(self._wait_run, msg)
            case TookLease():
                return Acquired(msg.epoch, None)
            case TryLease():
                epoch = await self._try_acquire()
                if epoch is not None:
                    return Acquired(epoch, None)
            case Checkpoint() | Ask():
                msg.reply.fail(RunFencedError("this node no longer owns the user's session"))
            case SlotReady():
                msg.release()
            case Heartbeat() | Write() | AgentExited():
                pass  # from an attempt of a time when this node owned the user: over
        return None

    async def _try_acquire(self) -> int | None:
        leases = self._deps.leases
        if leases is None:
            return None
        try:
            return await leases.acquire(self.user_id)
        except StoreError as exc:
            log.warning("user %r: taking the lease failed: %s", self.user_id, exc)
            return None

    async def _forward(self, nursery: trio.Nursery, msg: Any) -> None:
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
            msg.reply.set(data.get("run_id") if kind == "start_run" else None)
        finally:
            self._forwarding -= 1
            self.wake()

    async def _catch_up(self) -> None:
        """Hand the subscriptions every event committed after ``head``, in order."""
        page = self._deps.config.replay_page
        while True:
            try:
                events = await self._store.replay(self.user_id, self.head, page)
            except StoreError as exc:
                log.warning("user %r: following failed: %s", self.user_id, exc)
                return
            if not events:
                return
            self.head = events[-1].seq
            self.subs = [s for s in self.subs if s._offer(events)]
            self._deps.counters.follow_lag.observe(max(0.0, time.time() - events[-1].ts))
            if len(events) < page:
                return

    def _on_subscribe(self, msg: Subscribe) -> None:
        if msg.resume_from is not None and msg.resume_from > self.head:
            msg.reply.fail(
                ResumeBeyondHeadError(
                    f"resume_from {msg.resume_from} is greater than head_seq {self.head}"
                )
            )
            return
        msg.subscription._registered(self.head, self.wake)
        self.subs.append(msg.subscription)
        msg.reply.set(self.head)

    async def _get_runs(self, limit: int) -> RunsSnapshot:
        runs = await self._store.list_runs(self.user_id, limit)
        return RunsSnapshot(head_seq=self.head, runs=tuple(runs))

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
