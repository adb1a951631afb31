"""The one place where work crosses between asyncio (the host), trio (the guest) and threads.

The process runs one asyncio event loop with trio as a guest (``trio.lowlevel.start_guest_run``):
both run in the same thread. SQLAlchemy's asyncio engine lives on the asyncio side; actors live on
the trio side. Every hand-off goes through this module:

* trio → asyncio: :meth:`Bridge.call_host` (schedule a callback on the host loop) and
  :meth:`Bridge.run_on_host` (run a coroutine there and wait for it in trio);
* asyncio/threads → trio: :meth:`Bridge.to_trio` (``TrioToken.run_sync_soon``);
* starting trio inside asyncio: :func:`start_guest` and :func:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import outcome
import trio

from ._exceptions import RuntimeClosedError

log = logging.getLogger("netra_actors")

T = TypeVar("T")


class Bridge:
    """Hand-offs between the asyncio host loop and the trio guest run of this process."""

    __slots__ = ("loop", "token")

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self.loop = loop
        self.token = token

    @classmethod
    def current(cls) -> Bridge:
        """The bridge of the running trio guest. Call from a trio task.

        Raises :class:`RuntimeClosedError` with instructions when trio is not running as a guest
        of an asyncio loop (e.g. under plain ``trio.run``).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeClosedError(
                "the SQL store needs trio running as a guest of an asyncio loop: start your "
                "program with netra_actors.run(main) or, inside an asyncio app, "
                "netra_actors.embed(...)"
            ) from None
        return cls(loop, trio.lowlevel.current_trio_token())

    # trio -> asyncio -------------------------------------------------------------------------

    def call_host(self, fn: Callable[..., object], *args: object) -> None:
        """Schedule ``fn(*args)`` on the host loop. Call from the host thread (trio or asyncio)."""
        self.loop.call_soon(fn, *args)

    def call_host_threadsafe(self, fn: Callable[..., object], *args: object) -> None:
        """Schedule ``fn(*args)`` on the host loop from a signal handler or another thread."""
        self.loop.call_soon_threadsafe(fn, *args)

    async def run_on_host(self, coro: Coroutine[Any, Any, T], *, shield: bool = False) -> T:
        """Run an asyncio coroutine on the host loop and wait for its result in trio.

        If the trio caller is cancelled, the asyncio task is cancelled too and this waits for it
        to finish (so no work is left running unobserved). With ``shield=True`` the trio caller's
        cancellation is ignored until the coroutine is done.
        """
        done = trio.Event()
        task = self.loop.create_task(coro)
        task.add_done_callback(lambda _t: self._set_soon(done))
        try:
            with trio.CancelScope(shield=shield):
                await done.wait()
        except trio.Cancelled:
            task.cancel()
            with trio.CancelScope(shield=True):
                await done.wait()
            raise
        return task.result()

    # asyncio / threads -> trio ---------------------------------------------------------------

    def to_trio(self, fn: Callable[..., object], *args: object) -> None:
        """Schedule ``fn(*args)`` to run in trio's context, from any thread or from asyncio."""
        try:
            self.token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            log.debug("trio run already finished; dropped a hand-off to %r", fn)

    def resume_soon(self, waiters: Sequence[Any]) -> bool:
        """From any thread or from asyncio: ONE hand-off to trio that resumes every waiter.

        Each waiter has ``task`` (a trio task parked in ``wait_task_rescheduled``, or ``None`` if
        it stopped waiting) and ``result`` (an ``outcome``). This is the store's only way back
        into trio: one ``run_sync_soon`` per batch, however many tasks it wakes. Returns False if
        the trio run has finished (nobody is left to resume).
        """
        try:
            self.token.run_sync_soon(_resume_all, waiters)
        except trio.RunFinishedError:
            log.debug("trio run already finished; dropped the outcomes of %d waiters", len(waiters))
            return False
        return True

    def _set_soon(self, event: trio.Event) -> None:
        self.to_trio(event.set)

    def run_from_thread(self, async_fn: Callable[[], Awaitable[T]]) -> T:
        """From a worker thread (a pykka actor): run ``async_fn()`` in trio, block until done.

        Only the calling thread blocks; trio never waits for it. Raises
        :class:`RuntimeClosedError` if the trio run has finished.
        """
        try:
            return trio.from_thread.run(async_fn, trio_token=self.token)
        except trio.RunFinishedError:
            raise RuntimeClosedError("the runtime has stopped") from None

    async def call_in_trio(
        self, nursery: trio.Nursery, async_fn: Callable[..., Awaitable[T]], *args: object
    ) -> T:
        """From asyncio: run ``async_fn(*args)`` as a trio task in ``nursery``; await its result.

        If the asyncio caller is cancelled, the trio task is cancelled too.
        """
        fut: asyncio.Future[outcome.Outcome[T]] = self.loop.create_future()
        scope = trio.CancelScope()
        stopped: outcome.Outcome[T] = outcome.Error(RuntimeClosedError("the runtime has stopped"))

        async def runner() -> None:
            result: outcome.Outcome[T] = stopped
            try:
                with scope:
                    result = await outcome.acapture(async_fn, *args)
                    if isinstance(result, outcome.Error) and isinstance(
                        result.error, trio.Cancelled
                    ):
                        result = stopped  # never let trio's Cancelled surface in asyncio
            finally:
                self.loop.call_soon_threadsafe(_resolve, fut, result)

        try:
            self.token.run_sync_soon(nursery.start_soon, runner)
        except trio.RunFinishedError:
            raise RuntimeClosedError("the runtime has stopped") from None
        try:
            result = await fut
        except asyncio.CancelledError:
            self.to_trio(scope.cancel)
            raise
        return result.unwrap()


