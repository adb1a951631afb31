"""One attempt of a threaded agent: a ``pykka.ThreadingActor`` whose thread runs the agent.

A :class:`~netra_actors.ThreadedAgent` runs under the same supervision as an async agent: the
same supervisor messages, units of work, rollbacks, restarts, deadlines and heartbeats. Its
supervisor's child task (:func:`run_threaded_attempt`) starts one actor per attempt and waits for
it in trio; the agent's code talks to trio through its :class:`ThreadedContext`.

* Threads are bounded by a limiter (``RuntimeConfig.max_threads``): a run waits in ``pending``
  (or ``starting``, for a restart) until a thread is free. Idle users hold no threads.
* No trio task waits on a pykka future: the actor reports back through the bridge.
* Threads cannot be killed. Once an attempt is over, its context fences every further operation;
  a thread that ignores it is *abandoned* and counted; its late output is fenced off by attempt
  number and never reaches the store or a socket. Its thread slot is freed when it really ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pykka
import trio

from ._agent import ThreadedAgent
from ._bridge import Bridge
from ._context import AgentContext
from ._exceptions import RunFencedError, StoreError
from ._threaded_context import ThreadedContext
from ._values import JSON

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
        error: Exception | None = None
        try:
            self._ctx._finish(self._cls().run(self._ctx, self._input))
        except Exception as exc:  # the supervisor logs it, once: not pykka too
            error = exc
        self._attempt.finished(error)
        self.stop()
        return None

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # pykka calls this when ``on_receive`` raised more than an Exception (e.g. SystemExit
        # in the agent's code); the actor then stops (on_stop is not called).
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
