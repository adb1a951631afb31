"""The runtime's public API on trio: :class:`Runtime` and :func:`open_runtime`.

``async with open_runtime(config, agents=[...]) as runtime:`` opens the store, and gives a
:class:`Runtime` whose methods reach a user's session through its mailbox (the registry,
``_registry.py``, activates it on first use). Sessions passivate themselves when idle and are
rebuilt from the store. This module checks the arguments, builds the messages and wires the
runtime's shared parts (``SupervisorDeps``) together.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import trio
from sqlalchemy import MetaData

from ._agent import AgentBase, AgentRegistry
from ._cluster import Cluster
from ._config import RuntimeConfig
from ._conversation import CLIENT_TOOLS, ClientTool, check_client_tools
from ._core._threads import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_THREADS_LIMIT,
    MAX_HISTORY_LIMIT,
    MAX_THREADS_LIMIT,
    check_cursor,
    check_limit,
    check_message_id,
    check_thread,
)
from ._deadlines import Deadlines
from ._deps import Counters, SupervisorDeps
from ._exceptions import CommandError, StoreError
from ._follower import UserFollower
from ._messages import (
    CancelRun,
    DeleteThread,
    EraseUser,
    GetRuns,
    Reply,
    SendInput,
    SendToRun,
    StartRun,
    Subscribe,
    WaitRun,
)
from ._recovery_scan import scan
from ._registry import Registry
from ._resilience import Resilience
from ._retention import Retention
from ._runs import RunsSnapshot
from ._statistics import RuntimeStatistics, runtime_statistics
from ._store import HistoryPage, SqlStore, Store, ThreadsPage
from ._subscription import Subscription
from ._supervisor import UserSupervisor
from ._tracing import tracing_of
from ._validate import check_seq
from ._values import JSON, Event, RunInfo, dumps

if TYPE_CHECKING:
    from ._store import ClusterStore

MAX_USER_ID = 128


def check_user_id(user_id: str) -> None:
    """Raise :class:`CommandError` unless ``user_id`` is a usable user id."""
    if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID:
        raise CommandError(f"user ids are non-empty strings of at most {MAX_USER_ID} characters")


MAX_START_AHEAD = 366 * 86400.0
"""``start_at`` is at most a year ahead."""


def check_start_at(start_at: float | None) -> float | None:
    """``start_at`` checked: None to start now (also for a time that has passed), else the time
    (seconds since the epoch); :class:`CommandError` unless a number at most a year ahead."""
    if start_at is None:
        return None
    if isinstance(start_at, bool) or not isinstance(start_at, int | float):
        raise CommandError("start_at must be a number (seconds since the epoch)")
    now = time.time()
    if not math.isfinite(start_at) or start_at > now + MAX_START_AHEAD:
        raise CommandError("start_at must be at most a year ahead")
    return float(start_at) if start_at > now else None


class Runtime:
    """The runtime of one process. Get one from :func:`open_runtime`.

    Every method takes the ``user_id`` it acts for and can only ever touch that user's session.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        agents: AgentRegistry,
        store: Store,
        nursery: trio.Nursery,
        *,
        tracer: Callable[[str, str, Any], None] | None = None,
    ) -> None:
        self.config = config
        self.agents = agents
        self.store = store
        self._nursery = nursery
        self.resilience = Resilience(config.dependencies)
        """Retries and circuit breakers of the declared dependencies (shared by every user)."""
        self._deps = SupervisorDeps(
            config=config,
            store=store,
            agents=agents,
            counters=Counters(),
            threads=trio.CapacityLimiter(config.max_threads),
            deadlines=Deadlines(),
            resilience=self.resilience,
            leases=cast("ClusterStore", store) if hasattr(store, "acquire") else None,
            cluster=Cluster(
                cast("ClusterStore", store),
                self._member,
                poll_interval=config.cluster_poll,
                safety_interval=config.cluster_safety_poll,
                request_timeout=config.request_timeout,
            ),
            tracer=tracer,
            tracing=tracing_of(config.tracing),
        )
        self._registry = Registry(self._deps, nursery)
        nursery.start_soon(self._deps.deadlines.run)
        self.clustered = hasattr(store, "acquire")
        """True when the store holds leases (the SQL store): several processes may share it."""
        if self.clustered:
            nursery.start_soon(self._deps.cluster.run)
        self.retention: Retention | None = None
        """The retention task (``RuntimeConfig.retention_days``), or None when off."""
        if config.retention_days is not None:
            self.retention = Retention(config, store, self._request)
            nursery.start_soon(self.retention.run)
        nursery.start_soon(
            functools.partial(
                scan,
                store,
                self._registry.wake,
                interval=config.recovery_scan,
                batch=config.recovery_batch,
                stopped=lambda: self._registry.draining,
            )
        )

    def _member(self, user_id: str) -> UserSupervisor | UserFollower | None:
        return self._registry.member(user_id)

    async def _request(self, user_id: str, make: Callable[[], Any]) -> Any:
        check_user_id(user_id)
        return await self._registry.request(user_id, make)

    # -- the public API --------------------------------------------------------------------

    async def start_run(
        self,
        user_id: str,
        agent: str | None,
        input: JSON = None,
        *,
        if_busy: str | None = None,
        trace_context: Mapping[str, str] | None = None,
        thread: str | None = None,
        start_at: float | None = None,
    ) -> str:
        """Start a run of ``agent`` (the default agent if None) with ``input``. Returns its id.

        Returns once the run's start is committed (``pending``, ``starting``, ``running``).
        ``if_busy`` says what to do while the user has a live run: ``parallel`` (start it
        alongside), ``reject`` (raise :class:`BusyError`), ``enqueue`` (a durable ``pending`` run
        that starts once every run live before it ended) or ``interrupt`` (cancel the live runs
        first); None takes ``RuntimeConfig.if_busy``. ``trace_context``: the caller's W3C trace
        context (``{"traceparent": …}``), the parent of the run's span when tracing is on.
        ``thread``: the thread the run belongs to (1-128 characters of ``A-Z a-z 0-9 . _ : -``;
        None: ``main``). ``start_at`` (seconds since the epoch, at most a year ahead) schedules
        the run: it is committed ``pending`` (reason ``scheduled``) and starts at that time
        (± 1 s), on whichever node owns the user then; ``cancel_run`` cancels it. A time that
        has passed starts it now.
        """
        carrier = dict(trace_context) if trace_context else None
        thread = check_thread(thread)
        when = check_start_at(start_at)
        run_id: str = await self._request(
            user_id,
            lambda: StartRun(
                agent=agent,
                input=input,
                user_text=None,
                reply=Reply(),
                if_busy=if_busy,
                trace_context=carrier,
                thread=thread,
                start_at=when,
            ),
        )
        return run_id

    async def say(
        self,
        user_id: str,
        text: str,
        *,
        agent: str | None = None,
        if_busy: str | None = None,
        message_meta: Mapping[str, JSON] | None = None,
        trace_context: Mapping[str, str] | None = None,
        thread: str | None = None,
        message_id: str | None = None,
        earlier: Sequence[tuple[str, str]] = (),
        input: JSON = None,
        start_at: float | None = None,
        client_tools: Sequence[ClientTool | Mapping[str, JSON]] | None = None,
    ) -> str:
        """Commit the user's chat message and start a run with it as input. Returns the run id.

        ``if_busy`` and ``start_at``: see :meth:`start_run` (the message is committed whatever
        the policy, except when ``reject`` refuses the command). ``message_meta``: further
        fields of the committed ``message`` event's ``data`` (``role``, ``text`` and
        ``message_id`` are the runtime's). ``trace_context``: see :meth:`start_run`.
        ``thread``: the run's thread (None: ``main``). ``message_id``: the message's id, chosen
        by the client (the AG-UI message id), unique per user — a repeat raises
        :class:`CommandError` and commits nothing; None: the runtime makes one. ``earlier``:
        ``(message_id, text)`` of further user messages to commit first, in the same unit (ids
        as for ``message_id``). ``input``: the run's input instead of ``text`` (None: ``text``).
        ``client_tools``: the tools the client offers the run (an AG-UI request's ``tools``:
        :class:`~netra_actors.types.ClientTool` values or ``{"name", "description",
        "parameters"}`` mappings), kept with the message (``data.client_tools``; not with the
        ``earlier`` ones); the agent lists them with ``ctx.client_tools()`` and calls one with
        ``ctx.client_tool``.
        """
        if not isinstance(text, str):
            raise CommandError("text must be a string")
        thread = check_thread(thread)
        check_message_id(message_id)
        pairs = tuple(earlier)
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], str)):
                raise CommandError("earlier must hold (message_id, text) pairs")
            check_message_id(pair[0])
        when = check_start_at(start_at)
        meta = dict(message_meta) if message_meta else None
        if client_tools:
            meta = {**(meta or {}), CLIENT_TOOLS: check_client_tools(client_tools)}
        run_id: str = await self._request(
            user_id,
            lambda: StartRun(
                agent=agent,
                input=text if input is None else input,
                user_text=text,
                reply=Reply(),
                if_busy=if_busy,
                message_meta=meta,
                trace_context=dict(trace_context) if trace_context else None,
                thread=thread,
                message_id=message_id,
                earlier=pairs,
                start_at=when,
            ),
        )
        return run_id

    async def send_input(
        self, user_id: str, run_id: str, input: JSON, *, meta: Mapping[str, JSON] | None = None
    ) -> None:
        """Give a live run an input: committed as ``run_input``, then handed to its agent
        (``ctx.ask`` returns it). Restarted attempts receive every input of the run again.
        ``meta``: further fields of the ``run_input``'s ``data`` (``input`` is the runtime's)."""
        members = ""
        if meta:
            if "input" in meta:
                raise CommandError("meta cannot hold 'input'")
            members = dumps(dict(meta))[1:-1]
        await self._request(
            user_id,
            lambda: SendInput(run_id=run_id, input=input, reply=Reply(), meta=members),
        )

    async def cancel_run(self, user_id: str, run_id: str) -> None:
        """Cancel a live run: its uncommitted work is rolled back and it ends ``cancelled``."""
        await self._request(user_id, lambda: CancelRun(run_id=run_id, reply=Reply()))

    async def send_to_run(self, user_id: str, run_id: str, message: JSON) -> None:
        """Put ``message`` in the run's inbox (the agent reads it with ``ctx.receive()``)."""
        await self._request(
            user_id, lambda: SendToRun(run_id=run_id, message=message, reply=Reply())
        )

    async def get_runs(self, user_id: str, *, limit: int = 100) -> RunsSnapshot:
        """The user's head ``seq`` and most recent runs, newest first."""
        snapshot: RunsSnapshot = await self._request(
            user_id, lambda: GetRuns(limit=limit, reply=Reply())
        )
        return snapshot

    async def wait_run(self, user_id: str, run_id: str) -> RunInfo:
        """Wait until the run has ended; return its final snapshot."""
        info: RunInfo = await self._request(user_id, lambda: WaitRun(run_id=run_id, reply=Reply()))
        return info

    async def subscribe(
        self,
        user_id: str,
        *,
        resume_from: int | None = None,
        capacity: int | None = None,
        deltas: bool = False,
    ) -> Subscription:
        """A socket mailbox for the user's committed events.

        With ``resume_from=k`` it first yields every committed event with ``seq > k``, then live
        events; without it, only events committed after this call. ``k`` greater than the user's
        head ``seq`` raises :class:`ResumeBeyondHeadError`, and one that is not an integer in
        ``0..MAX_SEQ`` (2^63 - 1) :class:`CommandError` (both ``bad_request``). With ``deltas`` it also
        delivers provisional text (:class:`Delta`), starting with the text so far of every
        message still streaming; read it with :meth:`Subscription.receive_items`.
        """
        if resume_from is not None:
            check_seq("resume_from", resume_from)
        sub = Subscription(
            self.store,
            user_id,
            resume_from=resume_from,
            capacity=capacity or self.config.subscriber_buffer,
            page=self.config.replay_page,
            deltas=deltas,
        )
        await self._request(
            user_id, lambda: Subscribe(subscription=sub, resume_from=resume_from, reply=Reply())
        )
        return sub

    async def read_events(self, user_id: str, after_seq: int, limit: int) -> list[Event]:
        """Up to ``limit`` committed events of the user with ``seq > after_seq``, in order.

        ``after_seq`` not an integer in ``0..MAX_SEQ`` raises :class:`CommandError`."""
        check_user_id(user_id)
        check_seq("after_seq", after_seq)
        return await self.store.replay(user_id, after_seq, limit)

    async def replay(self, user_id: str, after_seq: int = 0) -> AsyncIterator[Event]:
        """Every committed event of the user with ``seq > after_seq``, in order, page by page."""
        page = self.config.replay_page
        while True:
            events = await self.read_events(user_id, after_seq, page)
            for event in events:
                yield event
            if len(events) < page:
                return
            after_seq = events[-1].seq

    async def threads(
        self, user_id: str, *, before: int | None = None, limit: int = DEFAULT_THREADS_LIMIT
    ) -> ThreadsPage:
        """A page of the user's threads, most recent activity first (``limit`` ≤ 100).

        ``before``: the ``next`` of the previous page. Read from the store (any node serves it).
        """
        check_user_id(user_id)
        before = check_cursor(before, "before")
        limit = check_limit(limit, default=DEFAULT_THREADS_LIMIT, most=MAX_THREADS_LIMIT)
        return await self.store.threads(user_id, before=before, limit=limit)

    async def history(
        self,
        user_id: str,
        *,
        thread: str | None = None,
        before_seq: int | None = None,
        limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> HistoryPage:
        """The committed events before ``before_seq`` (None: the head + 1), the last ``limit``
        (≤ 500) of them, in ``seq`` order; only ``thread``'s when given. ``more``: earlier
        events exist (ask again with ``before_seq=page.first_seq``). Read from the store."""
        check_user_id(user_id)
        if thread is not None:
            thread = check_thread(thread)
        before_seq = check_cursor(before_seq, "before_seq")
        limit = check_limit(limit, default=DEFAULT_HISTORY_LIMIT, most=MAX_HISTORY_LIMIT)
        return await self.store.history(user_id, thread=thread, before_seq=before_seq, limit=limit)

    async def delete_thread(self, user_id: str, thread: str) -> None:
        """Delete a thread: its live runs are cancelled (one rollback each), then, in one
        transaction, every event of the thread keeps its ``seq`` but becomes an ``erased``
        placeholder (``data`` ``{}``), its summary, message ids, runs' inputs and results and
        model calls go, and one ``thread_deleted`` event is committed. Deleting a thread with
        nothing left commits nothing. :class:`IllegalStateError` while a run of the thread is
        ``completing`` (try again)."""
        thread = check_thread(thread)
        await self._request(user_id, lambda: DeleteThread(thread=thread, reply=Reply()))

    async def erase_user(self, user_id: str) -> None:
        """Delete every row of the user (events, runs, threads, message ids, model calls), by
        its owner under its lease, on whichever node that is. Its attempts stop, its sockets on
        every node close with ``erased`` (close code 4410), and its next session starts at seq 1.
        Your own tables are yours to erase."""
        await self._request(user_id, lambda: EraseUser(reply=Reply()))

    async def export_user(self, user_id: str) -> AsyncIterator[Event]:
        """The user's whole log, page by page (bounded memory): every committed event, erased
        placeholders included, in ``seq`` order (what ``netra-actors export-user`` writes)."""
        async for event in self.replay(user_id, 0):
            yield event

    async def message_ids(self, user_id: str, ids: Sequence[str]) -> dict[str, str]:
        """Those of the client-chosen message ``ids`` (``say(message_id=…)``) the user has
        committed already, each with its thread. Read from the store."""
        check_user_id(user_id)
        return await self.store.message_ids(user_id, list(ids))

    async def first_event(self, user_id: str, run_id: str) -> Event | None:
        """The run's first committed event, from the store (None for an unknown run)."""
        check_user_id(user_id)
        return await self.store.first_event(user_id, run_id)

    async def get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        """The run's snapshot from the store, if it exists for this user."""
        check_user_id(user_id)
        return await self.store.get_run(user_id, run_id)

    def statistics(self) -> RuntimeStatistics:
        """A snapshot of counters and gauges (used by ``/healthz`` and ``/metrics``)."""
        return runtime_statistics(self._registry.users(), self._deps)

    async def check(self) -> None:
        """Raise :class:`StoreError` unless the store answers (for health checks)."""
        await self.store.check()

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (a budget, not a deadline)
        """A planned shutdown of this node (a rolling deploy) hands its users over: take no new
        users, let each running attempt reach its next commit for up to ``timeout`` seconds,
        then stop the rest without committing their open unit, and release every lease. No
        run ends: the next owner (another node's recovery scan, or this server restarted)
        resumes each one as a new attempt that replays what was committed."""
        await self._registry.drain(timeout)
        release_all = getattr(self.store, "release_all", None)
        if release_all is not None:
            with contextlib.suppress(Exception):
                await release_all()

    def is_active(self, user_id: str) -> bool:
        """Whether the user has an active supervisor right now."""
        return self._registry.is_active(user_id)

    async def aclose(self) -> None:
        """Stop every supervisor and its agents at once. Runs still live are resumed by their
        next owner (``lost``, then a new attempt that replays)."""
        self._close()

    def _close(self) -> None:
        self._registry.closed = True
        self._nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def open_runtime(
    config: RuntimeConfig | None = None,
    *,
    agents: Iterable[type[AgentBase]] = (),
    default_agent: str | None = None,
    store: Store | None = None,
    metadata: Iterable[MetaData] = (),
    tracer: Callable[[str, str, Any], None] | None = None,
) -> AsyncIterator[Runtime]:
    """Open the runtime (trio side). The store is opened and closed with it.

    ``metadata``: your own SQLAlchemy ``MetaData`` whose tables are created at open (for
    examples and tests; use your migrations in production). ``store``: a custom store (e.g.
    :class:`netra_actors.testing.MemoryStore`); the SQL store needs trio running as a guest of
    asyncio (:func:`netra_actors.run` or :func:`netra_actors.embed`).
    """
    config = config or RuntimeConfig()
    tracing_of(config.tracing)  # without the otel extra: ConfigError, before anything opens
    registry = AgentRegistry(agents, default=default_agent)
    with _gc_threshold(config.gc_threshold):
        async with _open(config, registry, store, metadata, tracer) as runtime:
            yield runtime


@contextlib.contextmanager
def _gc_threshold(threshold: tuple[int, int, int] | None) -> Iterator[None]:
    """Apply ``RuntimeConfig.gc_threshold`` while the runtime is open."""
    if threshold is None:
        yield
        return
    before = gc.get_threshold()
    gc.set_threshold(*threshold)
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextlib.asynccontextmanager
async def _open(
    config: RuntimeConfig,
    registry: AgentRegistry,
    store: Store | None,
    metadata: Iterable[MetaData],
    tracer: Callable[[str, str, Any], None] | None,
) -> AsyncIterator[Runtime]:
    own_store = store is None
    the_store: Store = (
        store if store is not None else await SqlStore.open(config, extra_metadata=metadata)
    )
    try:
        async with trio.open_nursery() as nursery:
            runtime = Runtime(config, registry, the_store, nursery, tracer=tracer)
            try:
                yield runtime
            finally:
                runtime._close()
    finally:
        # Every supervisor has stopped: hand this node's users back (runs left live are resumed
        # by their next owner, on whichever node, without waiting for the leases to expire).
        release_all = getattr(the_store, "release_all", None)
        if release_all is not None:
            with trio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await release_all()
        if own_store:
            with trio.CancelScope(shield=True):
                await the_store.aclose()
