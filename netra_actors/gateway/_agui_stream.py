"""The AG-UI event stream: one ``text/event-stream`` response of ``POST /agui`` or
``GET /agui/events`` (docs/protocol.md, "AG-UI over HTTP"), and what it reads of the store.

An :class:`SseStream` pumps a user's subscription through an :class:`~._agui.AguiMapper` to the
transport's ``send``: it learns a run met after its start from the run's earlier events, fills
the ``MESSAGES_SNAPSHOT`` frames of a thread-scoped stream with the thread's committed
conversation, resumes inside an event's group (``Last-Event-ID: k.i``), keeps the connection
alive, ends with its run's segment (``POST``), at the token's expiry or at shutdown, and — with
``onDisconnect: "cancel"`` — cancels its run when the client goes away first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from .._exceptions import SlowConsumerError, SubscriptionClosedError
from .._runtime import Runtime
from .._store._inspect import AdminReads
from .._subscription import Subscription
from .._values import Delta, Event
from ._agui import AguiMapper, SnapshotFill
from ._agui_messages import thread_messages
from ._connection import ConnectionDeps
from ._tokens import TokenClaims

log = logging.getLogger("netra_actors.gateway")

SSE_HEADERS = (("x-accel-buffering", "no"),)
"""Besides the content type; both transports add ``cache-control: no-store`` to every answer."""
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
KEEPALIVE = b": keepalive\n\n"
RUN_EVENTS_LIMIT = 10_000
"""How many of a run's events a stream reads to learn a run it meets after its start."""
MAX_HISTORY_PAGE = 500

Send = Callable[[bytes], Awaitable[None]]


