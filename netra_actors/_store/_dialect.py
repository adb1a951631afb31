"""The seam between the group commit and a database: the driver calls a dialect provides.

:class:`~._group_commit.GroupCommit` decides what a batch's transaction does; a dialect says how,
in SQL for its driver: ``_sqlite.py`` (``sqlite3``, in the writer thread) and ``_postgres.py``
(asyncpg, on the asyncio host). Changing a statement of the commit path is local to those two.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from ._waiting import Pending


class Transaction(Protocol):
    """The driver calls of one group commit, inside its transaction on the writer's connection.

    Each is one statement (or one per chunk) over all the users or rows it is given; the SQL
    lives in the dialect modules, ``_sqlite.py`` and ``_postgres.py``.
    """

    async def renew(self, node: str, ttl: float) -> None:
        """Keep ``node`` alive until ``now + ttl`` (database clock): its one row in
        ``netra_nodes``, which every unreleased lease of ``node`` lasts as long as."""

    async def others_alive(self, node: str) -> bool:
        """Whether a node other than ``node`` is alive."""
        ...

    async def ours(self, node: str) -> dict[str, int]:
        """``{user_id: epoch}`` of every unreleased lease of ``node``."""
        ...

    async def others_of(self, users: list[str], node: str) -> set[str]:
        """Those of ``users`` with an unreleased lease of another node."""
        ...

    async def acquire(self, users: list[str], node: str, ttl: float) -> list[tuple[str, int]]:
        """Take every lease of ``users`` that expired or is ``node``'s; ``(user, new epoch)``."""
        ...

    async def stale_heads(self, heads: list[tuple[str, int]]) -> set[str]:
        """Those of the ``(user_id, head_seq)`` pairs whose user's head is not that seq now."""
        ...

    async def spoil(self, users: list[str], node: str) -> None:
        """Move the epoch of each of ``users``' leases that ``node`` holds on by one, released
        (a claim that found the user changed: its owner's units must fail the fence)."""

    async def release(self, leases: list[tuple[str, int]], node: str) -> None:
        """Release each ``(user_id, epoch)`` that ``node`` still holds at that epoch."""

    async def release_all(self, node: str) -> None:
        """Release every lease of ``node``."""

    async def live_nodes(self, node: str) -> list[str]:
        """The nodes other than ``node`` that are alive (their row has not expired)."""
        ...

    async def dead_nodes(self, nodes: list[str]) -> list[str]:
        """Those of ``nodes`` proven gone: their incarnation lock could be taken
        (``_incarnation.py``)."""
        ...

    async def forget_nodes(self, nodes: list[str], lapsed_for: float) -> None:
        """Delete the rows of ``nodes`` (proven gone: every lease of theirs is free at once),
        and of every node that lapsed more than ``lapsed_for`` seconds ago."""

    async def post(self, commands: list[tuple[Any, ...]]) -> None:
        """Append ``(user_id, request_id, kind, payload, created_at)`` rows to the inbox."""

    async def take_replies(self, request_ids: list[str]) -> dict[str, tuple[bool, str]]:
        """Delete and return the replies that exist among ``request_ids``."""
        ...

    async def fence(self, leases: list[tuple[str, int]], node: str) -> set[tuple[str, int]] | None:
        """Those of the ``(user_id, epoch)`` pairs whose lease row does not say (``node``, that
        epoch) — another node took it, or a newer epoch; the leases stay locked (or under the
        write lock) until the transaction ends. Looked up by key: the cost grows with the
        batch, not with the leases ``node`` holds. ``None``: the check is left to the next
        :meth:`write` (PostgreSQL, outside the unit-by-unit retry: one statement checks and
        writes), which returns the lost pairs."""
        ...

    async def write(self, units: Sequence[Pending]) -> set[tuple[str, int]] | None:
        """Everything ``units`` commit: events, runs, the thread summary (one upsert row per
        user and thread of the batch, ``_rows.thread_rows``), client-chosen message ids, the
        developers' statements, consumed commands, replies, and (PostgreSQL) the hints
        delivered at COMMIT. After a :meth:`fence` that returned ``None``: the lost pairs,
        whose units wrote nothing (the others of ``units`` committed)."""

    def savepoint(self) -> AbstractAsyncContextManager[Any]:
        """A SAVEPOINT: an error inside rolls back only what ran inside."""
        ...


class Dialect(Protocol):
    """What a writer provides to :class:`GroupCommit`: its transactions."""

    sorts_units: bool
    """Write a batch's rows in key order (SQLite: one sweep of the primary-key B-tree)."""

    def transaction(
        self, *, with_statements: bool, isolated: bool
    ) -> AbstractAsyncContextManager[Transaction]:
        """Begin a transaction on the writer's connection; commit it at the end of the block,
        roll it back if the block raises. ``with_statements``: some unit has developers'
        statements (SQLAlchemy objects); ``isolated``: each unit will be in its own SAVEPOINT."""
        ...
