"""AG-UI over HTTP: ``POST /agui`` and ``GET /agui/events`` (docs/protocol.md, "AG-UI over HTTP").

A ``POST /agui`` run belongs to the netra thread named by the input's ``threadId``; it commits
only the user messages of ``messages`` that the thread does not have yet (matched by their AG-UI
``id``, kept as the committed message's ``message_id``), never a second copy, and the agent reads
the stored conversation. A ``POST /agui`` that answers a question instead — a ``resume`` entry
for an interrupt, or messages ending with a frontend tool's result — delivers the answer to the
waiting run (``send_input``) and streams the rest of it as a new AG-UI run.
``GET /agui/events?threadId=`` follows one thread.

Transport-neutral and on trio, like :class:`~._connection.Connection`: the trio gateway and the
ASGI adapter both call :meth:`AguiRoutes.post` / :meth:`AguiRoutes.events`, which check the
request and either refuse it (an :class:`HttpResponse`: 400, 401, 409, 429 …) or return an
:class:`~._agui_stream.SseStream`; the transport sends the ``200 text/event-stream`` head and
runs the stream with its own ``send(bytes)``. So the answers, limits and frames are the same on
both. What a request's body means is :mod:`._agui_input`; the stream itself, :mod:`._agui_stream`.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable

import orjson
import trio

from .._core._threads import is_thread_name
from .._exceptions import (
    CommandError,
    MailboxFullError,
    ResumeBeyondHeadError,
    RuntimeClosedError,
)
from .._logs import STORE_FAILURES, log_limited
from .._subscription import Subscription
from .._tracing import trace_carrier
from .._validate import MAX_SEQ
from .._values import JSON, Event
from ._agui import AguiMapper
from ._agui_frames import CLIENT_TOOL, TERMINAL_STATES, AguiIds, EventId, parse_question_id
from ._agui_input import RunInput, parse_run_input
from ._agui_stream import SseStream, run_events
from ._connection import ConnectionDeps
from ._http import HttpRequest, HttpResponse, json_response
from ._session_rules import STORE_FAILING, STORE_RETRY_AFTER, store_failed
from ._sign_in import SignInFailed, SignInRefused
from ._tokens import TokenClaims, TokenError, verify_token

log = logging.getLogger("netra_actors.gateway")

AGUI_PATH = "/agui"
AGUI_EVENTS_PATH = "/agui/events"


class AguiRoutes:
    """The AG-UI endpoints of one server (trio gateway or ASGI adapter)."""

    def __init__(self, deps: ConnectionDeps) -> None:
        self.deps = deps

    # -- checks shared by both endpoints ----------------------------------------------------

    async def _claims(self, request: HttpRequest) -> TokenClaims | HttpResponse:
        """Who the request is: the server's sign-in function (:mod:`._sign_in`) if it has one
        and it knows the request's credential, else netra's token in ``Authorization``."""
        sign_in = self.deps.sign_in
        if sign_in is not None:
            try:
                claims = await sign_in(request)
            except SignInRefused as exc:
                log.info("AG-UI: sign-in refused (%s)", exc)
                return _error(401, "unauthorized", str(exc) or "sign-in refused")
            except SignInFailed:
                return _error(500, "internal", "sign-in failed")
            if claims is not None:
                return claims
        auth = request.header("authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "unauthorized", "Authorization: Bearer <token> is required")
        try:
            return verify_token(self.deps.config.secret, token.strip(), now=time.time())
        except TokenError as exc:
            log.info("AG-UI: token refused (%s)", exc.reason)
            return _error(401, "unauthorized", str(exc))

    async def _counted(
        self, user: str, start: Callable[[], Awaitable[HttpResponse | SseStream]]
    ) -> HttpResponse | SseStream:
        """``start()`` with its stream counted among the user's sockets (a 429 when over the
        limit); the count is given back unless a stream comes out (the stream gives it back)."""
        limits = self.deps.limits
        if not limits.open_socket(user, trio.current_time()):
            return _error(429, "rate_limited", "too many sockets for this user")
        answer: HttpResponse | SseStream | None = None
        try:
            answer = await start()
        finally:
            if not isinstance(answer, SseStream):
                limits.close_socket(user, trio.current_time())
        return answer

    # -- POST /agui ----------------------------------------------------------------------------

    async def post(self, request: HttpRequest) -> HttpResponse | SseStream:
        """Commit the last user message of a ``RunAgentInput``, start a run, stream it."""
        claims = await self._claims(request)
        if isinstance(claims, HttpResponse):
            return claims
        user = claims.user
        try:
            run_input = parse_run_input(request.body)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))

        async def start() -> HttpResponse | SseStream:
            # after the socket is counted: the user's bucket exists once a socket is
            if not self.deps.limits.allow_message(user, trio.current_time()):
                return _error(429, "rate_limited", "too many messages; slow down")
            return await self._start(claims, run_input, trace_carrier(request.header))

        return await self._counted(user, start)

    async def _start(
        self, claims: TokenClaims, run_input: RunInput, trace_context: dict[str, str] | None
    ) -> HttpResponse | SseStream:
        """Commit the request's new user messages and start its run (``trace_context``: the
        request's W3C trace context, the parent of the run's span when tracing is on)."""
        runtime, user, thread = self.deps.runtime, claims.user, run_input.thread_id
        subscription: Subscription | None = None
        try:
            with trio.fail_after(self.deps.config.command_timeout):
                have = await runtime.message_ids(user, [m for m, _ in run_input.users])
                elsewhere = [m for m, t in have.items() if t != thread]
                if elsewhere:
                    return _error(
                        400,
                        "bad_request",
                        f"message {elsewhere[0]!r} belongs to another thread of this user",
                    )
                new = [(m, text) for m, text in run_input.users if m not in have]
                if run_input.resume is not None or run_input.tool_result is not None:
                    if new:
                        return _error(
                            400,
                            "bad_request",
                            "a request that answers a question adds no user message",
                        )
                    return await self._answer(claims, run_input)
                if not new:
                    return _error(
                        400,
                        "bad_request",
                        "the thread has every user message of this request already, and the "
                        "request answers no interrupt and carries no tool result: "
                        "there is nothing to answer",
                    )
                subscription = await runtime.subscribe(user, deltas=True)
                (message_id, text) = new[-1]
                run_id = await runtime.say(
                    user,
                    text,
                    agent=run_input.agent,
                    if_busy=run_input.if_busy,
                    message_meta={"agui": {"threadId": thread, "runId": run_input.run_id}},
                    thread=thread,
                    message_id=message_id,
                    earlier=new[:-1],
                    input=run_input.input,
                    trace_context=trace_context,
                    client_tools=list(run_input.tools) or None,
                )
        except BaseException as exc:
            if subscription is not None:
                subscription.close()
            if isinstance(exc, Exception):
                return self._refusal(user, exc)
            raise
        return self._post_stream(claims, run_input, subscription, AguiMapper(), run_id)

    def _post_stream(
        self,
        claims: TokenClaims,
        run_input: RunInput,
        subscription: Subscription,
        mapper: AguiMapper,
        run_id: str,
    ) -> SseStream:
        mapper.echo = run_input.message_ids
        mapper.snapshots = True
        return SseStream(
            self.deps,
            claims,
            subscription,
            mapper,
            only_run=run_id,
            skip=None,
            snapshot_thread=run_input.thread_id,
            cancel_on_close=(
                self.deps.config.agui_on_disconnect == "cancel"
                if run_input.cancel_on_disconnect is None
                else run_input.cancel_on_disconnect
            ),
        )

    async def _answer(self, claims: TokenClaims, run_input: RunInput) -> HttpResponse | SseStream:
        """Deliver a ``resume`` answer or a frontend tool's result to the waiting run (in
        :meth:`_start`'s time budget); stream the rest of the run as a new AG-UI run."""
        runtime, user, thread = self.deps.runtime, claims.user, run_input.thread_id
        tool, resume = run_input.tool_result, run_input.resume
        asked = tool.call_id if tool is not None else resume.interrupt_id if resume else ""
        parsed = parse_question_id(asked)
        what = "tool call" if tool is not None else "interrupt"
        refused = _error(400, "bad_request", f"the {what} {asked!r} is not waiting for an answer")
        if parsed is None:
            return refused
        run_id, seq = parsed
        subscription = await runtime.subscribe(user, deltas=True)
        try:
            earlier = await run_events(runtime, user, run_id, None)
            if not _waits(earlier, seq, thread, is_tool=tool is not None):
                subscription.close()
                return refused
            mapper = AguiMapper()
            mapper.learn(run_id, earlier)
            agui: dict[str, JSON] = {"threadId": thread, "runId": run_input.run_id}
            if tool is not None:
                agui["messageId"] = tool.message_id
                await runtime.send_input(user, run_id, tool.content, meta={"agui": agui})
            elif resume is not None and resume.resolved:
                await runtime.send_input(user, run_id, resume.payload, meta={"agui": agui})
            else:
                mapper.next_ids[run_id] = AguiIds(thread, run_input.run_id)
                await runtime.cancel_run(user, run_id)
        except BaseException:
            subscription.close()
            raise
        return self._post_stream(claims, run_input, subscription, mapper, run_id)

    # -- GET /agui/events ----------------------------------------------------------------------

    async def events(self, request: HttpRequest) -> HttpResponse | SseStream:
        """The user's events after ``Last-Event-ID`` (or from now), as AG-UI frames, then live."""
        claims = await self._claims(request)
        if isinstance(claims, HttpResponse):
            return claims
        user = claims.user
        last = request.header("last-event-id")
        resume: EventId | None = None
        if last is not None and last.strip():
            try:
                resume = EventId.parse(last)
            except ValueError:
                return _error(
                    400,
                    "bad_request",
                    f"Last-Event-ID must be 'k' or 'k.i' (integers <= {MAX_SEQ})",
                )
        query = urllib.parse.parse_qs(
            urllib.parse.urlsplit(request.target).query, keep_blank_values=True
        )  # an empty ?threadId= is not a thread name (400), not "every thread"
        threads = query.get("threadId")
        thread = threads[-1] if threads else None
        if thread is not None and not is_thread_name(thread):
            return _error(400, "bad_request", "threadId must be a netra thread name")
        return await self._counted(user, lambda: self._follow(claims, resume, thread))

    async def _follow(
        self, claims: TokenClaims, resume: EventId | None, thread: str | None
    ) -> HttpResponse | SseStream:
        runtime, user = self.deps.runtime, claims.user
        mapper = AguiMapper(snapshots=thread is not None)
        skip: int | None = None
        resume_from: int | None = None
        try:
            with trio.fail_after(self.deps.config.command_timeout):
                if resume is not None:
                    seq, part = resume
                    if part is not None and seq >= 1:
                        resume_from, skip = seq - 1, part  # event k again, minus what was sent
                        known = await runtime.read_events(user, resume_from, 1)
                        if not known or known[0].seq != seq:  # no event k: beyond the head
                            raise ResumeBeyondHeadError("Last-Event-ID is beyond the last event")
                    else:
                        resume_from = seq
                subscription = await runtime.subscribe(user, resume_from=resume_from, deltas=True)
        except Exception as exc:
            return self._refusal(user, exc)
        return SseStream(
            self.deps,
            claims,
            subscription,
            mapper,
            only_run=None,
            skip=skip,
            only_thread=thread,
            snapshot_thread=thread,
        )

    # -- errors --------------------------------------------------------------------------------

    def _refusal(self, user: str, exc: Exception) -> HttpResponse:
        """The HTTP answer to a command the runtime refused (or a failure)."""
        if isinstance(exc, ResumeBeyondHeadError):
            return _error(400, "bad_request", "Last-Event-ID is beyond the last event")
        if isinstance(exc, MailboxFullError):
            return _error(429, "rate_limited", "too many requests for this user")
        if isinstance(exc, CommandError):
            status = {"busy": 409, "rate_limited": 429, "unknown_agent": 400}.get(exc.code, 400)
            if exc.code in ("illegal_state",):
                status = 409
            return _error(status, exc.code, exc.message)
        if isinstance(exc, trio.TooSlowError):
            log.warning("user %r: an AG-UI request timed out", user)
            return _error(503, "internal", "the request timed out; try again")
        if store_failed(exc):
            log_limited(
                log, logging.WARNING, "agui", "user %r: an AG-UI request failed in the store: %s",
                user, exc, limiter=STORE_FAILURES,
            )  # fmt: skip
            return _error(
                503,
                "store_unavailable",
                STORE_FAILING,
                headers=(("retry-after", str(STORE_RETRY_AFTER)),),
            )
        if isinstance(exc, RuntimeClosedError):
            return _error(503, "unavailable", "server shutting down")
        log.error("user %r: an AG-UI request failed", user, exc_info=exc)
        return _error(500, "internal", "internal error")


def _error(
    status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    return json_response(status, orjson.dumps({"error": code, "message": message}), headers)


def _waits(events: list[Event], seq: int, thread: str, *, is_tool: bool) -> bool:
    """Whether a run (its ``events``) is waiting for the answer to its question at ``seq``
    (``is_tool``: a frontend tool call) in ``thread``: that question is its last, unanswered,
    and the run has not ended."""
    asked = next((e for e in events if e.seq == seq), None)
    if asked is None or asked.event != "input_requested" or asked.thread != thread:
        return False
    if isinstance(asked.data.get(CLIENT_TOOL), dict) != is_tool:
        return False
    later = {e.event for e in events if e.seq > seq}
    ended = any(e.event == "run_state" and e.data.get("state") in TERMINAL_STATES for e in events)
    return not ended and not later & {"run_input", "input_requested"}
