"""Hints between the nodes of a cluster on one SQLite file: "look at the inbox", "look at the replies".

PostgreSQL notifies the other nodes when a command is posted or answered (``netra_inbox``,
``netra_replies``); SQLite has no notifications, so without hints every node would read the inbox
every ``cluster_poll`` (50 ms) just in case. Instead, once a command it posted has committed, a
node sends an ``inbox`` hint to the other nodes, and an owner that committed the answer to a
forwarded command sends a ``reply`` hint. They go as datagrams of the local relay
(:class:`~._relay.LocalRelay`: every other node announced beside the file; they are few, and the
sender does not know which one owns the user), encoded by ``_relay_codec.py`` (a hint starts with
``!``, a delta payload never does). A node woken by one reads the store at once; otherwise its
inbox and replies loops read only every ``cluster_safety_poll`` (``_cluster.py``).

A hint is never the data, and it is only sent after what it announces has committed, so the
read it causes finds it. Hints are best effort: a datagram lost (a full receive buffer, or a
node started less than :attr:`~._relay.LocalRelay.rescan` ago that the sender has not heard
from yet) costs at most one safety interval; a garbled one is refused and counted, and costs the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ._relay import LocalRelay
from ._relay_codec import decode_hint, encode_hints

log = logging.getLogger("netra_actors.cluster")

HINT_BACKLOG = 1024
"""Names waiting to be hinted at most, per kind; past it the next hint says "any" instead."""

NameWake = Callable[[str | None], None]
"""Wakes a loop for a name (a user id, a request id), or for any name (None)."""


class LocalHints:
    """The hints a node sends and receives over its local relay. Run :meth:`run` beside it."""

    def __init__(
        self, relay: LocalRelay, node: str, *, on_inbox: NameWake, on_reply: NameWake
    ) -> None:
        self._relay = relay
        self._node = node
        self._on = {"inbox": on_inbox, "reply": on_reply}
        self._queued: dict[str, list[str] | None] = {"inbox": [], "reply": []}
        """The names to hint, per kind (None: too many, hint "any")."""
        self._wake = trio.Event()
        self.sent = 0
        """Hint datagrams handed to the relay (each to every other node)."""
        self.refused = 0
        """Hints received garbled, and ignored."""

    def inbox(self, user_id: str) -> None:
        """A command for ``user_id`` was posted (and has committed): tell the other nodes."""
        self._queue("inbox", user_id)

    def reply(self, request_id: str) -> None:
        """The answer to ``request_id`` was written (and has committed): tell the other nodes."""
        self._queue("reply", request_id)

    def _queue(self, kind: str, name: str) -> None:
        names = self._queued[kind]
        if names is not None:
            if len(names) < HINT_BACKLOG:
                names.append(name)
            else:
                self._queued[kind] = None
        self._wake.set()

    async def run(self) -> None:
        """Send what was queued: one batch per turn, the next one gathered meanwhile."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            queued, self._queued = self._queued, {"inbox": [], "reply": []}
            payloads = []
            for kind, names in queued.items():
                if names is None or names:
                    payloads += encode_hints(kind, self._node, names or ())
            self.sent += len(payloads)
            await self._relay.send(payloads)  # it counts what it could not send

    def received(self, payload: str) -> None:
        """A hint another node sent: wake the loop it concerns."""
        try:
            kind, node, names = decode_hint(payload)
        except ValueError as exc:
            self.refused += 1
            log.debug("cluster: %s", exc)
            return
        if node == self._node:
            return
        self._relay.met(node)
        wake = self._on[kind]
        if not names:
            wake(None)
        for name in names:
            wake(name)
