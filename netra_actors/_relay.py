"""How provisional text reaches the other nodes of a cluster: the relay's two transports.

The owner of a user streams its agents' deltas to its own sockets at once; the cluster loops
(``_cluster.py``) also batch them into payloads (``_relay_codec.py``) and hand them to one of
these, which every other node receives and gives to its followers (``_follower.py``).

* **PostgreSQL** — ``NOTIFY netra_deltas`` on a connection of its own, received by the store's
  ``LISTEN`` connection (:class:`PgRelay`; ``_store/_pg_deltas.py``).
* **SQLite** — the nodes of a cluster on one SQLite file share one machine (SQLite needs a local
  file system), so the simplest channel is a local datagram: each node binds a UDP socket on
  ``127.0.0.1`` and announces its port in a directory beside the database file
  (``<file>.relay/<node>``); a sender reads that directory at most once a second (and at its
  next send after a hint from a node it does not know yet) and sends each payload to every
  other node's port (:class:`LocalRelay`). Nothing touches the database file:
  its one writer is not slowed down by text that is never durable. A datagram that is dropped
  (a full receive buffer) is a gap the receiver detects, like a lost notification.
  The same datagrams carry the cluster's inbox and reply hints on SQLite (``_cluster_hints.py``).

Both are best-effort by design: what is lost costs the followers' sockets the rest of that
message's deltas, never a wrong text; its committed ``message`` still arrives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import trio

log = logging.getLogger("netra_actors.cluster")


class Transport(Protocol):
    async def send(self, payloads: list[str]) -> None:
        """Send ``payloads`` in order to every other node (raises ``OSError``/``StoreError``)."""
        ...

    async def run(self, on_payload: Callable[[str], None]) -> None:
        """Receive the other nodes' payloads until cancelled."""
        ...


class PgRelay:
    """PostgreSQL: ``NOTIFY netra_deltas`` (received by the store's listener, not here)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def send(self, payloads: list[str]) -> None:
        await self._store.publish_deltas(payloads)

    async def run(self, on_payload: Callable[[str], None]) -> None:
        await trio.sleep_forever()  # the store's listener calls on_payload


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class LocalRelay:
    """SQLite: UDP datagrams on ``127.0.0.1`` between the nodes of one machine."""

    rescan = 1.0
    """Seconds between two reads of the directory of nodes."""

    def __init__(self, directory: str, node: str) -> None:
        self.directory = directory
        self.node = node
        self._name = _UNSAFE.sub("_", node)
        self._out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._out.setblocking(False)
        self._peers: list[tuple[str, int]] = []
        self._names: set[str] = set()
        self._scanned = -1e9
        self.dropped = 0
        """Datagrams that could not be sent (a full buffer): their receivers see a gap (deltas)
        or wait for their next safety poll (hints)."""

    def _scan(self) -> None:
        now = time.monotonic()
        if now - self._scanned < self.rescan:
            return
        self._scanned = now
        peers = []
        names_seen = set()
        try:
            names = os.listdir(self.directory)
        except OSError:
            names = []
        for name in names:
            if name == self._name or name.startswith("."):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path) as f:
                    port_text, _, pid_text = f.read().strip().partition(" ")
                port, pid = int(port_text), int(pid_text)
            except (OSError, ValueError):
                continue
            if not _alive(pid):  # a node killed without cleaning up after itself
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            peers.append(("127.0.0.1", port))
            names_seen.add(name)
        self._peers, self._names = peers, names_seen

    def met(self, node: str) -> None:
        """A datagram came from ``node``: if it is new here, read the directory at the next send
        (not up to :attr:`rescan` later), so that a node that just started gets the answers."""
        if _UNSAFE.sub("_", node) not in self._names:
            self._scanned = -1e9

    async def send(self, payloads: list[str]) -> None:
        self._scan()
        for payload in payloads:
            data = payload.encode()
            for peer in self._peers:
                try:
                    self._out.sendto(data, peer)
                except (BlockingIOError, ConnectionRefusedError):
                    self.dropped += 1
                except OSError as exc:
                    self.dropped += 1
                    log.debug("relaying deltas to %s failed: %s", peer, exc)

    async def run(self, on_payload: Callable[[str], None]) -> None:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        path = os.path.join(self.directory, self._name)
        try:
            with contextlib.suppress(OSError):  # a bigger buffer: bursts of one flush
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            _announce(self.directory, path, port)
            while True:
                data = await sock.recv(65536)
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    text = ""  # garbled: the codec refuses it and the followers stop
                on_payload(text)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
            sock.close()
            self._out.close()


def _announce(directory: str, path: str, port: int) -> None:
    """Write this node's port (and pid) where the other nodes look, whole or not at all."""
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port} {os.getpid()}")
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: it exists
    return True
