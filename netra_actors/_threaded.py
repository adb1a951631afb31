"""Threaded agents: agent code that blocks, run as pykka actors under the same supervision.

A :class:`ThreadedAgent` runs in its own ``pykka.ThreadingActor`` (one OS thread per running
attempt). Its synchronous :class:`ThreadedContext` offers the same operations as the async
context; each one hands the work to the user's supervisor on trio and blocks only this thread
until it is done. Everything else is shared with async agents: the same supervisor messages,
units of work, rollbacks, restarts, deadlines and heartbeats.

* Threads are bounded by a limiter (``RuntimeConfig.max_threads``): a run waits in ``pending``
  (or ``starting``, for a restart) until a thread is free. Idle users hold no threads.
* No trio task waits on a pykka future: the actor reports back with ``TrioToken.run_sync_soon``.
* Threads cannot be killed. Cancellation is cooperative: once an attempt is over, the context's
  next operation raises :class:`~netra_actors.RunFencedError` (and ``ctx.cancelled`` is True).
  A thread that ignores it is *abandoned* and counted; its late output is fenced off by attempt
  number and never reaches the store or a socket. Its thread slot is freed when it really ends.
* CPU-bound work should not run in a thread at all (the GIL would slow the event loop):
  :func:`run_in_process` runs a function in a worker process.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import multiprocessing
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, ParamSpec, TypeVar

import pykka
import trio

from ._agent import (
    AgentBase,
    AgentContext,
    Staging,
    assistant_message,
    check_write,
    journal_entry,
    keyed_call_sync,
    stage_event,
    tool_args_json,
    tool_call_id,
    tool_completed,
    tool_executing,
    tool_failure,
    tool_replay_diverged,
)
from ._bridge import Bridge
from ._core._journal import JournalEntry, Outcome, Step
from ._exceptions import RunFencedError, RuntimeClosedError, StoreError, ToolError
from ._ids import new_message_id
from ._values import JSON, loads

P = ParamSpec("P")
T = TypeVar("T")


class ThreadedAgent(AgentBase):
    """Base class of agents whose code blocks (sync SDKs, file or CPU work).

    Implement :meth:`run` as an ordinary function::

        class Summarize(ThreadedAgent):
            name = "summarize"

            def run(self, ctx: ThreadedContext, input: JSON) -> JSON:
                ctx.think("calling the SDK")
                text = blocking_sdk_call(input)        # blocks this thread only
                ctx.say(text)
                return {"summary": text}

    A fresh instance (and a fresh pykka actor) is created for every attempt.
    """

    threaded: ClassVar[bool] = True

    def run(self, ctx: ThreadedContext, input: JSON) -> JSON:
        """Do the run's work, blocking as needed. The return value is the run's result."""
        raise NotImplementedError


class ThreadedContext:
    """The synchronous twin of :class:`~netra_actors.AgentContext`, for threaded agents.

    Every method blocks the calling (agent) thread until the supervisor has taken the operation;
    it raises :class:`~netra_actors.RunFencedError` once the attempt is over.
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
        self._staging = Staging(actx.max_staged)
        self._last_beat = time.monotonic()
        self._calls = 0

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

    def emit(self, event: str, data: Mapping[str, JSON] | None = None) -> None:
        """Stage a custom event (see :meth:`AgentContext.emit`). Stays in this thread until
        the next checkpoint."""
        self._check()
        self._staging.add_event(
            stage_event(self.run_id, event, data, max_bytes=self._actx.max_event_bytes)
        )
        self._maybe_beat()

    def think(self, text: str) -> None:
        """Stage an ``agent_thinking`` event."""
        self.emit("agent_thinking", {"text": str(text)})

    def say(self, text: str) -> None:
        """Stage an assistant ``message`` event (whole; to stream one, see :meth:`message`)."""
        self._check()
        self._staging.add_event(
            assistant_message(self.run_id, str(text), self._actx.max_event_bytes)
        )
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
        """Ask the user and block until the answer (see :meth:`AgentContext.ask`)."""
        return self._call(self._actx.ask, prompt, schema=schema)

    def message(self) -> ThreadedMessageStream:
        """Stream an assistant message (see :meth:`AgentContext.message`)::

        with ctx.message() as m:
            for token in sdk_stream():
                m.write(token)
        """
        self._check()
        return ThreadedMessageStream(self)

    def _commit_message(self, message_id: str, text: str) -> int:
        self._check()
        self._staging.add_event(
            assistant_message(self.run_id, text, self._actx.max_event_bytes, message_id=message_id)
        )
        events, rows = self._staging.take()
        return self._call(self._actx._commit_staged, events, rows, closes=(message_id,))

    def tool(
        self, name: str, fn: Callable[..., Any], /, *, replay: bool = True, **args: JSON
    ) -> JSON:
        """Run ``fn(**args)`` in this thread as a recorded tool call (blocking is fine here),
        under its dependency's retry and breaker policy, journaled and replayed in a restarted
        attempt like :meth:`AgentContext.tool` (a replayed call does not leave this thread)."""
        self._check()
        args_json = tool_args_json(name, args, replay)
        cursor = self._actx._cursor
        step = cursor.begin(name, args_json, replay=replay)
        if step.replay_json is not None:  # replayed: no tool events; what is staged commits
            if self._staging.events or self._staging.rows:
                self.checkpoint()
            else:
                self._maybe_beat()
            return loads(step.replay_json)
        try:
            return self._tool_call(name, fn, args, args_json, step)
        finally:
            cursor.end()

    def _tool_call(
        self,
        name: str,
        fn: Callable[..., Any],
        args: Mapping[str, JSON],
        args_json: str,
        step: Step,
    ) -> JSON:
        self._calls += 1
        call_id = tool_call_id(self.run_id, self.attempt, self._calls)
        limit = self._actx.max_event_bytes
        staging = self._staging
        if step.diverged_from is not None:
            staging.add_event(
                tool_replay_diverged(self.run_id, step, name, args_json, self.attempt, limit)
            )
        staging.add_event(tool_executing(self.run_id, name, args_json, call_id, limit))
        self._tool_commit(journal_entry(step, name, args_json, Outcome.STARTED))
        call = keyed_call_sync(fn, step.key or call_id, args)
        try:
            result_json, attempts = self._actx._resilience.call_sync(
                name, call, args, check=self._check
            )
        except RunFencedError:
            raise
        except Exception as exc:
            error, attempts = tool_failure(exc)
            self._check()
            staging.add_event(
                tool_completed(self.run_id, name, call_id, attempts, limit, error=error)
            )
            self._tool_commit(journal_entry(step, name, args_json, Outcome.ERROR, error))
            raise ToolError(name, call_id, error) from exc
        self._check()
        staging.add_event(
            tool_completed(self.run_id, name, call_id, attempts, limit, result_json=result_json)
        )
        self._tool_commit(journal_entry(step, name, args_json, Outcome.OK, result_json))
        return loads(result_json)

    def _tool_commit(self, journal: JournalEntry | None) -> None:
        events, rows = self._staging.take()
        self._call(self._actx._commit_staged, events, rows, journal=journal)

    def _finish(self, result: JSON) -> None:
        self._check()
        events, rows = self._staging.take()
        self._call(self._actx._finish, result, events, rows)

    def run_in_process(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound ``fn(*args)`` in a worker process (see :func:`run_in_process`)."""
        if self._actx.fenced:
            raise RunFencedError("this attempt of the run is over")
        return run_in_process(fn, *args)


class ThreadedMessageStream:
    """An assistant message being streamed from a thread (see :meth:`ThreadedContext.message`)."""

    def __init__(self, ctx: ThreadedContext) -> None:
        self._ctx = ctx
        self.message_id = new_message_id()
        """The ``message_id`` of its deltas and of its committed ``message`` event."""
        self._parts: list[str] = []
        self._length = 0
        self._open = True

    @property
    def text(self) -> str:
        """Everything written so far."""
        return "".join(self._parts)

    def write(self, text: str) -> None:
        """Send ``text`` to the user's sockets now (one hand-off to trio per call)."""
        actx = self._ctx._actx
        text = check_write(self._open, self._length, str(text), actx.max_message_chars)
        if text:
            self._parts.append(text)
            self._length += len(text)
            self._ctx._call(actx._write, self.message_id, text)

    def __enter__(self) -> ThreadedMessageStream:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._open:
            return
        self._open = False
        if exc_type is None:
            self._ctx._commit_message(self.message_id, self.text)


# -- the pykka actor ------------------------------------------------------------------------

_RUN = "run"


class _Attempt:
    """What the actor thread reports back to trio, and when its thread ends."""

    def __init__(self, bridge: Bridge, on_thread_end: Callable[[_Attempt], None]) -> None:
        self.bridge = bridge
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.thread_over = False
        self.abandoned = False
        self._on_thread_end = on_thread_end

    # called in the actor's thread
    def finished(self, error: BaseException | None) -> None:
        self.error = error
        self.bridge.to_trio(self.done.set)

    def thread_ended(self) -> None:
        self.bridge.to_trio(self._thread_ended_in_trio)

    def _thread_ended_in_trio(self) -> None:
        self.thread_over = True
        self._on_thread_end(self)


class _AgentActor(pykka.ThreadingActor):
    """One attempt of a threaded agent. Its thread runs the agent; then the actor stops."""

    use_daemon_thread = True  # an abandoned thread must not keep the process alive

    def __init__(
        self, cls: type[ThreadedAgent], ctx: ThreadedContext, input: JSON, attempt: _Attempt
    ) -> None:
        super().__init__()
        self._cls = cls
        self._ctx = ctx
        self._input = input
        self._attempt = attempt

    def on_receive(self, message: Any) -> Any:
        if message != _RUN:
            return None
        result = self._cls().run(self._ctx, self._input)
        self._ctx._finish(result)
        self._attempt.finished(None)
        self.stop()
        return None

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # pykka calls this when ``run`` raised; the actor then stops (on_stop is not called).
        self._attempt.finished(exception_value)
        self._attempt.thread_ended()

    def on_stop(self) -> None:
        self._attempt.thread_ended()


async def run_threaded_attempt(
    cls: type[ThreadedAgent],
    actx: AgentContext,
    input_value: JSON,
    scope: trio.CancelScope,
    *,
    on_thread_end: Callable[[_Attempt], None],
    on_abandon: Callable[[_Attempt], None],
    on_crash: Callable[[BaseException], Awaitable[None]],
) -> None:
    """The supervisor's child task for one attempt of a threaded agent (runs in trio)."""
    bridge = Bridge.current()
    attempt = _Attempt(bridge, on_thread_end)
    ctx = ThreadedContext(actx, bridge)
    try:
        ref = _AgentActor.start(cls, ctx, input_value, attempt)
        ref.tell(_RUN)
    except BaseException:
        on_thread_end(attempt)
        raise
    try:
        with scope:
            await attempt.done.wait()
    finally:
        if not attempt.done.is_set():  # the attempt was stopped while its thread works
            actx._fence()
            if not attempt.thread_over:
                attempt.abandoned = True
                on_abandon(attempt)
    if scope.cancelled_caught:
        return
    error = attempt.error
    if error is None or isinstance(error, RunFencedError | StoreError):
        return  # completed, or the supervisor already knows (fenced / failed commit)
    await on_crash(error)


# -- CPU-bound work in a process -------------------------------------------------------------

_pool: concurrent.futures.ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _get_pool() -> concurrent.futures.ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ProcessPoolExecutor(
                mp_context=multiprocessing.get_context("spawn")
            )
            atexit.register(_pool.shutdown, wait=True, cancel_futures=True)
        return _pool


def run_in_process(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a worker process and return its result (blocking the caller).

    For CPU-bound work: a busy Python thread holds the GIL and delays the event loop (measured
    in ``docs/benchmarks.md``); a process does not. ``fn`` and its arguments must be picklable
    (a module-level function). From an async agent, call it through a thread so the event loop
    never blocks: ``await trio.to_thread.run_sync(run_in_process, fn, arg)``.
    """
    return _get_pool().submit(fn, *args).result()
