"""PostgreSQL's side of the cluster's relay of provisional text: ``NOTIFY netra_deltas``.

One connection of its own on the asyncio host (never the writer's: a delta must not wait for a
group commit, nor a commit for a delta). A batch of payloads (``_relay_codec.py``: each under
PostgreSQL's 8,000-byte limit) is one statement, ``pg_notify`` over an array, in autocommit: its
notifications reach every listener in order, after the ones sent before it. A batch that fails
is lost (the connection is dropped and opened again for the next one): the followers see the gap
in the message's offsets and stop streaming it.
"""

from __future__ import annotations

from typing import Any

from .._bridge import Bridge
from .._exceptions import StoreError
from ._postgres import asyncpg
from ._rows import HookOwner
from ._waiting import short

NOTIFY_DELTAS = "SELECT pg_notify('netra_deltas', p) FROM unnest($1::text[]) AS t(p)"


class PgDeltas:
    """Sends relayed deltas on a connection of its own (opened on first use)."""

    def __init__(self, bridge: Bridge, dsn: str, owner: HookOwner) -> None:
        self._bridge = bridge
        self._dsn = dsn
        self._owner = owner
        self._conn: Any = None
        self.sent = 0
        """Payloads sent so far."""

    async def send(self, payloads: list[str]) -> None:
        """Notify ``payloads`` in order; :class:`StoreError` if they could not be sent."""
        try:
            await self._bridge.run_on_host(self._send(payloads))
        except Exception as exc:
            raise StoreError(f"relaying deltas failed: {short(exc)}") from exc
        self.sent += len(payloads)

    async def _send(self, payloads: list[str]) -> None:
        conn = self._conn
        try:
            if conn is None or conn.is_closed():
                conn = self._conn = await asyncpg.connect(self._dsn, timeout=5)
            hook = self._owner.statement_hook
            if hook is not None:
                hook(NOTIFY_DELTAS)
            await conn.execute(NOTIFY_DELTAS, payloads, timeout=5)
        except BaseException:
            self._conn = None
            if conn is not None:
                conn.terminate()
            raise

    async def stop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._bridge.run_on_host(conn.close(timeout=2), shield=True)
