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
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio
from sqlalchemy import MetaData

from ._agent import AgentBase
from ._bridge import Bridge, start_guest
from ._config import RuntimeConfig
from ._exceptions import RuntimeClosedError, SubscriptionClosedError
from ._runtime import Runtime, open_runtime
from ._statistics import RuntimeStatistics
from ._subscription import Subscription
from ._values import Delta, Event


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


P = ParamSpec("P")
T = TypeVar("T")


def _forwarded(
    method: Callable[Concatenate[Runtime, P], Awaitable[T]],
) -> Callable[Concatenate[EmbeddedRuntime, P], Coroutine[Any, Any, T]]:
    """``method`` of :class:`Runtime` as an asyncio coroutine of :class:`EmbeddedRuntime`: the
    same parameters, result and documentation; the call runs in trio (see ``_call``)."""

    async def forward(self: EmbeddedRuntime, /, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = await self._call(lambda: method(self._runtime, *args, **kwargs))
        return result

    functools.update_wrapper(forward, method)
    return forward


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

    # -- the calls that only cross over to trio: Runtime's own signature and documentation ------

    start_run = _forwarded(Runtime.start_run)
    say = _forwarded(Runtime.say)
    send_input = _forwarded(Runtime.send_input)
    cancel_run = _forwarded(Runtime.cancel_run)
    send_to_run = _forwarded(Runtime.send_to_run)
    get_runs = _forwarded(Runtime.get_runs)
    get_run = _forwarded(Runtime.get_run)
    wait_run = _forwarded(Runtime.wait_run)
    message_ids = _forwarded(Runtime.message_ids)
    threads = _forwarded(Runtime.threads)
    history = _forwarded(Runtime.history)
    delete_thread = _forwarded(Runtime.delete_thread)
    erase_user = _forwarded(Runtime.erase_user)
    check = _forwarded(Runtime.check)
    drain = _forwarded(Runtime.drain)

    # -- the calls that need more than a crossing ------------------------------------------

    async def export_user(self, user_id: str) -> AsyncIterator[Event]:
        """See :meth:`Runtime.export_user` (one hand-off per page)."""
        async for event in self.replay(user_id, 0):
            yield event

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
