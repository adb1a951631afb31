"""A supervisor's children: the task of one attempt (async or threaded), and the slot wait.

Each child runs inside a cancel scope its supervisor holds; it reports back only through the
supervisor's mailbox (``AgentExited`` when the agent raised, ``SlotReady`` when a thread slot
was granted). A child never changes the session itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import trio

from ._agent import Agent, AgentContext
from ._exceptions import RunFailedError, RunFencedError, StoreError
from ._messages import AgentExited, Message, SlotReady
from ._threaded import ThreadedAgent, run_threaded_attempt
from ._values import JSON

log = logging.getLogger("netra_actors.supervisor")


async def report_crash(
    mailbox: trio.MemorySendChannel[Message], ctx: AgentContext, error: BaseException
) -> None:
    """Tell the supervisor that the attempt raised (``error`` for RunFailedError)."""
    reason = "error" if isinstance(error, RunFailedError) else "crash"
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await mailbox.send(AgentExited(ctx.run_id, ctx.attempt, error, reason))


async def agent_child(
    mailbox: trio.MemorySendChannel[Message],
    cls: type[Agent],
    ctx: AgentContext,
    input_value: JSON,
    scope: trio.CancelScope,
) -> None:
    """One attempt of an async agent, as a trio task."""
    error: BaseException | None = None
    with scope:
        try:
            result = await cls().run(ctx, input_value)
            await ctx._finish(result)
            return
        except (RunFencedError, StoreError):
            return  # over, or its commit failed: the supervisor knows and handles it
        except Exception as exc:
            error = exc
    if scope.cancelled_caught or error is None:
        return
    await report_crash(mailbox, ctx, error)


class ThreadCounters:
    """What the threaded children count (the runtime's statistics read it)."""

    __slots__ = ("abandoned", "abandoned_total", "live")

    def __init__(self) -> None:
        self.live = 0
        """Threads that have not ended yet (abandoned ones included)."""
        self.abandoned = 0
        """Threads still running code for an attempt that is over."""
        self.abandoned_total = 0


async def threaded_child(
    mailbox: trio.MemorySendChannel[Message],
    cls: type[ThreadedAgent],
    ctx: AgentContext,
    input_value: JSON,
    scope: trio.CancelScope,
    *,
    counters: ThreadCounters,
    release_slot: Callable[[], None],
) -> None:
    """One attempt of a threaded agent: a pykka actor, watched from this trio task."""

    def thread_ended(attempt: Any) -> None:
        counters.live -= 1
        if attempt.abandoned:
            counters.abandoned -= 1
        release_slot()  # only now: max_threads bounds real threads

    def abandoned(attempt: Any) -> None:
        counters.abandoned += 1
        counters.abandoned_total += 1
        log.warning(
            "user %r run %s attempt %d: its thread ignores cancellation; abandoned "
            "(its late output is discarded)",
            ctx.user_id,
            ctx.run_id,
            ctx.attempt,
        )

    async def crashed(error: BaseException) -> None:
        await report_crash(mailbox, ctx, error)

    counters.live += 1
    await run_threaded_attempt(
        cls,
        ctx,
        input_value,
        scope,
        on_thread_end=thread_ended,
        on_abandon=abandoned,
        on_crash=crashed,
    )


async def slot_waiter(
    mailbox: trio.MemorySendChannel[Message],
    limiter: trio.CapacityLimiter,
    run_id: str,
    scope: trio.CancelScope,
) -> None:
    """Wait for a free thread for ``run_id``, then hand the slot to the supervisor."""
    borrower = object()

    def release() -> None:
        limiter.release_on_behalf_of(borrower)

    with scope:
        await limiter.acquire_on_behalf_of(borrower)
        try:
            await mailbox.send(SlotReady(run_id, borrower, release))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            release()  # the supervisor is gone
        except BaseException:
            release()
            raise
