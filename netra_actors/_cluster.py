"""This process's part of a cluster on one database: requests to other nodes, and what it follows.

Several processes on one database form a cluster with no other channel than the store
(architecture brief §5). A user's supervisor is the *owner* while it holds the user's lease, or a
*follower* while another node does. This module runs the three loops a node needs for that:

* **replies** — a follower posts a user's command to the store's inbox and waits here for the
  owner's answer (``request``);
* **inbox** — commands posted for users this node owns are handed to their supervisors, in order;
  both loops are woken by hints — PostgreSQL's notifications, or on a SQLite file the datagrams
  of ``_cluster_hints.py`` — and otherwise read the store only every ``safety_interval`` (2 s);
  without hints (SQLite in memory) every ``poll_interval`` (50 ms);
* **following** — followers learn of new commits: PostgreSQL notifies (a hint, never the data)
  and every follower also polls at a low rate; SQLite has no notifications of commits, so
  followers poll every ``poll_interval`` (50 ms);
* **relay** — the provisional text this node's owners stream goes to the other nodes, batched
  per message (``_relay_codec.py``) over PostgreSQL ``NOTIFY`` or local datagrams on SQLite
  (``_relay.py``); what other nodes relay goes to this node's followers of those users.

Every loop reads the store in bulk (one query per tick for every user concerned), never per user.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ._cluster_codec import raise_reply
from ._cluster_hints import LocalHints
from ._exceptions import RuntimeClosedError, StoreError
from ._ids import ulid
from ._messages import Reply
from ._relay import LocalRelay, PgRelay, Transport
from ._relay_codec import decode, encode, is_hint
from ._values import JSON, Delta, dumps

if TYPE_CHECKING:
    from ._store import ClusterStore

log = logging.getLogger("netra_actors.cluster")


class Member(Protocol):
    """What the loops need from a supervisor."""

    user_id: str

    @property
    def head(self) -> int:
        """The last ``seq`` its sockets were given."""
        ...

    @property
    def following(self) -> bool:
        """True while another node owns the user."""
        ...

    def wake(self) -> None:
        """Poke it (never blocks)."""
        ...

    def take_over(self) -> None:
        """The user's lease is free: try to become its owner (never blocks)."""
        ...

    def inbox(self, item: Any) -> bool:
        """Hand it a command from the inbox; False if it cannot take it now."""
        ...

    def went_back(self, head: int) -> None:
        """The store's head is below ours: the user's data was erased (never blocks)."""
        ...

    def relayed(self, deltas: list[Delta]) -> None:
        """Provisional text another node relayed for the user (never blocks)."""
        ...

    def relay_unsure(self) -> None:
        """Relayed text may have been lost or garbled: stop streaming what is open."""
        ...


RELAY_BACKLOG = 4096
"""Deltas waiting for the relay at most; past it they are dropped (the followers see a gap)."""
RELAY_FLUSH_WAIT = 1.0
"""Seconds a commit of a user waits at most for that user's last deltas to leave by the relay
(see :meth:`Cluster.relay_flushed`); past it, it commits anyway (the other nodes' sockets then
stop streaming that message and show its committed text)."""


