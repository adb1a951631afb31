"""The runtime: the session registry and the public API, on trio.

``async with open_runtime(config, agents=[...]) as runtime:`` opens the store, and gives a
:class:`Runtime` whose methods reach a user's supervisor through its mailbox (activating it on
first use). Supervisors passivate themselves when idle and are rebuilt from the store.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio
from sqlalchemy import MetaData

from ._agent import AgentBase, AgentRegistry
from ._cluster import Cluster
from ._commit import SessionFailed
from ._config import RuntimeConfig
from ._deadlines import Deadlines
from ._exceptions import (
    CommandError,
    MailboxFullError,
    RuntimeClosedError,
    StoreError,
)
from ._follower import UserFollower
from ._histogram import HistogramSnapshot
from ._log_limit import STORE_FAILURES
from ._messages import (
    CancelRun,
    Drain,
    GetRuns,
    Message,
    Reply,
    SendInput,
    SendToRun,
    StartRun,
    Subscribe,
    WaitRun,
    fail_message,
)
from ._resilience import Resilience
from ._runs import RunsSnapshot
from ._store import SqlStore, Store, StoreStatistics

if TYPE_CHECKING:
    from ._store import ClusterStore
from ._deps import Counters, SupervisorDeps
from ._feed import Feed
from ._subscription import Subscription
from ._supervisor import UserSupervisor
from ._validate import check_seq
from ._values import JSON, Event, RunInfo

log = logging.getLogger("netra_actors")

MAX_USER_ID = 128


@attrs.frozen(kw_only=True)
class RuntimeStatistics:
    """A snapshot of the runtime."""

    active_sessions: int
    """Users with an active supervisor."""
    live_runs: int
    subscriptions: int
    """Open socket mailboxes."""
    mailbox_depth_max: int
    """The fullest supervisor mailbox right now."""
    runs_started: int
    runs_ended: dict[str, int]
    restarts: int
    rollbacks: int
    events_delivered: int
    commit_to_mailbox: HistogramSnapshot
    """Delay from an event's commit to its hand-off to the user's socket mailboxes."""
    threads_live: int
    """Threads of threaded agents that have not ended (abandoned ones included)."""
    threads_abandoned: int
    """Threads still running code for an attempt that is over (cancellation ignored)."""
    threads_waiting: int
    """Threaded runs waiting for a free thread."""
    store: StoreStatistics
    node: str | None = None
    """This process's name in the cluster (None: a store without leases)."""
    owned_users: int = 0
    """Users whose lease this node holds (their supervisor runs here)."""
    followed_users: int = 0
    """Users with sockets here whose owner is another node."""
    forwarded_pending: int = 0
    """Commands posted to other nodes' inboxes, waiting for the answer."""
    fenced_units: int = 0
    """Units this node could not commit: another node had taken the user over."""
    follow_lag: HistogramSnapshot | None = None
    """From an event's commit (on another node) to its hand-off to this node's sockets."""


class _Session:
    """The registry's entry for one active user."""

    __slots__ = ("send", "supervisor")

    def __init__(
        self, send: trio.MemorySendChannel[Message], supervisor: UserSupervisor | UserFollower
    ) -> None:
        self.send = send
        self.supervisor = supervisor


def check_user_id(user_id: str) -> None:
    """Raise :class:`CommandError` unless ``user_id`` is a usable user id."""
    if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID:
        raise CommandError(f"user ids are non-empty strings of at most {MAX_USER_ID} characters")


