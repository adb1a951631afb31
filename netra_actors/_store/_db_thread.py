"""A thread that owns one database connection and serves a queue of waiters, batch by batch.

SQLite's writer and reader are each one of these: trio hands work over with a
``queue.SimpleQueue.put`` and gets the outcomes back with one ``run_sync_soon`` per batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import outcome

from .._bridge import Bridge
from ._rows import log
from ._waiting import Server, Waiter, resume_now, short, wait_outcome

_STOP: Any = object()


def _flat(item: Any) -> list[Any]:
    return item if isinstance(item, list) else [item]


class DbThread(Server):
    """A thread serving a queue of waiters (or lists of waiters, handled together).

    Trio side: :meth:`start`, :meth:`submit`, :meth:`stop`. Thread side: :meth:`setup`,
    :meth:`handle` (one call per batch; returns the waiters to resume), :meth:`cleanup`.
    If the thread dies, every waiter in flight and queued, and every later submission, fails
    with ``StoreError("the store <role> stopped: …")``.
    """

    role = "thread"

    def __init__(self, bridge: Bridge, batch_max: int) -> None:
        super().__init__()
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._bridge = bridge
        self._batch_max = batch_max
        self._opener: Waiter | None = None
        self._in_flight = 0
        """Items submitted whose batch has not come back to trio yet (trio side)."""
        self._back_at = 0.0
        """When the last batch came back to trio (``time.perf_counter``, trio side)."""
        self._busy = threading.Lock()
        """Held while the connection is in use: by the thread per batch, or by trio for a
        commit made at once (:meth:`SqliteWriter.commit_now`)."""
        self._thread = threading.Thread(target=self._main, name=f"netra-{self.role}", daemon=True)

    # -- trio side ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the thread; return once its connection is open (or raise why not)."""
        self._opener = Waiter()
        self._thread.start()
        try:
            await wait_outcome(self._opener)
        except BaseException:
            self._thread.join()
            raise

    def submit(self, item: Any) -> None:
        """Queue a waiter (or a list of waiters, handled together). Never blocks."""
        if self.dead is None:
            self._in_flight += 1
            self._q.put(item)
            return
        items = _flat(item)
        for w in items:
            w.fail(self.stopped_error())
        self._bridge.resume_soon(items)

    def queued(self) -> int:
        return self._q.qsize()

    async def stop(self) -> None:
        """Let the thread finish what is queued, close its connection and end; wait for it."""
        if not self.exited:
            self._exit_waiter = Waiter()
            self._q.put(_STOP)
            await wait_outcome(self._exit_waiter)
        self._thread.join()

    def die(self, exc: BaseException) -> None:
        """In trio: ``exc`` (a bug) met this thread's work outside the thread; it stops as if
        the thread had met it: every later submission fails, the thread closes its connection."""
        log.critical("the store %s stopped", self.role, exc_info=exc)
        self.dead = short(exc)
        self._q.put(_STOP)

    def handle_here(self, waiter: Waiter) -> None:
        """In trio, holding ``_busy``: :meth:`handle` ``waiter`` right here, in trio's thread (the
        outcome is on it). A bug met there stops this thread as if the thread had met it."""
        waiter.task = None
        try:
            self.handle([waiter])
        except BaseException as exc:
            self.die(exc)
            waiter.fail(self.stopped_error())

    def _handed_back(self, waiters: Sequence[Waiter], items: int) -> None:
        """In trio: a batch of ``items`` submitted items is done; resume its waiters."""
        self._in_flight -= items
        self._back_at = time.perf_counter()
        resume_now(waiters)

    def _on_exit(self, batch: list[Any], exc: BaseException | None) -> None:
        """In trio, once the thread has ended: fail whatever is left, wake :meth:`stop`."""
        left: list[Waiter] = []
        for item in batch:
            left.extend(_flat(item))
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                left.extend(_flat(item))
        self._ended(left, exc)

    # -- thread side -------------------------------------------------------------------------

    def setup(self) -> None:
        raise NotImplementedError

    def handle(self, batch: list[Any]) -> Sequence[Waiter]:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def idle_timeout(self) -> float | None:
        """Seconds the thread may wait for work before :meth:`handle` runs with no batch."""
        return None

    def _main(self) -> None:
        opener = self._opener
        assert opener is not None
        try:
            self.setup()
        except BaseException as exc:
            opener.fail(exc)
            self._cleanup()
            self.exited = True
            self.dead = short(exc)
            self._bridge.resume_soon([opener])
            return
        opener.result = outcome.Value(None)
        self._bridge.resume_soon([opener])
        batch: list[Any] = []
        error: BaseException | None = None
        get, get_nowait, batch_max = self._q.get, self._q.get_nowait, self._batch_max
        try:
            while True:
                try:
                    batch = [get(timeout=self.idle_timeout())]
                except queue.Empty:
                    with self._busy:
                        waiters = self.handle([])
                    if waiters:
                        self._bridge.resume_soon(waiters)
                    continue
                while batch[-1] is not _STOP and len(batch) < batch_max:
                    try:
                        batch.append(get_nowait())
                    except queue.Empty:
                        break
                stop = batch[-1] is _STOP  # the first stop ends the batch (die() and stop()
                # may each have queued one): what follows it is failed by _on_exit
                if stop:
                    batch.pop()
                if batch:
                    with self._busy:
                        waiters = self.handle(batch)
                    self._bridge.to_trio(self._handed_back, waiters, len(batch))
                    batch = []
                if stop:
                    break
        except BaseException as exc:
            log.critical("the store %s stopped", self.role, exc_info=True)
            error = exc
        self._cleanup()
        self._bridge.to_trio(self._on_exit, batch, error)

    def _cleanup(self) -> None:
        try:
            self.cleanup()
        except Exception:
            log.exception("closing the store %s's connection failed", self.role)