class Cluster:
    """The cluster loops of one runtime. Run :meth:`run` in the runtime's nursery."""

    def __init__(
        self,
        store: ClusterStore,
        members: Callable[[str], Member | None],
        *,
        poll_interval: float,
        safety_interval: float,
        request_timeout: float,
    ) -> None:
        self._store = store
        self._members = members
        self._poll = poll_interval
        self._safety = safety_interval
        self._timeout = request_timeout
        self._lease_check = min(0.5, poll_interval * 10)
        """How often followers look whether their user's owner is gone (its lease expired)."""
        self._followers: dict[str, Member] = {}
        self._pending: dict[str, Reply[tuple[bool, str]]] = {}
        self._routed: set[str] = set()
        """Request ids handed to their owner and not yet seen gone from the inbox."""
        self._wake_replies = trio.Event()
        self._wake_inbox = trio.Event()
        self._wake_follow = trio.Event()
        self._notifies: bool = getattr(store, "notifies", False)
        """True when the store pushes hints of commits too (PostgreSQL): followers poll slowly."""
        self._nursery: trio.Nursery | None = None
        self.node: str = getattr(store, "node", "")
        self._outgoing: list[tuple[str, Delta]] = []
        self._wake_relay = trio.Event()
        self._relay_mark = 0
        """Deltas handed to the relay so far, counted in order."""
        self._relay_done = 0
        """The count of them sent (or given up on): the relay works in that order."""
        self._relay_progress = trio.Event()
        self._last_delta: dict[str, int] = {}
        """Per user streaming now, the mark of its last delta (dropped once it has left)."""
        self.relay: Transport | None = None
        """How provisional text reaches the other nodes (None: it does not)."""
        self.relay_dropped = 0
        """Deltas dropped before the relay sent them (backlog full, or the send failed)."""
        self.relay_refused = 0
        """Relayed payloads this node refused (garbled)."""
        directory = getattr(store, "relay_directory", None)
        self.hints: LocalHints | None = None
        """Inbox and reply hints over the local relay (a SQLite file; PostgreSQL notifies)."""
        if self._notifies and hasattr(store, "publish_deltas"):
            self.relay = PgRelay(store)
        elif isinstance(directory, str):
            self.relay = LocalRelay(directory, self.node)
            self.hints = LocalHints(
                self.relay, self.node, on_inbox=self.on_inbox, on_reply=self.on_reply
            )
        self.hinted = self._notifies or self.hints is not None
        """True when posted commands and replies come with hints: the inbox and replies loops
        then read the store only every ``safety_interval`` unless woken."""

    # -- followers ---------------------------------------------------------------------------

    def follow(self, member: Member) -> None:
        """``member`` follows its user's commits (another node owns the user)."""
        self._followers[member.user_id] = member
        self._wake_follow.set()

    def unfollow(self, member: Member) -> None:
        if self._followers.get(member.user_id) is member:
            del self._followers[member.user_id]

    @property
    def followed(self) -> int:
        return len(self._followers)

    @property
    def pending(self) -> int:
        """Commands posted for other nodes, waiting for their answer."""
        return len(self._pending)

    def on_event(self, user_id: str | None, seq: int) -> None:
        """A hint from the store: ``user_id`` committed up to ``seq`` (None: catch up all)."""
        if user_id is None:  # the listener (re)connected: relayed text may have been lost too
            for member in self._followers.values():
                member.relay_unsure()
                member.wake()
            self._wake_inbox.set()
            self._wake_replies.set()
            return
        follower = self._followers.get(user_id)
        if follower is not None and seq > follower.head:
            follower.wake()
        elif follower is not None and seq == 0 < follower.head:  # the user was erased
            follower.went_back(0)

    # -- the relay of provisional text -------------------------------------------------------

    def publish(self, user_id: str, delta: Delta) -> None:
        """A delta this node's owner of ``user_id`` streamed: relay it to the other nodes."""
        if self.relay is None:
            return
        if len(self._outgoing) >= RELAY_BACKLOG:  # the relay is stuck: its receivers see a gap
            self.relay_dropped += len(self._outgoing)
            self._outgoing.clear()
            self._advance(self._relay_mark)  # given up on (no commit waits for them)
        self._outgoing.append((user_id, delta))
        self._relay_mark += 1
        self._last_delta[user_id] = self._relay_mark
        self._wake_relay.set()

    def relay_pending(self, user_id: str) -> bool:
        """Whether deltas ``user_id``'s owner streamed here have not left by the relay yet."""
        mark = self._last_delta.get(user_id)
        if mark is None:
            return False
        if mark <= self._relay_done:
            del self._last_delta[user_id]
            return False
        return True

    async def relay_flushed(self, user_id: str) -> None:
        """Until the deltas ``user_id``'s owner streamed so far have left by the relay (at most
        :data:`RELAY_FLUSH_WAIT`). The owner's commit waits for it: the other nodes then get a
        message's last deltas before the commit that ends it (a delta after its message's
        commit is too late to show), whatever the relay's and the commit's speeds."""
        mark = self._last_delta.get(user_id, 0)
        with trio.move_on_after(RELAY_FLUSH_WAIT):
            while self._relay_done < mark:
                await self._relay_progress.wait()
        if self._last_delta.get(user_id) == mark:
            del self._last_delta[user_id]

    def _advance(self, upto: int) -> None:
        """The relay is done with every delta up to mark ``upto``: wake the commits waiting."""
        if upto > self._relay_done:
            self._relay_done = upto
            if upto == self._relay_mark:  # caught up: no user's delta is pending any more
                self._last_delta.clear()
            progress, self._relay_progress = self._relay_progress, trio.Event()
            progress.set()

    def on_deltas(self, payload: str) -> None:
        """A payload another node relayed: its deltas to this node's followers of its users."""
        try:
            node, items = decode(payload)
        except ValueError as exc:
            self.relay_refused += 1
            log.warning("cluster: a relayed delta payload was refused (%s)", exc)
            for member in self._followers.values():  # whose was it? unsure for every user
                member.relay_unsure()
            return
        if node == self.node:
            return
        by_user: dict[str, list[Delta]] = {}
        for user_id, delta in items:
            if user_id in self._followers:
                by_user.setdefault(user_id, []).append(delta)
        for user_id, deltas in by_user.items():
            self._followers[user_id].relayed(deltas)

    async def _relay_loop(self) -> None:
        """Send what the owners streamed: one batch per turn, the next one gathered meanwhile."""
        relay = self.relay
        assert relay is not None
        while True:
            await self._wake_relay.wait()
            self._wake_relay = trio.Event()
            items, self._outgoing = self._outgoing, []
            upto = self._relay_mark
            try:
                await relay.send(encode(self.node, items))
            except (OSError, StoreError, ValueError) as exc:
                self.relay_dropped += len(items)
                log.warning("cluster: relaying %d delta(s) failed: %s", len(items), exc)
            self._advance(upto)

    def on_payload(self, payload: str) -> None:
        """A datagram of the local relay: a hint, or provisional text."""
        if self.hints is not None and is_hint(payload):
            self.hints.received(payload)
        else:
            self.on_deltas(payload)

    def on_inbox(self, user_id: str | None) -> None:
        """A hint: a command was posted for ``user_id`` (None: for someone)."""
        self._wake_inbox.set()

    def on_reply(self, request_id: str | None) -> None:
        """A hint: the answer to ``request_id`` was written (None: to some request)."""
        if request_id is None or request_id in self._pending:
            self._wake_replies.set()

    def replied(self, request_id: str) -> None:
        """This node's owner committed the answer to ``request_id``: wake its asker."""
        self.on_reply(request_id)  # this node's follower may have asked before it took over
        if self.hints is not None:
            self.hints.reply(request_id)

    # -- requests to the owner -----------------------------------------------------------------

    async def post(self, user_id: str, kind: str, payload: JSON) -> str:
        """Post a command for the user's owner; returns its request id (await :meth:`answer`)."""
        request_id = "q_" + ulid()
        self._pending[request_id] = Reply()
        try:
            await self._store.post_command(user_id, request_id, kind, dumps(payload))
        except BaseException:
            del self._pending[request_id]
            raise
        if self.hints is not None:  # committed: the owner's read will find it
            self.hints.inbox(user_id)
        self._wake_replies.set()
        return request_id

    async def answer(self, request_id: str, *, on_wait: Callable[[], Any] | None = None) -> str:
        """Wait for the owner's answer to ``request_id``; its payload, or the refusal raised.

        ``on_wait`` is awaited about every half second while waiting (the follower tries to take
        the lease then: the owner may be gone).
        """
        reply = self._pending[request_id]
        try:
            with trio.move_on_after(self._timeout) as scope:
                while True:
                    with trio.move_on_after(0.5):
                        ok, payload = await reply.wait()
                        break
                    if on_wait is not None:
                        await on_wait()
            if scope.cancelled_caught:
                raise RuntimeClosedError(
                    f"the user's session did not answer within {self._timeout:g}s; the command "
                    "may or may not have been applied: check with get_runs"
                )
        finally:
            self._pending.pop(request_id, None)
        if not ok:
            raise_reply(payload)
        return payload

    # -- the loops -----------------------------------------------------------------------------

    def spawn(self, async_fn: Callable[..., Any], *args: Any) -> None:
        """Run a task that may outlive the session that started it (a forwarded command)."""
        if self._nursery is None:
            raise RuntimeClosedError("the cluster loops are not running")
        self._nursery.start_soon(async_fn, *args)

    async def run(self) -> None:
        listen = getattr(self._store, "listen", None)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if listen is not None:
                await listen(
                    self.on_event,
                    on_inbox=self.on_inbox,
                    on_reply=self.on_reply,
                    on_deltas=self.on_deltas,
                )
            if self.relay is not None:
                nursery.start_soon(self.relay.run, self.on_payload)
                nursery.start_soon(self._relay_loop)
            if self.hints is not None:
                nursery.start_soon(self.hints.run)
            nursery.start_soon(self._replies_loop)
            nursery.start_soon(self._inbox_loop)
            nursery.start_soon(self._follow_loop)

    def _interval(self, hinted: bool) -> float:
        return self._safety if hinted else self._poll

    async def _sleep(self, event_name: str, seconds: float) -> None:
        event: trio.Event = getattr(self, event_name)
        with trio.move_on_after(seconds):
            await event.wait()
        setattr(self, event_name, trio.Event())

    async def _replies_loop(self) -> None:
        while True:
            if not self._pending:
                await self._sleep("_wake_replies", math.inf)
                continue
            try:
                got = await self._store.take_replies(list(self._pending))
            except StoreError as exc:
                log.warning("cluster: reading replies failed: %s", exc)
                got = {}
            for request_id, outcome in got.items():
                reply = self._pending.get(request_id)
                if reply is not None:
                    reply.set(outcome)
            wait = self._interval(self.hinted) if self._pending else math.inf
            await self._sleep("_wake_replies", wait)

    async def _inbox_loop(self) -> None:
        while True:
            try:
                items = await self._store.take_commands(None, 256)
            except StoreError as exc:
                log.warning("cluster: reading the inbox failed: %s", exc)
                items = []
            seen = set()
            for item in items:
                # By request id: a row id can be reused once its row is gone (SQLite).
                seen.add(item.request_id)
                if item.request_id in self._routed:
                    continue
                member = self._members(item.user_id)
                if member is not None and not member.following and member.inbox(item):
                    self._routed.add(item.request_id)
            self._routed &= seen  # done items are deleted from the store: forget them
            await self._sleep("_wake_inbox", self._interval(self.hinted))

    async def _follow_loop(self) -> None:
        next_lease_check = 0.0
        while True:
            if self._followers:
                # The heads each follower had before the read: the store's head can only be
                # below one of those if the user's data was erased (seqs never go back
                # otherwise). A follower that caught up while the read was under way has a
                # newer head than the read: never mistaken for an erasure.
                before = {user: (f, f.head) for user, f in self._followers.items()}
                users = list(before)
                heads: dict[str, int] | None = None
                free: list[str] = []
                try:
                    heads = await self._store.heads(users)
                    now = trio.current_time()
                    if now >= next_lease_check:  # is an owner gone? (its lease expired)
                        next_lease_check = now + self._lease_check
                        free = await self._store.free_leases(users)
                except StoreError as exc:
                    log.warning("cluster: polling heads failed: %s", exc)
                for user_id, (follower, had) in before.items() if heads is not None else ():
                    assert heads is not None
                    if self._followers.get(user_id) is not follower:
                        continue  # gone, or another follower now (it reads the store itself)
                    head = heads.get(user_id, 0)  # no row: no event (an erased user)
                    if head > follower.head:
                        follower.wake()
                    elif head < had:  # the user's data was erased
                        follower.went_back(head)
                for user_id in free:  # take the user over on this use of it (a socket is open)
                    member = self._followers.get(user_id)
                    if member is not None:
                        member.take_over()
            wait = self._interval(self._notifies) if self._followers else math.inf
            await self._sleep("_wake_follow", wait)
