"""An agent class whose ``run`` is not of its kind is refused when it is defined.

A plain ``def run`` on an async :class:`~netra_actors.Agent` (or an ``async def run`` on a
:class:`~netra_actors.ThreadedAgent`) would otherwise be registered and crash every attempt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import netra_actors as na
from netra_actors._agent import AgentRegistry


def test_a_sync_run_on_an_async_agent_is_refused_at_definition() -> None:
    with pytest.raises(TypeError) as caught:

        class SyncRun(na.Agent):
            name = "sync_run"

            def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
                return input

    message = str(caught.value)
    assert "SyncRun" in message
    assert "async def" in message
    assert "ThreadedAgent" in message  # the base to use for a blocking run


def test_an_async_run_on_a_threaded_agent_is_refused_at_definition() -> None:
    with pytest.raises(TypeError) as caught:

        class AsyncRun(na.ThreadedAgent):
            name = "async_run"

            async def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
                return input

    message = str(caught.value)
    assert "AsyncRun" in message
    assert "netra_actors.Agent" in message  # the base to use for an async run


def test_a_run_replaced_after_definition_is_refused_at_registration() -> None:
    class Later(na.Agent):
        name = "later"

        async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
            return input

    def sync_run(self: Any, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        return input

    Later.run = sync_run  # type: ignore[method-assign]
    with pytest.raises(TypeError, match="Later"):
        AgentRegistry([Later])


Run = Callable[..., Coroutine[Any, Any, na.JSON]]


def _logged(fn: Run) -> Run:
    """A decorator whose wrapper is a plain def returning the coroutine (``functools.wraps``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Coroutine[Any, Any, na.JSON]:
        return fn(*args)

    return wrapper


def test_runs_of_their_kind_are_accepted_also_when_decorated() -> None:
    class Decorated(na.Agent):
        name = "decorated"

        @_logged
        async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
            return input

    class Inherits(Decorated):  # a subclass that keeps its base's run
        name = "inherits"

    class Blocking(na.ThreadedAgent):
        name = "blocking"

        def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
            return input

    assert list(AgentRegistry([Decorated, Inherits, Blocking])) == [
        "decorated",
        "inherits",
        "blocking",
    ]
