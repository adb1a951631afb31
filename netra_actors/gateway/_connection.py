"""One socket's lifecycle: ``hello``, the session, the close.

A :class:`Connection` signs the socket in — the upgrade request through the server's sign-in
function (:mod:`._sign_in`), if it has one, then the first frame — subscribes to its user's
committed events and then runs four tasks until one of them ends the session:

* the *reader* parses client frames, applies the user's rate limit and executes commands against
  the runtime, answering each with ``ack``/``runs``/``pong``/``error``;
* the *pump* moves committed events from the socket's bounded mailbox (the runtime's
  :class:`~netra_actors.types.Subscription`) to the socket — ``event`` frames, or ``batch`` frames when a
  backlog has built up (it never waits to coalesce) — and, for a socket whose ``hello`` asked for
  the ``deltas`` feature, provisional ``delta`` frames in their place among them;
* *keepalive* pings the client and drops it if no pong comes back;
* the *expiry* watch closes the socket with 4401 when its token expires.

Whatever ends the session picks the close code through :meth:`Connection.request_close`; the
first request wins. Which code, and when, is decided by the pure rules of :mod:`._session_rules`
(the first frame, each message, the strikes of a flooding client, the end of the subscription). Nothing a connection does can stop the gateway: every exception is contained
here, logged, and answered with close code 1011.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from .._exceptions import (
    CommandError,
    MailboxFullError,
    RuntimeClosedError,
    SlowConsumerError,
    StoreError,
    SubscriptionClosedError,
)
from .._logs import STORE_FAILURES, log_limited
from .._runtime import Runtime
from .._subscription import Subscription
from .._values import Delta, Event
from ._config import GatewayConfig
from ._http import HttpRequest
from ._limits import UserLimits
from ._metrics import GatewayMetrics
from ._protocol import (
    ERROR_CODES,
    CancelRun,
    Command,
    DeleteThread,
    FrameError,
    GetRuns,
    Hello,
    History,
    Ping,
    Say,
    SendInput,
    StartRun,
    Threads,
    ack_frame,
    error_frame,
    event_frames,
    history_frame,
    item_frames,
    parse_frame,
    pong_frame,
    runs_frame,
    threads_frame,
    welcome_frame,
)
from ._session_rules import (
    ABNORMAL,
    GOING_AWAY,
    INTERNAL,
    NORMAL,
    PROTOCOL_VIOLATION,
    SLOW_CONSUMER,
    STORE_FAILING,
    TOO_MANY,
    TRY_AGAIN_LATER,
    UNAUTHORIZED,
    Close,
    Session,
    Strikes,
    check_hello,
    check_message,
    hello_timeout,
    store_failed,
    subscription_closed,
)
from ._sign_in import SignIn, SignInFailed, SignInRefused
from ._tokens import TokenClaims
from ._transport import SocketClosed, WebSocketLike

log = logging.getLogger("netra_actors.gateway")


@attrs.frozen(kw_only=True)
class ConnectionDeps:
    """What every connection shares with its gateway."""

    runtime: Runtime
    config: GatewayConfig
    limits: UserLimits
    metrics: GatewayMetrics
    sign_in: SignIn | None = None
    """The server's sign-in function (``GatewayConfig.auth``), if it has one."""


