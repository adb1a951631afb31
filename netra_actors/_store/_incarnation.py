"""Proof that a node is gone: each process holds a lock that dies with it, and only with it.

A node's leases outlive it by up to ``lease_ttl`` (another node may only take a lease over once
it expired: the old owner might merely be slow). When the old owner can be *proven* gone, its
leases may be taken at once — the epoch still grows, so fencing stays exactly as strong:

* **SQLite** — every process holds an exclusive ``flock`` on its own file in a directory beside
  the database (``<db>.nodes/``), for as long as it runs. The kernel drops the lock when the
  process dies, however it dies (``kill -9`` included), and not before: a paused process
  (``SIGSTOP``) keeps it. A node that can take another node's lock knows that process is gone.
  (Local files only: ``flock`` over a network file system is not to be trusted.)
* **PostgreSQL** — the writer's connection (the one every unit of work of the node commits
  through) holds a session advisory lock keyed by the node's name. The server drops it when
  that session ends: the process died and its socket closed, or the connection was lost — and
  then the node cannot commit through it either. ``pg_try_advisory_lock`` by another node
  succeeds exactly then.

``reap`` in the group commit (:mod:`._group_commit`) asks which nodes with live leases are
proven gone and releases their leases in the same transaction; the recovery scan
(``_recovery_scan.py``) calls it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path

if sys.platform != "win32":
    import fcntl

HAS_FLOCK = sys.platform != "win32"
"""Not on Windows: no proof there, leases expire as before."""

PG_KEY = "hashtextextended({}, 7316040581)"
"""The advisory lock key of a node, from its name (computed by the database, the same for all)."""
PG_HOLD = f"SELECT pg_try_advisory_lock({PG_KEY.format('$1')})"
PG_DEAD = (
    f"SELECT n FROM unnest($1::text[]) AS t(n) WHERE pg_try_advisory_lock({PG_KEY.format('n')})"
)
PG_UNLOCK = f"SELECT pg_advisory_unlock({PG_KEY.format('n')}) FROM unnest($1::text[]) AS t(n)"


class FileIncarnation:
    """SQLite's incarnation locks: this node's ``flock``, and the proof that another's is gone."""

    def __init__(self, database: str, node: str) -> None:
        self.directory = Path(f"{database}.nodes")
        self.node = node
        self._fd: int | None = None

    @staticmethod
    def _name(node: str) -> str:
        return hashlib.sha256(node.encode()).hexdigest()[:32] + ".lock"

    def hold(self) -> None:
        """Take this node's lock (before it takes any lease)."""
        if not HAS_FLOCK:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / self._name(self.node), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, self.node.encode())
        self._fd = fd

    def dead(self, nodes: list[str]) -> list[str]:
        """Those of ``nodes`` whose process is proven gone (its lock could be taken)."""
        if not HAS_FLOCK or self._fd is None:
            return []
        return [node for node in nodes if node != self.node and self._gone(node)]

    def _gone(self, node: str) -> bool:
        path = self.directory / self._name(node)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return False  # no lock to take: nothing is proven (leases expire as before)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: the process lives (or is paused)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
            return True
        finally:
            os.close(fd)

    def release(self) -> None:
        """This node stops: remove its lock file (its leases were released)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            (self.directory / self._name(self.node)).unlink()
        os.close(self._fd)
        self._fd = None