class SseStream:
    """One open ``text/event-stream`` response. :meth:`run` it with the transport's ``send``;
    :meth:`request_close` ends it (server shutdown)."""

    def __init__(
        self,
        deps: ConnectionDeps,
        claims: TokenClaims,
        subscription: Subscription,
        mapper: AguiMapper,
        *,
        only_run: str | None,
        skip: int | None,
        only_thread: str | None = None,
        snapshot_thread: str | None = None,
        cancel_on_close: bool = False,
    ) -> None:
        self._deps = deps
        self._claims = claims
        self.subscription = subscription
        self._mapper = mapper
        self._only_run = only_run
        self._only_thread = only_thread
        """``GET /agui/events?threadId=``: only the runs of this netra thread."""
        self._snapshot_thread = snapshot_thread
        """A thread-scoped stream: the thread whose conversation a ``MESSAGES_SNAPSHOT`` holds."""
        self._cancel_on_close = cancel_on_close and only_run is not None
        """``onDisconnect: "cancel"``: a client that goes away before the run's segment ended
        cancels the run."""
        self._ended = False
        """The stream ended by itself (its run's segment ended, or the server closed it)."""
        self._skip = skip
        """For ``Last-Event-ID: k.i``: the first event received is k; drop its parts up to i."""
        self._scope = trio.CancelScope()
        self._discarded = False
        self._sending = trio.Lock()
        """The pump and the keepalive share the transport's ``send``: one at a time."""
        self.cors: tuple[tuple[str, str], ...] = ()
        """CORS headers for the response head (set by the routes)."""

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """The response head's headers besides the content type."""
        return SSE_HEADERS + self.cors

    def request_close(self, code: int = 1001, reason: str = "") -> None:
        """End the stream (the client reconnects with ``Last-Event-ID``)."""
        self._ended = True
        self._scope.cancel()

    def discard(self) -> None:
        """End the stream and give back what it holds (its subscription, its place among the
        user's sockets) — also when it never ran. Idempotent."""
        self._scope.cancel()
        if not self._discarded:
            self._discarded = True
            self.subscription.close()
            self._deps.limits.close_socket(self._claims.user, trio.current_time())
            if self._cancel_on_close and not self._ended:
                trio.lowlevel.spawn_system_task(self._cancel_run)

    async def _cancel_run(self) -> None:
        """Stop: the client closed the stream of a run it asked to cancel then."""
        run_id, user = self._only_run, self._claims.user
        assert run_id is not None
        try:
            with trio.fail_after(self._deps.config.command_timeout):
                await self._deps.runtime.cancel_run(user, run_id)
            log.info("user %r: the AG-UI stream of run %s closed; it is cancelled", user, run_id)
        except Exception as exc:  # it ended meanwhile, or the runtime is closing
            log.info("user %r: run %s not cancelled on disconnect (%s)", user, run_id, exc)

    async def run(self, send: Send) -> bool:
        """Send frames until the run ends (``POST``), the client goes away, the token expires,
        the socket falls behind or the server shuts down. Never raises but cancellation.

        Returns False when a send failed or timed out (the response must not be completed:
        a chunk may be half-written), True when the stream ended cleanly."""
        user = self._claims.user
        clean = False

        async def send_one(data: bytes) -> None:
            async with self._sending:
                await send(data)

        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._keepalive, send_one)
                    nursery.start_soon(self._expiry)
                    await self._pump(send_one)
                    nursery.cancel_scope.cancel()
            clean = True
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError):
            pass  # the client went away
        except* trio.TooSlowError:
            log.info("user %r: an AG-UI stream did not take a frame in time; dropping it", user)
        except* Exception:
            log.exception("user %r: an AG-UI stream failed; it is closed", user)
        finally:
            self.discard()
        return clean

    async def _pump(self, send: Send) -> None:
        sub, mapper = self.subscription, self._mapper
        user = self._claims.user
        while True:
            try:
                items = await sub.receive_items(256)
            except SlowConsumerError:
                log.info("user %r: an AG-UI stream fell behind; closing it", user)
                return
            except SubscriptionClosedError:
                return
            out: list[bytes] = []
            finished = False
            for item in items:
                if self._only_run is not None and item.run_id != self._only_run:
                    continue
                if self._only_thread is not None and not await self._in_thread(item):
                    continue
                await self._learn(item)
                if type(item) is Event:
                    if self._skip is not None:
                        frames, self._skip = mapper.resumed(item, self._skip), None
                    else:
                        frames = mapper.event(item)
                    await self._fill(mapper.take_fills())
                    if self._only_run is not None:
                        finished = any(
                            f.event["type"] in ("RUN_FINISHED", "RUN_ERROR") for f in frames
                        )
                elif type(item) is Delta:
                    frames = mapper.delta(item, time.time())
                out.extend(frame.sse() for frame in frames)
                if finished:
                    break
            if finished:
                self._ended = True
            if out:
                await send(b"".join(out))
            if finished:
                return

    async def _learn(self, item: Event | Delta) -> None:
        """Learn a run met after its start from its earlier events (once per run)."""
        run_id = self._mapper.needs_history(item)
        if run_id is not None:
            before = item.seq if type(item) is Event else None
            with trio.fail_after(self._deps.config.command_timeout):
                earlier = await run_events(self._deps.runtime, self._claims.user, run_id, before)
            self._mapper.learn(run_id, earlier)

    async def _fill(self, fills: list[SnapshotFill]) -> None:
        """Fill the mapper's ``MESSAGES_SNAPSHOT`` frames with the thread's conversation."""
        thread, committed = self._snapshot_thread, None
        for fill in fills:
            if thread is None:  # (a mapper makes snapshots only on a thread-scoped stream)
                raise AssertionError("a snapshot on a stream of no thread")
            if committed is None:
                with trio.fail_after(self._deps.config.command_timeout):
                    events = await thread_events(
                        self._deps.runtime, self._claims.user, thread, fill.upto
                    )
                committed = thread_messages(events)
            fill.fill(committed)

    async def _in_thread(self, item: Event | Delta) -> bool:
        """Whether ``item`` belongs to the stream's thread (a delta: its run's thread, learned
        from the run's first event when the stream has met none of the run's events)."""
        if isinstance(item, Event):
            return item.thread == self._only_thread
        if not self._mapper.knows(item.run_id):
            await self._learn(item)
        return self._mapper.thread_of(item.run_id) == self._only_thread

    async def _keepalive(self, send: Send) -> None:
        interval = self._deps.config.ping_interval
        while True:
            await trio.sleep(interval)
            await send(KEEPALIVE)

    async def _expiry(self) -> None:
        while True:
            left = self._claims.expires_at - time.time()
            if left <= 0:
                break
            await trio.sleep(min(left, 30.0))  # re-read the wall clock now and then
        log.info("user %r: the token of an AG-UI stream expired; closing it", self._claims.user)
        self._scope.cancel()


async def run_events(runtime: Runtime, user: str, run_id: str, before: int | None) -> list[Event]:
    """The run's committed events (those before seq ``before`` when given), in order."""
    store = runtime.store
    if isinstance(store, AdminReads):
        events = await store.admin_run_events(user, run_id, RUN_EVENTS_LIMIT)
    else:  # a store without per-run reads: its first event tells the AG-UI ids
        first = await runtime.first_event(user, run_id)
        events = [first] if first is not None else []
    return [e for e in events if before is None or e.seq < before]


async def thread_events(runtime: Runtime, user: str, thread: str, upto: int) -> list[Event]:
    """Every committed event of ``thread`` up to seq ``upto``, in order."""
    pages: list[list[Event]] = []
    before = upto + 1
    while True:
        page = await runtime.history(user, thread=thread, before_seq=before, limit=MAX_HISTORY_PAGE)
        pages.append(list(page.events))
        if not page.more or not page.events:
            break
        before = page.events[0].seq
    return [event for page in reversed(pages) for event in page]