def store_failure(exc: BaseException) -> StoreError | None:
    """The :class:`StoreError` that stopped a supervisor, if that is what ``exc`` is: the error
    itself, a :class:`SessionFailed` around it, or an exception group of nothing else."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, SessionFailed):
        return exc.error
    if isinstance(exc, BaseExceptionGroup):
        errors = [store_failure(e) for e in exc.exceptions]
        if errors and all(errors):
            return errors[0]
    return None


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
        self._sessions: dict[str, _Session] = {}
        self._counters = Counters()
        self.resilience = Resilience(config.dependencies)
        """Retries and circuit breakers of the declared dependencies (shared by every user)."""
        self._deps = SupervisorDeps(
            config=config,
            store=store,
            agents=agents,
            counters=self._counters,
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
        )
        self._closed = False
        self._draining = False
        nursery.start_soon(self._deps.deadlines.run)
        self.clustered = hasattr(store, "acquire")
        """True when the store holds leases (the SQL store): several processes may share it."""
        if self.clustered:
            nursery.start_soon(self._deps.cluster.run)

    # -- the session registry --------------------------------------------------------------

    def _session(self, user_id: str) -> _Session:
        if self._closed:
            raise RuntimeClosedError("the runtime is closed")
        session = self._sessions.get(user_id)
        if session is None:
            if self._draining:
                raise RuntimeClosedError("this server is shutting down; use another one")
            if len(self._sessions) >= self.config.max_sessions:
                raise MailboxFullError("too many active users right now; try again shortly")
            send, receive = trio.open_memory_channel[Message](self.config.mailbox_size)
            supervisor = UserSupervisor(self._deps, user_id, receive, send)
            session = _Session(send, supervisor)
            self._sessions[user_id] = session
            self._nursery.start_soon(self._run_supervisor, session, receive)
        return session

    def _member(self, user_id: str) -> UserSupervisor | UserFollower | None:
        session = self._sessions.get(user_id)
        return None if session is None else session.supervisor

    async def _run_modes(
        self,
        session: _Session,
        receive: trio.MemoryReceiveChannel[Message],
        on_idle: Callable[[], bool],
    ) -> None:
        """Own the user while this node holds its lease, follow it while another node does."""
        owner = session.supervisor
        assert isinstance(owner, UserSupervisor)
        if not self.clustered:
            await owner.run(on_idle=on_idle)
            return
        user_id = owner.user_id
        feed = Feed()  # the user's sockets here: handed from role to role
        first: Message | None = None
        assert self._deps.leases is not None
        epoch = await self._deps.leases.acquire(user_id)
        while True:
            if epoch is None:
                follower = UserFollower(self._deps, user_id, receive, session.send, feed=feed)
                session.supervisor = follower
                acquired = await follower.run(on_idle=on_idle)
                if acquired is None:
                    return  # idle
                epoch, first = acquired.epoch, acquired.first
            owner = UserSupervisor(
                self._deps, user_id, receive, session.send, epoch=epoch, feed=feed, first=first
            )
            session.supervisor = owner
            if await owner.run(on_idle=on_idle):
                return  # idle (the lease is released)
            first, epoch = None, None  # fenced: follow

    async def _run_supervisor(
        self, session: _Session, receive: trio.MemoryReceiveChannel[Message]
    ) -> None:
        user_id = session.supervisor.user_id

        def on_idle() -> bool:
            # Synchronous: nothing can slip into the mailbox between this check and removal.
            if receive.statistics().current_buffer_used:
                return False
            self._forget(user_id, session)
            return True

        reason = "shutdown"
        error: StoreError | None = None
        try:
            await self._run_modes(session, receive, on_idle)
            reason = "closed"
        except Exception as exc:
            reason, error = "session_failed", store_failure(exc)
            if error is None:
                log.exception("the supervisor of user %r crashed; it restarts on next use", user_id)
            else:
                # The database, not the session's code: one line per period, however many users
                # and retries hit it (a full disk fails every activation); the callers are told.
                STORE_FAILURES.log(
                    log,
                    logging.ERROR,
                    "session",
                    "the session of user %r stopped: the store failed (%s); it restarts on next "
                    "use",
                    user_id,
                    error,
                )
        finally:
            # Synchronous from here on: answer everything still queued, then close the mailbox
            # so later senders get BrokenResourceError and activate a new supervisor. If the
            # store stopped it, the answer says so (its cause): "try again later", not "the
            # server is shutting down".
            stopped = None
            if error is not None:
                stopped = RuntimeClosedError(
                    f"the user's session stopped: the store failed: {error}"
                )
                stopped.__cause__ = error
            self._forget(user_id, session)
            while True:
                try:
                    fail_message(receive.receive_nowait(), stopped)
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            receive.close()
            session.supervisor.abandon(reason)

    def _forget(self, user_id: str, session: _Session) -> None:
        if self._sessions.get(user_id) is session:
            del self._sessions[user_id]

    async def _request(self, user_id: str, make: Callable[[], Any]) -> Any:
        check_user_id(user_id)
        for _ in range(3):
            session = self._session(user_id)
            msg = make()
            try:
                session.send.send_nowait(msg)
            except trio.WouldBlock:
                raise MailboxFullError("too many requests for this user; slow down") from None
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue  # that supervisor just stopped: the next one is activated
            return await msg.reply.wait()
        raise RuntimeClosedError("the user's session could not be activated")

    # -- the public API --------------------------------------------------------------------

    async def start_run(
        self, user_id: str, agent: str | None, input: JSON = None, *, if_busy: str | None = None
    ) -> str:
        """Start a run of ``agent`` (the default agent if None) with ``input``. Returns its id.

        Returns once the run's start is committed (``pending``, ``starting``, ``running``).
        ``if_busy`` says what to do while the user has a live run: ``parallel`` (start it
        alongside), ``reject`` (raise :class:`BusyError`), ``enqueue`` (a durable ``pending`` run
        that starts once every run live before it ended) or ``interrupt`` (cancel the live runs
        first); None takes ``RuntimeConfig.if_busy``.
        """
        run_id: str = await self._request(
            user_id,
            lambda: StartRun(
                agent=agent, input=input, user_text=None, reply=Reply(), if_busy=if_busy
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
    ) -> str:
        """Commit the user's chat message and start a run with it as input. Returns the run id.

        ``if_busy``: see :meth:`start_run` (the message is committed whatever the policy, except
        when ``reject`` refuses the command). ``message_meta``: further fields of the committed
        ``message`` event's ``data`` (``role``, ``text`` and ``message_id`` are the runtime's).
        """
        if not isinstance(text, str):
            raise CommandError("text must be a string")
        meta = dict(message_meta) if message_meta else None
        run_id: str = await self._request(
            user_id,
            lambda: StartRun(
                agent=agent,
                input=text,
                user_text=text,
                reply=Reply(),
                if_busy=if_busy,
                message_meta=meta,
            ),
        )
        return run_id

    async def send_input(self, user_id: str, run_id: str, input: JSON) -> None:
        """Give a live run an input: committed as ``run_input``, then handed to its agent
        (``ctx.ask`` returns it). Restarted attempts receive every input of the run again."""
        await self._request(user_id, lambda: SendInput(run_id=run_id, input=input, reply=Reply()))

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
        sessions = list(self._sessions.values())
        c = self._counters
        return RuntimeStatistics(
            active_sessions=len(sessions),
            live_runs=sum(len(s.supervisor.runs) for s in sessions),
            subscriptions=sum(
                sum(1 for sub in s.supervisor.subs if not sub.closed) for s in sessions
            ),
            mailbox_depth_max=max(
                (s.send.statistics().current_buffer_used for s in sessions), default=0
            ),
            runs_started=c.runs_started,
            runs_ended=dict(c.runs_ended),
            restarts=c.restarts,
            rollbacks=c.rollbacks,
            events_delivered=c.events_delivered,
            commit_to_mailbox=c.commit_to_mailbox.snapshot(),
            threads_live=c.threads.live,
            threads_abandoned=c.threads.abandoned,
            threads_waiting=self._deps.threads.statistics().tasks_waiting,
            store=self.store.statistics(),
            node=getattr(self.store, "node", None) if self.clustered else None,
            owned_users=sum(1 for s in sessions if isinstance(s.supervisor, UserSupervisor)),
            followed_users=sum(1 for s in sessions if isinstance(s.supervisor, UserFollower)),
            forwarded_pending=self._deps.cluster.pending,
            fenced_units=c.fenced,
            follow_lag=c.follow_lag.snapshot(),
        )

    async def check(self) -> None:
        """Raise :class:`StoreError` unless the store answers (for health checks)."""
        await self.store.check()

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (a budget, not a deadline)
        """A planned shutdown of this node (a rolling deploy): take no new users, let live runs
        finish for up to ``timeout`` seconds, end the ones still live ``dead`` (one rollback
        each), and release every lease, so that other nodes take the users over at once."""
        self._draining = True
        with trio.move_on_after(timeout):
            while any(s.supervisor.runs for s in self._sessions.values()):  # noqa: ASYNC110
                await trio.sleep(0.05)  # (runs end in many supervisors: a poll is simplest)
        replies: list[Reply[None]] = []
        for session in list(self._sessions.values()):
            if isinstance(session.supervisor, UserSupervisor):
                reply: Reply[None] = Reply()
                try:
                    session.send.send_nowait(Drain(reply))
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    continue
                replies.append(reply)
        with trio.move_on_after(max(1.0, timeout)):
            for reply in replies:
                with contextlib.suppress(Exception):
                    await reply.wait()
        release_all = getattr(self.store, "release_all", None)
        if release_all is not None:
            with contextlib.suppress(Exception):
                await release_all()

    def is_active(self, user_id: str) -> bool:
        """Whether the user has an active supervisor right now."""
        return user_id in self._sessions

    async def aclose(self) -> None:
        """Stop every supervisor and its agents. Runs still live end ``dead`` on next start."""
        self._closed = True
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
                runtime._closed = True
                nursery.cancel_scope.cancel()
    finally:
        # Every supervisor has stopped: hand this node's users back (runs left live end dead
        # on their next activation, on whichever node, without waiting for the leases to expire).
        release_all = getattr(the_store, "release_all", None)
        if release_all is not None:
            with trio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await release_all()
        if own_store:
            with trio.CancelScope(shield=True):
                await the_store.aclose()
