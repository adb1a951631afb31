"""Embedding: host the runtime inside an asyncio application that is already running.

::

    async with netra_actors.embed(config, agents=[MyAgent]) as rt:   # in asyncio (FastAPI …)
        run_id = await rt.start_run("alice", "my_agent", {"q": "hi"})
        async for event in rt.subscribe("alice", resume_from=0):
            ...

The runtime joins the host's event loop as a trio guest (same thread); every method here is an
asyncio coroutine that hands the call to trio through :mod:`netra_actors._bridge`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import trio
from sqlalchemy import MetaData

from ._agent import AgentBase
from ._bridge import Bridge, start_guest
from ._config import RuntimeConfig
from ._conversation import ClientTool
from ._core._threads import DEFAULT_HISTORY_LIMIT, DEFAULT_THREADS_LIMIT
from ._exceptions import RuntimeClosedError, SubscriptionClosedError
from ._runs import RunsSnapshot
from ._runtime import Runtime, open_runtime
from ._statistics import RuntimeStatistics
from ._store import HistoryPage, ThreadsPage
from ._subscription import Subscription
from ._values import JSON, Delta, Event, RunInfo


class EmbeddedSubscription:
    """A subscription read from asyncio: ``async for event in sub``. Close it when done."""

    def __init__(self, host: EmbeddedRuntime, sub: Subscription) -> None:
        self._host = host
        self._sub = sub
        self._buffer: list[Event] = []
        self.head_seq = sub.head_seq
        """The user's head ``seq`` when the subscription was registered."""

    async def receive_items(self, max_items: int = 256) -> list[Event | Delta]:
        """The next events and deltas (see :meth:`Subscription.receive_items`)."""
        items: list[Event | Delta] = await self._host._call(self._sub.receive_items, max_items)
        return items

    async def receive_batch(self, max_events: int = 256) -> list[Event]:
        """The next events (see :meth:`Subscription.receive_batch`)."""
        if self._buffer:
            out, self._buffer = self._buffer[:max_events], self._buffer[max_events:]
            return out
        events: list[Event] = await self._host._call(self._sub.receive_batch, max_events)
        return events

    def __aiter__(self) -> EmbeddedSubscription:
        return self

    async def __anext__(self) -> Event:
        if not self._buffer:
            try:
                self._buffer = await self._host._call(self._sub.receive_batch, 256)
            except SubscriptionClosedError as exc:
                if exc.reason == "closed":
                    raise StopAsyncIteration from None
                raise
        return self._buffer.pop(0)

    async def __aenter__(self) -> EmbeddedSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving."""
        if not self._host.closed:
            self._host._bridge.to_trio(self._sub.close)


class EmbeddedRuntime:
    """The runtime seen from asyncio. Every method mirrors :class:`Runtime`'s.

    Once :func:`embed` has exited, every method raises :class:`RuntimeClosedError`.
    """

    def __init__(self, runtime: Runtime, bridge: Bridge, nursery: trio.Nursery) -> None:
        self._runtime = runtime
        self._bridge = bridge
        self._nursery = nursery
        self.closed = False
        """True once the runtime has stopped."""

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.closed:
            raise RuntimeClosedError("the runtime has stopped")
        return await self._bridge.call_in_trio(self._nursery, fn, *args)

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
        """See :meth:`Runtime.start_run`."""
        result: str = await self._call(
            lambda: self._runtime.start_run(
                user_id,
                agent,
                input,
                if_busy=if_busy,
                trace_context=trace_context,
                thread=thread,
                start_at=start_at,
            )
        )
        return result

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
        start_at: float | None = None,
        input: JSON = None,
        client_tools: Sequence[ClientTool | Mapping[str, JSON]] | None = None,
    ) -> str:
        """See :meth:`Runtime.say`."""
        result: str = await self._call(
            lambda: self._runtime.say(
                user_id,
                text,
                agent=agent,
                if_busy=if_busy,
                message_meta=message_meta,
                trace_context=trace_context,
                thread=thread,
                message_id=message_id,
                earlier=earlier,
                start_at=start_at,
                input=input,
                client_tools=client_tools,
            )
        )
        return result

    async def message_ids(self, user_id: str, ids: Sequence[str]) -> dict[str, str]:
        """See :meth:`Runtime.message_ids`."""
        result: dict[str, str] = await self._call(self._runtime.message_ids, user_id, ids)
        return result

    async def threads(
        self, user_id: str, *, before: int | None = None, limit: int = DEFAULT_THREADS_LIMIT
    ) -> ThreadsPage:
        """See :meth:`Runtime.threads`."""
        result: ThreadsPage = await self._call(
            lambda: self._runtime.threads(user_id, before=before, limit=limit)
        )
        return result

    async def history(
        self,
        user_id: str,
        *,
        thread: str | None = None,
        before_seq: int | None = None,
        limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> HistoryPage:
        """See :meth:`Runtime.history`."""
        result: HistoryPage = await self._call(
            lambda: self._runtime.history(
                user_id, thread=thread, before_seq=before_seq, limit=limit
            )
        )
        return result

    async def delete_thread(self, user_id: str, thread: str) -> None:
        """See :meth:`Runtime.delete_thread`."""
        await self._call(self._runtime.delete_thread, user_id, thread)

    async def erase_user(self, user_id: str) -> None:
        """See :meth:`Runtime.erase_user`."""
        await self._call(self._runtime.erase_user, user_id)

    async def export_user(self, user_id: str) -> AsyncIterator[Event]:
        """See :meth:`Runtime.export_user` (one hand-off per page)."""
        async for event in self.replay(user_id, 0):
            yield event

    async def send_input(self, user_id: str, run_id: str, input: JSON) -> None:
        """See :meth:`Runtime.send_input`."""
        await self._call(self._runtime.send_input, user_id, run_id, input)

    async def cancel_run(self, user_id: str, run_id: str) -> None:
        """See :meth:`Runtime.cancel_run`."""
        await self._call(self._runtime.cancel_run, user_id, run_id)

    async def send_to_run(self, user_id: str, run_id: str, message: JSON) -> None:
        """See :meth:`Runtime.send_to_run`."""
        await self._call(self._runtime.send_to_run, user_id, run_id, message)

    async def get_runs(self, user_id: str, *, limit: int = 100) -> RunsSnapshot:
        """See :meth:`Runtime.get_runs`."""
        result: RunsSnapshot = await self._call(
            lambda: self._runtime.get_runs(user_id, limit=limit)
        )
        return result

    async def get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        """See :meth:`Runtime.get_run`."""
        result: RunInfo | None = await self._call(self._runtime.get_run, user_id, run_id)
        return result

    async def wait_run(self, user_id: str, run_id: str) -> RunInfo:
        """See :meth:`Runtime.wait_run`."""
        result: RunInfo = await self._call(self._runtime.wait_run, user_id, run_id)
        return result

    async def subscribe(
        self,
        user_id: str,
        *,
        resume_from: int | None = None,
        capacity: int | None = None,
        deltas: bool = False,
    ) -> EmbeddedSubscription:
        """See :meth:`Runtime.subscribe` (with ``deltas``, read it with ``receive_items``)."""
        sub: Subscription = await self._call(
            lambda: self._runtime.subscribe(
                user_id, resume_from=resume_from, capacity=capacity, deltas=deltas
            )
        )
        return EmbeddedSubscription(self, sub)

    async def replay(self, user_id: str, after_seq: int = 0) -> AsyncIterator[Event]:
        """See :meth:`Runtime.replay` (one hand-off per page)."""
        page = self._runtime.config.replay_page
        while True:
            events: list[Event] = await self._call(
                self._runtime.read_events, user_id, after_seq, page
            )
            for event in events:
                yield event
            if len(events) < page:
                return
            after_seq = events[-1].seq

    async def check(self) -> None:
        """See :meth:`Runtime.check`."""
        await self._call(self._runtime.check)

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (a budget, not a deadline)
        """See :meth:`Runtime.drain`: before leaving :func:`embed` on a planned shutdown, take no
        new users and let the live runs finish for up to ``timeout`` seconds (the rest end
        ``dead``, one rollback each); then release the leases. Leaving ``embed`` without it
        cancels the live runs at once."""
        await self._call(self._runtime.drain, timeout)

    async def statistics(self) -> RuntimeStatistics:
        """See :meth:`Runtime.statistics`."""

        async def read() -> RuntimeStatistics:
            return self._runtime.statistics()

        result: RuntimeStatistics = await self._call(read)
        return result


@contextlib.asynccontextmanager
async def embed(
    config: RuntimeConfig | None = None,
    *,
    agents: Iterable[type[AgentBase]] = (),
    default_agent: str | None = None,
    metadata: Iterable[MetaData] = (),
) -> AsyncIterator[EmbeddedRuntime]:
    """Start the runtime inside the running asyncio loop; stop it cleanly on exit."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[EmbeddedRuntime] = loop.create_future()
    stop = trio.Event()
    agent_list = list(agents)
    metadata_list = list(metadata)

    async def trio_main() -> None:
        async with (
            open_runtime(
                config, agents=agent_list, default_agent=default_agent, metadata=metadata_list
            ) as runtime,
            trio.open_nursery() as nursery,
        ):
            bridge = Bridge.current()
            embedded = EmbeddedRuntime(runtime, bridge, nursery)
            bridge.call_host(ready.set_result, embedded)
            await stop.wait()
            nursery.cancel_scope.cancel()

    done = start_guest(trio_main, loop=loop)
    waiter = asyncio.ensure_future(ready)
    watched: set[asyncio.Future[Any]] = {waiter, done}
    finished, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in finished:
        waiter.cancel()
        done.result().unwrap()  # raises why the runtime did not start
        raise RuntimeError("the runtime stopped before it was ready")
    embedded = waiter.result()
    try:
        yield embedded
    finally:
        embedded._bridge.to_trio(stop.set)
        try:
            (await asyncio.shield(done)).unwrap()
        finally:
            embedded.closed = True
