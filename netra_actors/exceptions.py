"""Every exception netra_actors raises on purpose, in one tree.

The four you catch most often are also at the top of the package: ``netra_actors.NetraError``,
``CommandError`` (a refused command), ``SubscriptionClosedError`` (a reader's stream ended) and
``ToolError`` (inside an agent: a tool call failed). They are the same classes as here.

The tree::

    NetraError                      base of everything below
    ├── ConfigError                 a configuration value is invalid (raised at construction)
    ├── RuntimeClosedError          you used a runtime/handle after it was closed
    ├── CommandError                a user's command was refused; ``code`` is the wire error code
    │   ├── UnknownAgentError       no agent with that name is registered   (unknown_agent)
    │   ├── UnknownRunError         no such run *for this user*             (unknown_run)
    │   ├── IllegalStateError       the run's state does not allow it        (illegal_state)
    │   ├── ResumeBeyondHeadError   resume_from is greater than the head seq (bad_request)
    │   ├── TooLargeError           a value is over its size limit           (too_large)
    │   ├── MailboxFullError        the user's mailbox is full (backpressure) (rate_limited)
    │   └── BusyError               the user has a live run and ``if_busy`` is reject  (busy)
    ├── SubscriptionClosedError     a socket mailbox ended; ``reason`` says why
    │   └── SlowConsumerError       it fell too far behind (resume from the store)
    ├── IllegalTransitionError      the execution state machine refused a transition
    ├── StoreError                  the database failed under us (not your input)
    │   ├── SchemaVersionError      the database schema is newer than this code
    │   └── LeaseLostError          this node no longer owns the user (fenced: nothing committed)
    ├── AgentError                  raised *inside agent code* by the context object
    │   ├── ToolError               a tool call failed (it was recorded as ``tool_completed``)
    │   ├── RunFailedError          raise it to end the run ``failed`` now (reason ``error``)
    │   ├── RunFencedError          this attempt is over (cancelled, timed out, dead, restarted);
    │   │                           anything it still emits is discarded
    │   └── DependencyError         a declared dependency (tool, model API) failed; ``dependency``
    │       ├── DependencyFailedError   the call failed after ``attempts`` tries; ``last_error``
    │       ├── CircuitOpenError    its circuit breaker is open: failed fast; ``retry_after``
    │       └── DependencyTimeoutError  one attempt ran past its ``RetryPolicy.timeout``
    └── ReservedEventError          an agent tried to emit an event name the runtime owns

"You broke it" (``CommandError``, ``IllegalTransitionError``, ``ReservedEventError``,
``ConfigError``) is kept apart from "it broke under you" (``StoreError``).
"""

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

__all__ = [
    "AgentError",
    "BusyError",
    "CircuitOpenError",
    "CommandError",
    "ConfigError",
    "DependencyError",
    "DependencyFailedError",
    "DependencyTimeoutError",
    "IllegalStateError",
    "IllegalTransitionError",
    "LeaseLostError",
    "MailboxFullError",
    "NetraError",
    "ReservedEventError",
    "ResumeBeyondHeadError",
    "RunFailedError",
    "RunFencedError",
    "RuntimeClosedError",
    "SchemaVersionError",
    "SlowConsumerError",
    "StoreError",
    "SubscriptionClosedError",
    "TooLargeError",
    "ToolError",
    "UnknownAgentError",
    "UnknownRunError",
]