async def in_worker_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking ``fn(*args)`` in one of trio's worker threads; cancelling the caller
    abandons the thread (its result is dropped), so a stuck call never holds the caller."""
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


def _resume_all(waiters: Sequence[Any]) -> None:
    reschedule = trio.lowlevel.reschedule
    for w in waiters:
        task = w.task
        if task is not None:
            w.task = None
            reschedule(task, w.result)


def _resolve(fut: asyncio.Future[outcome.Outcome[T]], result: outcome.Outcome[T]) -> None:
    if not fut.done():
        fut.set_result(result)


_ticks = 0


def _tick(fn: Callable[[], object]) -> None:
    global _ticks
    _ticks += 1
    fn()


def tick() -> int:
    """A number that changes between two batches of trio's run loop (each is a guest tick).

    trio runs the tasks that were ready at the start of a batch without telling one of them
    about the others; two calls in one batch see the same number. (Counted across every guest
    run of the process: it may change more often, never less.)"""
    return _ticks


def start_guest(
    async_fn: Callable[..., Awaitable[T]],
    *args: object,
    loop: asyncio.AbstractEventLoop,
    clock: trio.abc.Clock | None = None,
) -> asyncio.Future[outcome.Outcome[T]]:
    """Start ``async_fn(*args)`` as a trio guest run on ``loop``; the future gets its outcome."""
    done: asyncio.Future[outcome.Outcome[T]] = loop.create_future()

    def _done(result: outcome.Outcome[T]) -> None:
        if not done.done():
            done.set_result(result)

    def threadsafe(fn: Callable[[], object]) -> None:
        loop.call_soon_threadsafe(_tick, fn)

    def soon(fn: Callable[[], object]) -> None:
        loop.call_soon(_tick, fn)

    trio.lowlevel.start_guest_run(
        async_fn,
        *args,
        run_sync_soon_threadsafe=threadsafe,
        run_sync_soon_not_threadsafe=soon,
        done_callback=_done,
        host_uses_signal_set_wakeup_fd=True,
        clock=clock,
        strict_exception_groups=True,
    )
    return done


class _Stopper:
    """Lets the asyncio side cancel the trio main task gracefully (SIGINT/SIGTERM)."""

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.requested = False

    def request(self) -> None:
        self.requested = True
        if self.scope is not None and self.token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(self.scope.cancel)


def run(
    async_fn: Callable[..., Awaitable[T]],
    *args: object,
    handle_signals: bool = True,
) -> T | None:
    """Run ``async_fn(*args)`` in trio, as a guest of a fresh asyncio loop, and return its result.

    This is the standalone entry point (the CLI and the examples use it). With
    ``handle_signals`` SIGINT and SIGTERM cancel ``async_fn`` gracefully; ``run`` then returns
    ``None`` instead of raising.
    """
    stopper = _Stopper()

    async def guest_main() -> T:
        stopper.token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            stopper.scope = scope
            if stopper.requested:
                scope.cancel()
            return await async_fn(*args)
        raise _Stopped

    async def host_main() -> T | None:
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, stopper.request)
        done = start_guest(guest_main, loop=loop)
        try:
            result = await asyncio.shield(done)
        except asyncio.CancelledError:
            stopper.request()
            result = await done
        try:
            return result.unwrap()
        except _Stopped:
            return None

    return asyncio.run(host_main())


class _Stopped(Exception):
    """Internal: the guest main was cancelled by a stop request."""
