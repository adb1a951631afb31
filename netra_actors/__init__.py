"""netra_actors: an actor-model runtime per user session, for AI-agent chat backends.

Every user gets one supervisor actor that owns that user's runs, unit of work and socket
mailboxes. See ``docs/`` for the architecture and guides, and ``docs/api.md`` for every public
name.

The top level holds what an application needs: open the runtime (:func:`open_runtime`,
:func:`run`, :func:`embed`, :class:`RuntimeConfig`), define agents (:class:`Agent`,
:class:`ThreadedAgent`, their contexts and the :class:`ConversationMessage` values they read), read events (:class:`Event`, :class:`Delta`,
:class:`RunInfo`, :class:`RunState`) and the errors you catch. The rest is in sub-namespaces:

* :mod:`netra_actors.exceptions` — the whole error tree;
* :mod:`netra_actors.policies` — restart, liveness, retry and circuit breaker policies;
* :mod:`netra_actors.statistics` — the statistics and snapshot values the runtime reports;
* :mod:`netra_actors.types` — the classes of objects it hands you, for annotations;
* :mod:`netra_actors.testing` — an in-memory store and test helpers (imported on its own).
"""

import logging as _logging

from . import exceptions as exceptions
from . import policies as policies
from . import statistics as statistics
from . import types as types
from ._agent import Agent as Agent
from ._agent import ThreadedAgent as ThreadedAgent
from ._bridge import run as run
from ._config import RuntimeConfig as RuntimeConfig
from ._config import database_url as database_url
from ._config import sqlite_url as sqlite_url
from ._context import AgentContext as AgentContext
from ._core import RunState as RunState
from ._embed import EmbeddedRuntime as EmbeddedRuntime
from ._embed import embed as embed
from ._exceptions import CommandError as CommandError
from ._exceptions import NetraError as NetraError
from ._exceptions import SubscriptionClosedError as SubscriptionClosedError
from ._exceptions import ToolError as ToolError
from ._idempotency import idempotency_key as idempotency_key
from ._logs import configure_logging as configure_logging
from ._process import run_in_process as run_in_process
from ._runtime import Runtime as Runtime
from ._runtime import open_runtime as open_runtime
from ._threaded_context import ThreadedContext as ThreadedContext
from ._values import JSON as JSON
from ._values import Delta as Delta
from ._values import Event as Event
from ._values import RunInfo as RunInfo

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "Agent",
    "AgentContext",
    "CommandError",
    "Delta",
    "EmbeddedRuntime",
    "Event",
    "NetraError",
    "RunInfo",
    "RunState",
    "Runtime",
    "RuntimeConfig",
    "SubscriptionClosedError",
    "ThreadedAgent",
    "ThreadedContext",
    "ToolError",
    "configure_logging",
    "database_url",
    "embed",
    "idempotency_key",
    "open_runtime",
    "run",
    "run_in_process",
    "sqlite_url",
]

_logging.getLogger("netra_actors").addHandler(_logging.NullHandler())
