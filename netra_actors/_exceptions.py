"""Every exception netra_actors raises on purpose.

This module is pure (standard library only) so that the sans-I/O core can use it.

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
    │   └── MailboxFullError        the user's mailbox is full (backpressure) (rate_limited)
    ├── SubscriptionClosedError     a socket mailbox ended; ``reason`` says why
    │   └── SlowConsumerError       it fell too far behind (resume from the store)
    ├── IllegalTransitionError      the execution state machine refused a transition
    ├── StoreError                  the database failed under us (not your input)
    │   └── SchemaVersionError      the database schema is newer than this code
    ├── AgentError                  raised *inside agent code* by the context object
    │   ├── ToolError               a tool call failed (it was recorded as ``tool_completed``)
    │   ├── RunFailedError          raise it to end the run ``failed`` now (reason ``error``)
    │   └── RunFencedError          this attempt is over (cancelled, timed out, dead, restarted);
    │                               anything it still emits is discarded
    └── ReservedEventError          an agent tried to emit an event name the runtime owns

"You broke it" (``CommandError``, ``IllegalTransitionError``, ``ReservedEventError``,
``ConfigError``) is kept apart from "it broke under you" (``StoreError``).
"""

from __future__ import annotations


class NetraError(Exception):
    """Base class of every exception netra_actors raises on purpose."""


class ConfigError(NetraError, ValueError):
    """A configuration value is invalid. Raised when the config object is built."""


class RuntimeClosedError(NetraError):
    """The runtime (or a handle to it) was used after it was closed."""


class CommandError(NetraError):
    """A user's command was refused. ``code`` is the protocol error code."""

    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownAgentError(CommandError):
    """No agent is registered under that name."""

    code = "unknown_agent"


class UnknownRunError(CommandError):
    """No such run for this user. Another user's run gets the same error: existence is secret."""

    code = "unknown_run"


class IllegalStateError(CommandError):
    """The run's current state does not allow the command (e.g. cancelling a finished run)."""

    code = "illegal_state"


class ResumeBeyondHeadError(CommandError):
    """``resume_from`` is greater than the user's head ``seq``: the client holds events the
    server never committed (e.g. a different database). Never silently clamped."""

    code = "bad_request"


class TooLargeError(CommandError):
    """A value is larger than its limit (``RuntimeConfig.max_event_bytes`` for run inputs)."""

    code = "too_large"


class MailboxFullError(CommandError):
    """The user's supervisor mailbox is full; the caller should back off."""

    code = "rate_limited"


class SubscriptionClosedError(NetraError):
    """A subscription (socket mailbox) ended.

    ``reason`` is ``closed`` (you closed it), ``shutdown`` (the runtime is stopping),
    ``session_failed`` (the user's supervisor crashed; resume) or ``slow`` (see subclass).
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"subscription closed: {reason}")
        self.reason = reason


class SlowConsumerError(SubscriptionClosedError):
    """The subscriber fell more than its buffer behind; reconnect with ``resume_from``."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__("slow", message or "subscriber fell too far behind; resume from the store")


class IllegalTransitionError(NetraError):
    """The execution state machine refused a transition; its state did not change."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"illegal run transition {current} -> {target}")
        self.current = current
        self.target = target


class StoreError(NetraError):
    """The database failed (locked past the busy timeout, constraint violation, disconnect)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer netra_actors; upgrade the code, not the data."""


class AgentError(NetraError):
    """Raised inside agent code by the agent context."""


class ToolError(AgentError):
    """A tool call raised. It was recorded as ``tool_completed`` with ``error``."""

    def __init__(self, tool: str, call_id: str, error: str) -> None:
        super().__init__(f"tool {tool!r} (call {call_id}) failed: {error}")
        self.tool = tool
        self.call_id = call_id
        self.error = error


class RunFailedError(AgentError):
    """Raise it from agent code to fail the run on purpose: no restart.

    The unit of work is rolled back with reason ``error`` (not ``crash``) and the run ends
    ``failed``. Use it for failures a retry cannot fix (bad input, a refused request).
    """


class RunFencedError(AgentError):
    """This attempt of the run is over; nothing it does reaches the store or a socket."""


class ReservedEventError(NetraError, ValueError):
    """An agent tried to emit an event whose name the runtime owns (``run_state`` etc.)."""
