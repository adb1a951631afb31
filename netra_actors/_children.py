"""A session's children: the task of one attempt (async or threaded), and the slot wait.

Each child runs inside a cancel scope its supervisor holds; it reports back only through the
supervisor's mailbox (``AgentExited`` when the agent raised, ``SlotReady`` when a thread slot
was granted). A child never changes the session itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._agent import Agent, ThreadedAgent
from ._context import AgentContext
from ._conversation import run_conversation
from ._exceptions import RunFailedError, RunFencedError, StoreError
from ._messages import AgentExited, Message, SlotReady
from ._threaded import run_threaded_attempt
from ._values import JSON, loads

if TYPE_CHECKING:
    from ._context import InTask
    from ._deps import SupervisorDeps, ThreadCounters
    from ._runs import Run

log = logging.getLogger("netra_actors.supervisor")


def start_attempt(
    nursery: trio.Nursery,
    mailbox: trio.MemorySendChannel[Message],
    user_id: str,
    run: Run,
    deps: SupervisorDeps,
    release_slot: Callable[[], None] | None,
    in_task: InTask | None = None,
) -> None:
    """Start attempt ``run.life.attempt``: a trio task, or a pykka actor when threaded (an async
    agent takes its checkpoints through ``in_task`` when it can: ``_checkpoint.py``)."""
    threaded = issubclass(run.agent_cls, ThreadedAgent)
    config = deps.config
    hb = run.life.liveness.policy.heartbeat_timeout
    ctx = AgentContext(
        user_id=user_id,
        run_id=run.run_id,
        agent=run.agent,
        attempt=run.life.attempt,
        supervisor=mailbox,
        inbox=run.inbox_receiver,
        max_staged=config.max_staged_events,
        max_event_bytes=config.max_event_bytes,
        max_message_chars=config.max_message_chars,
        resilience=deps.resilience,
        beat_every=1.0 if hb is None else min(1.0, hb / 4),
        journal=run.journal.snapshot(),
        thread=run.thread,
        conversation=functools.partial(run_conversation, deps.store, user_id, run),
        in_task=None if threaded else in_task,
    )
    if deps.tracing is not None:
        ctx._tools.trace = deps.tracing.attempt(run)
    run.new_attempt()  # it takes the run's inputs from the first again
    run.question = None
    run.child = scope = trio.CancelScope()
    input_value = None if run.input_json is None else loads(run.input_json)
    if threaded:
        assert release_slot is not None
        nursery.start_soon(
            functools.partial(
                threaded_child, counters=deps.counters.threads, release_slot=release_slot
            ),
            mailbox,
            run.agent_cls,
            ctx,
            input_value,
            scope,
        )
    else:
        assert issubclass(run.agent_cls, Agent)
        nursery.start_soon(agent_child, mailbox, run.agent_cls, ctx, input_value, scope)


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
