"""Agents: the classes developers subclass (async :class:`Agent`, :class:`ThreadedAgent`) and
the registry a runtime keeps of them.

An agent class names itself and implements ``run``; a fresh instance is created for every attempt
of a run, and acts only through the context it is given (:mod:`._context` for an async agent,
:mod:`._threaded_context` for a threaded one), never on a socket or the database.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from ._context import AgentContext
from ._core import LivenessPolicy, RestartPolicy
from ._exceptions import ConfigError
from ._staging import NAME
from ._threaded_context import ThreadedContext
from ._values import JSON


class AgentBase:
    """What every agent class has, whatever kind it is (async :class:`Agent` or threaded)."""

    name: ClassVar[str] = ""
    """The name clients start it by (``[a-z][a-z0-9_]*``, at most 64 characters)."""
    restart_policy: ClassVar[RestartPolicy | None] = None
    """How crashed runs are restarted (``None``: the runtime's default)."""
    liveness: ClassVar[LivenessPolicy | None] = None
    """Heartbeat timeout and run deadline (``None``: the runtime's default)."""
    threaded: ClassVar[bool] = False
    """True for agents whose code runs in a thread (:class:`~netra_actors.ThreadedAgent`)."""
    description: ClassVar[str] = ""
    """Optional: one line on what the agent does (the page shows it, ``GET /agents`` lists it)."""
    example_input: ClassVar[JSON] = None
    """Optional: an input to try it with (the page's run form offers it; None: none)."""


def _is_async(fn: Any) -> bool:
    """True if ``fn`` (or what it wraps, for a decorated function) is an ``async def``."""
    target = inspect.unwrap(fn)
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def check_run(cls: type[AgentBase]) -> None:
    """Raise :class:`TypeError` unless ``cls.run`` is of its kind: ``async def`` for an
    :class:`Agent`, ``def`` for a :class:`ThreadedAgent` (else every attempt would crash)."""
    run = getattr(cls, "run", None)
    if not callable(run):
        return
    if cls.threaded and _is_async(run):
        raise TypeError(
            f"{cls.__qualname__}.run is an async def, but {cls.__qualname__} is a ThreadedAgent, "
            "whose run is a plain def called in a thread: subclass netra_actors.Agent for an "
            "async run, or make run a def"
        )
    if not cls.threaded and not _is_async(run):
        raise TypeError(
            f"{cls.__qualname__}.run is a plain def, but {cls.__qualname__} is an async Agent, "
            "whose run must be an async def: subclass netra_actors.ThreadedAgent for a blocking "
            "run, or make run an async def"
        )


class Agent(AgentBase):
    """Base class of async agents (they run as trio tasks).

    Subclass it, set ``name`` and implement :meth:`run`::

        class Echo(Agent):
            name = "echo"

            async def run(self, ctx: AgentContext, input: JSON) -> JSON:
                await ctx.think("echoing")
                return input

    A fresh instance is created for every attempt of a run. A ``run`` that is not an
    ``async def`` is refused when the class is defined (:class:`TypeError`).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_run(cls)

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        """Do the run's work. The return value becomes ``agent_completed``'s ``result``."""
        raise NotImplementedError


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

    A fresh instance (and a fresh pykka actor, :mod:`._threaded`) is created for every attempt.
    CPU-bound work belongs in a process: :func:`~netra_actors.run_in_process`. An ``async def
    run`` is refused when the class is defined (:class:`TypeError`).
    """

    threaded: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_run(cls)

    def run(self, ctx: ThreadedContext, input: JSON) -> JSON:
        """Do the run's work, blocking as needed. The return value is the run's result."""
        raise NotImplementedError


class AgentRegistry:
    """The agents a runtime knows, by name. The first one is the default unless named."""

    def __init__(self, agents: Iterable[type[AgentBase]], *, default: str | None = None) -> None:
        self._agents: dict[str, type[AgentBase]] = {}
        for cls in agents:
            if not (isinstance(cls, type) and issubclass(cls, AgentBase)):
                raise ConfigError(f"{cls!r} is not an Agent or ThreadedAgent subclass")
            check_run(cls)  # again: ``run`` may have been replaced since the class was defined
            if not NAME.match(cls.name or ""):
                raise ConfigError(
                    f"agent class {cls.__qualname__} needs a name matching [a-z][a-z0-9_]* "
                    f"(at most 64 characters), got {cls.name!r}"
                )
            if cls.name in self._agents:
                raise ConfigError(f"two agents are named {cls.name!r}")
            self._agents[cls.name] = cls
        if default is not None and default not in self._agents:
            raise ConfigError(f"default agent {default!r} is not registered")
        self.default = default if default is not None else next(iter(self._agents), None)

    def get(self, name: str) -> type[AgentBase] | None:
        """The agent class named ``name``, or None."""
        return self._agents.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)