class Connection:
    """One WebSocket, from ``hello`` to close. Create, then :meth:`run`.

    ``request``: the upgrade request, which the server's sign-in function (if any) reads."""

    def __init__(
        self,
        deps: ConnectionDeps,
        socket: WebSocketLike,
        peer: str,
        request: HttpRequest | None = None,
    ) -> None:
        self._deps = deps
        self._request = request
        self._config = deps.config
        self._runtime = deps.runtime
        self.socket = socket
        self.peer = peer
        self.user: str | None = None
        self.subscription: Subscription | None = None
        self._scope = trio.CancelScope()
        self._close: tuple[int, str] | None = None
        self._strikes = Strikes(deps.config.flood_limit)
        self._order = trio.Lock()
        """Held while a command runs and its answer is sent, and while events (and deltas) are
        sent: the pump takes it *after* receiving, so whatever was committed or streamed while a
        command ran goes out after that command's answer."""
        self.features: frozenset[str] = frozenset()
        """The features this socket's ``hello`` asked for that the server offers."""
        self._offer: Callable[[list[str]], bool] | None = getattr(socket, "offer", None)
        """Queue frames without waiting (sockets with an outbox: the ASGI adapter's)."""
        self._holding = False
        """True while the pump holds items it has not yet sent."""

    # -- ending -----------------------------------------------------------------------------

    def request_close(self, code: int, reason: str) -> None:
        """End the session and close the socket with ``code`` (the first request wins)."""
        if self._close is None:
            self._close = (code, reason)
        self._scope.cancel()

    async def run(self) -> None:
        """Run the connection to its end. Never raises (except cancellation of the caller)."""
        try:
            with self._scope:
                await self._guard(self._session)
        finally:
            if self.subscription is not None:
                self.subscription.close()
            code, reason = self._close or (NORMAL, "")
            with trio.CancelScope(shield=True):
                await self.socket.close(code, reason)
            self._deps.metrics.closes.labels(str(code)).inc()
            log.debug(
                "connection %s (user %r) closed with %d %s", self.peer, self.user, code, reason
            )

    async def _close_with(self, close: Close) -> None:
        """Send the error frame ``close`` carries, if any, then request the close."""
        if close.error is not None:
            await self._send_error(None, *close.error)
        self.request_close(close.code, close.reason)

    async def _guard(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` (the session or one of its tasks); turn what ends it into a close request."""
        try:
            await fn()
        except SocketClosed as exc:
            self.request_close(exc.code or ABNORMAL, exc.reason or "")
        except Exception:
            log.exception(
                "connection %s (user %r) failed; closing it with 1011", self.peer, self.user
            )
            self.request_close(INTERNAL, "internal error")

    # -- session start ----------------------------------------------------------------------

    async def _session(self) -> None:
        session = await self._hello()
        if session is None:
            return
        claims, self.features = session.claims, session.features
        user = claims.user
        limits = self._deps.limits
        if not limits.open_socket(user, trio.current_time()):
            self.request_close(TOO_MANY, "too many sockets for this user")
            return
        self.user = user
        try:
            subscription = await self._subscribe(
                user, session.resume_from, "deltas" in self.features
            )
            if subscription is None:
                return
            self.subscription = subscription
            await self.socket.send(welcome_frame(user, subscription.head_seq))
            self._deps.metrics.sessions_started.inc()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guard, self._reader)
                nursery.start_soon(self._guard, self._pump)
                nursery.start_soon(
                    self._guard,
                    lambda: self.socket.keepalive(
                        self._config.ping_interval, self._config.pong_timeout
                    ),
                )
                nursery.start_soon(self._guard, lambda: self._expiry(claims.expires_at))
        finally:
            limits.close_socket(user, trio.current_time())

    async def _upgrade_sign_in(self) -> TokenClaims | Close | None:
        """Who the upgrade request signs in as (the server's sign-in function), the close a
        refusal deserves, or None (no sign-in function, or no credential of its own)."""
        sign_in = self._deps.sign_in
        if sign_in is None or self._request is None:
            return None
        try:
            return await sign_in(self._request)
        except SignInRefused as exc:
            log.info("connection %s: sign-in refused (%s)", self.peer, exc)
            return Close(UNAUTHORIZED, str(exc)[:120] or "sign-in refused")
        except SignInFailed:
            return Close(INTERNAL, "sign-in failed")

    async def _hello(self) -> Session | None:
        """Sign the upgrade in, receive and check ``hello``; None after requesting the close it
        deserves."""
        signed_in = await self._upgrade_sign_in()
        if isinstance(signed_in, Close):
            await self._close_with(signed_in)
            return None
        timeout = self._config.hello_timeout
        message: str | None = None
        with trio.move_on_after(timeout) as scope:
            message = await self._receive_text()
        if scope.cancelled_caught:
            await self._close_with(hello_timeout(timeout))
            return None
        if message is None:
            return None
        outcome = check_hello(message, self._config.secret, now=time.time(), signed_in=signed_in)
        if isinstance(outcome, Close):
            if outcome.token_refused is not None:
                log.info("connection %s: token refused (%s)", self.peer, outcome.token_refused)
            await self._close_with(outcome)
            return None
        return outcome

    async def _subscribe(
        self, user: str, resume_from: int | None, deltas: bool
    ) -> Subscription | None:
        """The user's subscription; None after requesting the close a failure deserves."""
        try:
            with trio.fail_after(self._config.command_timeout):
                return await self._runtime.subscribe(user, resume_from=resume_from, deltas=deltas)
        except MailboxFullError as exc:
            await self._send_error(None, exc.code, exc.message)
            self.request_close(TOO_MANY, "too many requests for this user")
        except CommandError as exc:
            code = exc.code if exc.code in ERROR_CODES else "bad_request"
            await self._send_error(None, code, exc.message)
            self.request_close(PROTOCOL_VIOLATION, exc.message)
        except (StoreError, RuntimeClosedError) as exc:
            if store_failed(exc):  # the runtime logged it (once per period, not per attempt)
                self.request_close(TRY_AGAIN_LATER, STORE_FAILING)
            else:
                self.request_close(GOING_AWAY, "server shutting down")
        except trio.TooSlowError:
            log.warning("connection %s: subscribing user %r timed out", self.peer, user)
            self.request_close(INTERNAL, "internal error")
        return None

    # -- the session's tasks ----------------------------------------------------------------

    async def _reader(self) -> None:
        assert self.user is not None
        user = self.user
        limits = self._deps.limits
        metrics = self._deps.metrics
        while True:
            message = await self._receive_text()
            if message is None:
                return
            try:
                frame = parse_frame(message)
                error = None
            except FrameError as exc:
                frame, error = None, exc
            if isinstance(frame, Hello):
                self.request_close(PROTOCOL_VIOLATION, "hello was already received")
                return
            if not limits.allow_message(user, trio.current_time()):
                close = self._strikes.rate_limited()
                if close is not None:
                    await self._close_with(close)
                    return
                id = frame.id if frame is not None else error.id if error else None
                await self._send_error(id, "rate_limited", "too many messages; slow down")
                continue
            self._strikes.allowed()
            if error is not None:
                await self._send_error(error.id, error.code, error.message)
                continue
            assert frame is not None
            # The answer goes out before any event committed while the command ran (e.g. the
            # events of the run a ``say`` started): the pump waits for this lock.
            async with self._order:
                await self.socket.send(await self._execute(frame))
            metrics.frames_out += 1

    async def _receive_text(self) -> str | None:
        """The next text message; None after requesting the close a binary or oversized one
        deserves (trio-websocket limits characters; the protocol's limit is in bytes)."""
        message = await self.socket.receive()
        self._deps.metrics.frames_in += 1
        close = check_message(message, self._config.max_message_size)
        if close is not None:
            await self._close_with(close)
            return None
        assert isinstance(message, str)  # check_message closes on binary frames
        return message

    async def _execute(self, command: Command) -> str:
        """Execute one command for this socket's user; the text of the frame that answers it."""
        assert self.user is not None
        user = self.user
        runtime = self._runtime
        try:
            with trio.fail_after(self._config.command_timeout):
                match command:
                    case Ping():
                        return pong_frame(command.id)
                    case Say():
                        run_id = await runtime.say(
                            user,
                            command.text,
                            agent=command.agent,
                            if_busy=command.if_busy,
                            start_at=command.start_at,
                            thread=command.thread,
                        )
                        return ack_frame(command.id, run_id)
                    case StartRun():
                        run_id = await runtime.start_run(
                            user,
                            command.agent,
                            command.input,
                            if_busy=command.if_busy,
                            start_at=command.start_at,
                            thread=command.thread,
                        )
                        return ack_frame(command.id, run_id)
                    case CancelRun():
                        await runtime.cancel_run(user, command.run_id)
                        return ack_frame(command.id)
                    case DeleteThread():
                        await runtime.delete_thread(user, command.thread)
                        return ack_frame(command.id)
                    case SendInput():
                        await runtime.send_input(user, command.run_id, command.input)
                        return ack_frame(command.id)
                    case GetRuns():
                        snapshot = await runtime.get_runs(user, limit=command.limit)
                        runs = [info.to_wire() for info in snapshot.runs]
                        return runs_frame(command.id, snapshot.head_seq, runs)
                    case Threads():
                        page = await runtime.threads(
                            user, before=command.before, limit=command.limit
                        )
                        listed = [info.to_wire() for info in page.threads]
                        return threads_frame(command.id, listed, page.next)
                    case History():
                        events = await runtime.history(
                            user,
                            thread=command.thread,
                            before_seq=command.before_seq,
                            limit=command.limit,
                        )
                        encoded = [event.wire_json() for event in events.events]
                        return history_frame(command.id, encoded, events.more)
        except CommandError as exc:
            code = exc.code if exc.code in ERROR_CODES else "bad_request"
            # Existence is never revealed: every unknown run gets the very same answer.
            message = "no such run" if code == "unknown_run" else exc.message
            return self._error(command.id, code, message)
        except trio.TooSlowError:
            log.warning("user %r: %s timed out", user, type(command).__name__)
            return self._error(command.id, "internal", "the command timed out; try again")
        except StoreError as exc:  # operational, and the client is told: one line per period
            log_limited(
                log,
                logging.WARNING,
                "command",
                "user %r: %s failed in the store: %s",
                user,
                type(command).__name__,
                exc,
                limiter=STORE_FAILURES,
            )
            return self._error(command.id, "internal", "the store failed; try again")
        except Exception:
            log.exception("user %r: %s failed", user, type(command).__name__)
            return self._error(command.id, "internal", "internal error")
        raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover

    def _error(self, id: str | None, code: str, message: str) -> str:
        self._deps.metrics.errors.labels(code).inc()
        return error_frame(id, code, message)

    async def _send_error(self, id: str | None, code: str, message: str) -> None:
        await self.socket.send(self._error(id, code, message))
        self._deps.metrics.frames_out += 1

    def _frames(self, items: Sequence[Event | Delta]) -> tuple[list[str], list[Event]]:
        """The frames of ``items`` (events coalesced into ``batch`` frames, deltas each where
        it is), and the events among them."""
        max_bytes = self._config.batch_max_bytes
        if not self.features or all(type(item) is Event for item in items):
            events: list[Event] = items  # type: ignore[assignment]
            texts = [event.wire_json() for event in events]
            return list(event_frames(texts, max_bytes=max_bytes)), events
        events = [item for item in items if type(item) is Event]
        frames = item_frames(
            [(type(item) is Event, item.wire_json()) for item in items], max_bytes=max_bytes
        )
        return list(frames), events

    def _sent(self, frames: int, events: list[Event], *, live: bool) -> None:
        """Count what went out; the commit-to-socket time of live events."""
        metrics = self._deps.metrics
        metrics.frames_out += frames
        metrics.events_out += len(events)
        if events:
            now = time.time()
            head = -1 if live else self.subscription.head_seq  # type: ignore[union-attr]
            for event in events:
                if event.seq > head:  # live, not replayed
                    metrics.commit_to_socket.observe(max(0.0, now - event.ts))

    def _push(self, items: list[Event | Delta]) -> bool:
        """The subscription's sink (sockets that queue frames without waiting): committed
        events and deltas go straight into the socket's outbox, in the delivering task. It
        refuses — the pump sends them, as without a sink — while a command runs or its answer
        is sent (answers go out before what was committed meanwhile), while the pump holds
        items it has not sent, and when the outbox has no room (the pump then waits for room,
        and the subscription's bound and overflow rule apply as ever)."""
        if self._holding or self._order.locked() or self._offer is None:
            return False
        frames, events = self._frames(items)
        if not self._offer(frames):
            return False
        self._sent(len(frames), events, live=True)
        return True

    async def _pump(self) -> None:
        subscription = self.subscription
        assert subscription is not None
        config = self._config
        deltas = subscription.deltas
        items: Sequence[Event | Delta]
        if self._offer is not None:
            subscription.push_to(self._push)
        while True:
            try:
                if deltas:
                    items = await subscription.receive_items(config.batch_max_events)
                else:
                    items = await subscription.receive_batch(config.batch_max_events)
            except SlowConsumerError:
                self.request_close(SLOW_CONSUMER, "fell too far behind; resume_from your last seq")
                return
            except SubscriptionClosedError as exc:
                close = subscription_closed(exc.reason)
                if close.code == INTERNAL:  # the session failed (the runtime said why)
                    log_limited(
                        log, logging.WARNING, "subscription",
                        "user %r: subscription ended (%s)", self.user, exc, limiter=STORE_FAILURES,
                    )  # fmt: skip
                await self._close_with(close)
                return
            self._holding = True  # no push overtakes these items
            try:
                frames, events = self._frames(items)
                async with self._order:
                    for text in frames:
                        await self.socket.send(text)
                        self._deps.metrics.frames_out += 1
                self._sent(0, events, live=False)
            finally:
                self._holding = False

    async def _expiry(self, expires_at: float) -> None:
        while True:
            left = expires_at - time.time()
            if left <= 0:
                break
            await trio.sleep(min(left, 30.0))  # re-read the wall clock now and then
        self.request_close(UNAUTHORIZED, "the token expired; get a new one")
