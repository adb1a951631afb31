"""netra_actors: an actor-model runtime per user session, for AI-agent chat backends.

Every user gets one supervisor actor that owns that user's runs, unit of work and socket
mailboxes. See ``docs/`` for the architecture and guides.
"""

import logging as _logging

from ._agent import Agent as Agent
from ._agent import AgentBase as AgentBase
from ._agent import AgentRegistry as AgentRegistry
from ._agent import ThreadedAgent as ThreadedAgent
from ._bridge import run as run
from ._config import RuntimeConfig as RuntimeConfig
from ._config import database_url as database_url
from ._config import sqlite_url as sqlite_url
from ._context import AgentContext as AgentContext
from ._core import LivenessPolicy as LivenessPolicy
from ._core import RestartPolicy as RestartPolicy
from ._core import RestartType as RestartType
from ._core import RunState as RunState
from ._core._resilience import BreakerPolicy as BreakerPolicy
from ._core._resilience import BreakerState as BreakerState
from ._core._resilience import Dependency as Dependency
from ._core._resilience import RetryPolicy as RetryPolicy
from ._embed import EmbeddedRuntime as EmbeddedRuntime
from ._embed import EmbeddedSubscription as EmbeddedSubscription
from ._embed import embed as embed
from ._exceptions import AgentError as AgentError
from ._exceptions import BusyError as BusyError
from ._exceptions import CircuitOpenError as CircuitOpenError
from ._exceptions import CommandError as CommandError
from ._exceptions import ConfigError as ConfigError
from ._exceptions import DependencyError as DependencyError
from ._exceptions import DependencyFailedError as DependencyFailedError
from ._exceptions import DependencyTimeoutError as DependencyTimeoutError
from ._exceptions import IllegalStateError as IllegalStateError
from ._exceptions import IllegalTransitionError as IllegalTransitionError
from ._exceptions import LeaseLostError as LeaseLostError
from ._exceptions import MailboxFullError as MailboxFullError
from ._exceptions import NetraError as NetraError
from ._exceptions import ReservedEventError as ReservedEventError
from ._exceptions import ResumeBeyondHeadError as ResumeBeyondHeadError
from ._exceptions import RunFailedError as RunFailedError
from ._exceptions import RunFencedError as RunFencedError
from ._exceptions import RuntimeClosedError as RuntimeClosedError
from ._exceptions import SchemaVersionError as SchemaVersionError
from ._exceptions import SlowConsumerError as SlowConsumerError
from ._exceptions import StoreError as StoreError
from ._exceptions import SubscriptionClosedError as SubscriptionClosedError
from ._exceptions import TooLargeError as TooLargeError
from ._exceptions import ToolError as ToolError
from ._exceptions import UnknownAgentError as UnknownAgentError
from ._exceptions import UnknownRunError as UnknownRunError
from ._histogram import HistogramSnapshot as HistogramSnapshot
from ._idempotency import idempotency_key as idempotency_key
from ._message_stream import MessageStream as MessageStream
from ._message_stream import ThreadedMessageStream as ThreadedMessageStream
from ._process import run_in_process as run_in_process
from ._resilience import DependencyStatistics as DependencyStatistics
from ._resilience import Resilience as Resilience
from ._resilience import ResilienceStatistics as ResilienceStatistics
from ._runs import RunsSnapshot as RunsSnapshot
from ._runtime import Runtime as Runtime
from ._runtime import RuntimeStatistics as RuntimeStatistics
from ._runtime import open_runtime as open_runtime
from ._store import SCHEMA_VERSION as SCHEMA_VERSION
from ._store import Store as Store
from ._store import StoreStatistics as StoreStatistics
from ._subscription import Subscription as Subscription
from ._subscription import SubscriptionStatistics as SubscriptionStatistics
from ._threaded_context import ThreadedContext as ThreadedContext
from ._values import JSON as JSON
from ._values import Delta as Delta
from ._values import Event as Event
from ._values import RunInfo as RunInfo

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "SCHEMA_VERSION",
    "Agent",
    "AgentBase",
    "AgentContext",
    "AgentError",
    "AgentRegistry",
    "BreakerPolicy",
    "BreakerState",
    "BusyError",
    "CircuitOpenError",
    "CommandError",
    "ConfigError",
    "Delta",
    "Dependency",
    "DependencyError",
    "DependencyFailedError",
    "DependencyStatistics",
    "DependencyTimeoutError",
    "EmbeddedRuntime",
    "EmbeddedSubscription",
    "Event",
    "HistogramSnapshot",
    "IllegalStateError",
    "IllegalTransitionError",
    "LeaseLostError",
    "LivenessPolicy",
    "MailboxFullError",
    "MessageStream",
    "NetraError",
    "ReservedEventError",
    "Resilience",
    "ResilienceStatistics",
    "RestartPolicy",
    "RestartType",
    "ResumeBeyondHeadError",
    "RetryPolicy",
    "RunFailedError",
    "RunFencedError",
    "RunInfo",
    "RunState",
    "RunsSnapshot",
    "Runtime",
    "RuntimeClosedError",
    "RuntimeConfig",
    "RuntimeStatistics",
    "SchemaVersionError",
    "SlowConsumerError",
    "Store",
    "StoreError",
    "StoreStatistics",
    "Subscription",
    "SubscriptionClosedError",
    "SubscriptionStatistics",
    "ThreadedAgent",
    "ThreadedContext",
    "ThreadedMessageStream",
    "TooLargeError",
    "ToolError",
    "UnknownAgentError",
    "UnknownRunError",
    "database_url",
    "embed",
    "idempotency_key",
    "open_runtime",
    "run",
    "run_in_process",
    "sqlite_url",
]

_logging.getLogger("netra_actors").addHandler(_logging.NullHandler())
