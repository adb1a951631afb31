"""PostgreSQL's delivery hints: one ``LISTEN`` connection per store, on the asyncio host.

The writer's transactions send ``pg_notify`` on three channels (:mod:`._postgres`), and the
cluster's relay sends provisional text on a fourth (``netra_deltas``, :mod:`._pg_deltas`); this
receives them and hands them to trio's callbacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._bridge import Bridge
from ._base import EventHint, NameHint
from ._postgres import asyncpg
from ._rows import HookOwner, log
from ._waiting import short

CHANNELS = ("netra_events", "netra_inbox", "netra_replies", "netra_deltas")


class PgListener:
    """One ``LISTEN`` connection per store on the asyncio loop, health-checked and reconnected.

    Notifications are hints (``user_id seq``, a user id, a request id), never data: they are
    handed to trio in one ``run_sync_soon`` per loop turn. After every (re)connect each callback
    gets its catch-up call (``None``): what was notified while the connection was down is lost.
    """

    health_interval = 2.0
    backoff_max = 2.0

    def __init__(self, bridge: Bridge, dsn: str, owner: HookOwner) -> None:
        self._bridge = bridge
        self._dsn = dsn
        self._owner = owner
        self._on_event: EventHint | None = None
        self._on_inbox: NameHint | None = None
        self._on_reply: NameHint | None = None
        self._on_deltas: NameHint | None = None
        self._pending: list[tuple[str | None, str | None]] = []
        self._task: asyncio.Task[None] | None = None
        self._first_attempt: Callable[[], None] | None = None
        self.connects = 0
        """Successful (re)connections so far."""
        self.conn: Any = None
        """The current listener connection (tests terminate it)."""

    def set_callbacks(
        self,
        on_event: EventHint,
        on_inbox: NameHint | None,
        on_reply: NameHint | None,
        on_deltas: NameHint | None = None,
    ) -> None:
        self._on_event, self._on_inbox, self._on_reply = on_event, on_inbox, on_reply
        self._on_deltas = on_deltas

    def start(self, on_first_attempt: Callable[[], None]) -> None:
        """From trio (same thread as the host loop): start the listener task.
        ``on_first_attempt()`` is called (on the loop) once the first connection attempt ended."""
        self._first_attempt = on_first_attempt
        self._task = self._bridge.loop.create_task(self._run())

    def _attempted(self) -> None:
        first, self._first_attempt = self._first_attempt, None
        if first is not None:
            first()

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        await self._bridge.run_on_host(cancel(), shield=True)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                for channel in CHANNELS:
                    await conn.add_listener(channel, self._on_notify)
                self.conn = conn
                self.connects += 1
                delay = 0.05
                self._queue((None, None))  # catch up: hints may have been missed meanwhile
                self._attempted()
                while not conn.is_closed():
                    try:
                        await asyncio.wait_for(lost.wait(), self.health_interval)
                    except TimeoutError:
                        hook = self._owner.statement_hook
                        if hook is not None:
                            hook("SELECT 1")
                        await conn.fetchval("SELECT 1", timeout=self.health_interval)
                    else:
                        break
                log.warning("the store's listener connection was lost; reconnecting")
            except asyncio.CancelledError:
                if conn is not None:
                    conn.terminate()
                raise
            except Exception as exc:
                log.warning("the store's listener failed (%s); reconnecting", short(exc))
            self._attempted()
            if conn is not None:
                conn.terminate()
            self.conn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._queue((channel, payload))

    def _queue(self, item: tuple[str | None, str | None]) -> None:
        if not self._pending:
            self._bridge.call_host(self._flush)
        self._pending.append(item)

    def _flush(self) -> None:
        items, self._pending = self._pending, []
        self._bridge.to_trio(self._deliver, items)

    def _deliver(self, items: list[tuple[str | None, str | None]]) -> None:
        """In trio: call the callbacks; one that raises is logged, the others still run."""
        for channel, payload in items:
            try:
                if channel is None:
                    if self._on_event is not None:
                        self._on_event(None, 0)
                elif channel == "netra_events":
                    if self._on_event is not None and payload:
                        user_id, _, seq = payload.rpartition(" ")
                        self._on_event(user_id, int(seq))
                elif channel == "netra_deltas":
                    if self._on_deltas is not None and payload is not None:
                        self._on_deltas(payload)
                elif channel == "netra_inbox":
                    if self._on_inbox is not None and payload is not None:
                        self._on_inbox(payload)
                elif self._on_reply is not None and payload is not None:
                    self._on_reply(payload)
            except Exception:
                log.exception("a store notification callback raised")
