"""The context a threaded agent acts through: :class:`ThreadedContext`, one per attempt.

The synchronous twin of :class:`~netra_actors.AgentContext`, whose operations it offers. Staging
(``emit``, ``think``, ``say``, ``stage``) stays in the agent's thread until a checkpoint; every
other operation hands the work to the attempt's async context on trio (through the bridge, the
one crossing point) and blocks only this thread until it is done. A tool call runs in this
thread and drives the same protocol as the async one (:mod:`._toolcall`); a replayed call does
not leave the thread.

Threads cannot be killed: cancellation is cooperative. Once the attempt is over, the next
operation raises :class:`~netra_actors.exceptions.RunFencedError` (and :attr:`ThreadedContext.cancelled` is
True).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from ._bridge import Bridge
from ._context import AgentContext
from ._conversation import ClientTool, ConversationMessage
from ._exceptions import RunFencedError, RuntimeClosedError
from ._idempotency import keyed_call_sync
from ._message_stream import ThreadedMessageStream
from ._messages import Reply, Sleep
from ._process import run_in_process
from ._values import JSON, loads

P = ParamSpec("P")
T = TypeVar("T")


class ThreadedContext:
    """The synchronous twin of :class:`~netra_actors.AgentContext`, for threaded agents.

    Every method blocks the calling (agent) thread until the supervisor has taken the operation;
    it raises :class:`~netra_actors.exceptions.RunFencedError` once the attempt is over.
    """

    def __init__(self, actx: AgentContext, bridge: Bridge) -> None:
        self._actx = actx
        self._bridge = bridge
        self.user_id = actx.user_id
        """The user this run belongs to."""
        self.run_id = actx.run_id
        """The run's id."""
        self.agent = actx.agent
        """The agent's name."""
        self.attempt = actx.attempt
        """1 for the first attempt; each supervised restart adds one."""
        self.thread = actx.thread
        """The thread the run belongs to."""
        self._staging = actx.new_staging()
        self._last_beat = time.monotonic()

    @property
    def streaming(self) -> int:
        """Messages this attempt is streaming now (the attempt's count)."""
        return self._actx.streaming

    @streaming.setter
    def streaming(self, value: int) -> None:
        self._actx.streaming = value

    @property
    def cancelled(self) -> bool:
        """True once this attempt is over: stop working and return (or raise)."""
        return self._actx.fenced

    def _check(self) -> None:
        if self._actx.fenced:
            raise RunFencedError("this attempt of the run is over")

    def _call(self, afn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``afn`` in trio and block this thread until it is done (the one hand-off)."""
        self._check()
        try:
            return self._bridge.run_from_thread(lambda: afn(*args, **kwargs))
        except RuntimeClosedError:
            raise RunFencedError("the runtime has stopped") from None

    def _maybe_beat(self) -> None:
        if time.monotonic() - self._last_beat >= self._actx.beat_every:
            self.heartbeat()

    def conversation(self) -> tuple[ConversationMessage, ...]:
        """The committed conversation of the run's thread (see
        :meth:`AgentContext.conversation`), the same in every attempt."""
        return self._call(self._actx.conversation)

    def client_tools(self) -> tuple[ClientTool, ...]:
        """The tools the run's client offered (see :meth:`AgentContext.client_tools`)."""
        return self._call(self._actx.client_tools)

    def emit(self, event: str, data: Mapping[str, JSON] | None = None) -> None:
        """Stage a custom event (see :meth:`AgentContext.emit`). Stays in this thread until
        the next checkpoint."""
        self._check()
        self._staging.emit(event, data)
        self._maybe_beat()

    def think(self, text: str) -> None:
        """Stage an ``agent_thinking`` event."""
        self._check()
        self._staging.think(str(text))
        self._maybe_beat()

    def say(self, text: str) -> None:
        """Stage an assistant ``message`` event (whole; to stream one, see :meth:`message`)."""
        self._check()
        self._staging.say(str(text))
        self._maybe_beat()

    def stage(self, row: Any, params: Any = None) -> None:
        """Stage a row of your own (see :meth:`AgentContext.stage`)."""
        self._check()
        self._staging.add_row(row, params)
        self._maybe_beat()

    def heartbeat(self) -> None:
        """Tell the supervisor this attempt is alive (staging does too, about once a second)."""
        self._last_beat = time.monotonic()
        self._call(self._actx.heartbeat)

    def checkpoint(self) -> int:
        """Commit everything staged so far; returns the user's head ``seq`` after the commit."""
        self._check()
        events, rows = self._staging.take()
        return self._call(self._actx._commit_staged, events, rows)

    def receive(self) -> JSON:
        """The next message sent to this run, blocking this thread until one arrives."""
        return self._call(self._actx.receive)

    def ask(self, prompt: str, *, schema: JSON = None) -> JSON:
        """Commit what is staged, ask the user and block until the answer (see
        :meth:`AgentContext.ask`: the attempt stops while the run waits, and a new one replays
        up to here)."""
        self._check()
        return self._call(self._actx._ask, prompt, schema, self._staging)

    def client_tool(self, name: str, args: Mapping[str, JSON] | None = None) -> JSON:
        """Call a tool of the client and block until its result (see
        :meth:`AgentContext.client_tool`)."""
        self._check()
        prompt = f"the client's tool {name}"
        return self._call(self._actx._ask, prompt, None, self._staging, name, args)

    def sleep(self, seconds: float) -> None:
        """Sleep durably (see :meth:`AgentContext.sleep`)."""
        seconds = float(seconds)
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            raise ValueError(f"seconds must be a finite number, got {seconds!r}")
        self._check()
        if seconds <= 0:
            return
        events, rows, until = self._actx._sleep_staged(self._staging, seconds)
        if until is not None:
            self._call(self._sleep, until, events, rows)

    async def _sleep(self, until: float, events: Any, rows: Any) -> None:
        actx = self._actx
        reply: Reply[None] = Reply()
        await actx._send(Sleep(actx.run_id, actx.attempt, until, events, rows, reply))
        await actx._wait_beating(reply.wait)

    def _flush(self) -> None:
        if self._staging or self._actx._cursor.divergence is not None:
            self.checkpoint()

    def message(self) -> ThreadedMessageStream:
        """Stream an assistant message (see :meth:`AgentContext.message`)::

        with ctx.message() as m:
            for token in sdk_stream():
                m.write(token)
        """
        self._check()
        replaying = self._actx._cursor.next_is_event()
        return ThreadedMessageStream(self, self._actx.max_message_chars, replaying)

    def _write(self, message_id: str, text: str) -> None:
        self._call(self._actx._write, message_id, text)

    def _commit_message(self, message_id: str, text: str) -> int:
        self._check()
        self._staging.say(text, message_id)
        if not self._staging and self._actx._cursor.divergence is None:
            return -1  # replayed: committed by an earlier attempt
        events, rows = self._staging.take()
        return self._call(self._actx._commit_staged, events, rows, closes=(message_id,))

    def tool(
        self, name: str, fn: Callable[..., Any], /, *, replay: bool = True, **args: JSON
    ) -> JSON:
        """Run ``fn(**args)`` in this thread as a recorded tool call (blocking is fine here),
        under its dependency's retry and breaker policy, journaled and replayed in a restarted
        attempt like :meth:`AgentContext.tool` (a replayed call does not leave this thread)."""
        self._check()
        call = self._actx._tools.begin(self._staging, name, args, replay)
        if call.replayed:  # no tool events; what is staged commits
            if self._staging:
                self.checkpoint()
            else:
                self._maybe_beat()
            return call.replay_result()
        try:
            call.executing()
            self._flush()
            try:
                result_json, attempts = self._actx._resilience.call_sync(
                    name, keyed_call_sync(fn, call.key, args), args, check=self._check
                )
            except RunFencedError:
                raise
            except Exception as exc:
                self._check()
                error = call.failed(exc)
                self._flush()
                raise error from exc
            self._check()
            call.completed(result_json, attempts)
            self._flush()
            return loads(result_json)
        finally:
            call.end()

    def _finish(self, result: JSON) -> None:
        self._check()
        events, rows = self._staging.take()
        self._call(self._actx._finish, result, events, rows)

    def run_in_process(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound ``fn(*args)`` in a worker process (see :func:`run_in_process`)."""
        self._check()
        return run_in_process(fn, *args)
