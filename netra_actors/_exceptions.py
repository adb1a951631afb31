"""Every exception netra_actors raises on purpose.

This module is pure (standard library only) so that the sans-I/O core can use it.

The tree, and which of these a user catches, is drawn in :mod:`netra_actors.exceptions`: the
public face of this module.

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


class BusyError(CommandError):
    """The user already has a live (or queued) run and the command said ``if_busy="reject"``."""

    code = "busy"


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


class LeaseLostError(StoreError):
    """A fenced unit of work did not commit: another node took the user's lease over (or this
    node re-took it with a newer epoch). Nothing of the unit is visible; stop acting as the
    user's owner."""

    def __init__(self, user_id: str, epoch: int) -> None:
        super().__init__(
            f"this node no longer owns user {user_id!r}'s session (lease epoch {epoch})"
        )
        self.user_id = user_id
        self.epoch = epoch


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


class DependencyError(AgentError):
    """A call to a dependency (a tool or a model API) under the runtime's retry and circuit
    breaker policy (``RuntimeConfig.dependencies``) failed. ``dependency`` is its name."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(message)
        self.dependency = dependency


class DependencyFailedError(DependencyError):
    """Every attempt the call was allowed failed (or its error was not retryable).

    ``attempts`` is the number of attempts made (``>= 1``); ``last_error`` is the last attempt's
    exception (also ``__cause__``): the tool's own error, or a :class:`DependencyTimeoutError`.
    """

    def __init__(self, dependency: str, attempts: int, last_error: BaseException) -> None:
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        super().__init__(
            dependency,
            f"{dependency!r} failed after {tries}: {type(last_error).__name__}: {last_error}",
        )
        self.attempts = attempts
        self.last_error = last_error


class CircuitOpenError(DependencyError):
    """The dependency's circuit breaker is open: the call failed fast, without trying.

    ``retry_after`` is the seconds until the breaker lets a call through again (a probe);
    ``failures`` the failures that opened it. A breaker that opens during a call's retries ends
    the call with this error too: ``attempts`` counts the attempts made before (``0`` if the
    first was refused) and ``last_error`` is the last attempt's exception (or ``None``).
    """

    def __init__(
        self,
        dependency: str,
        retry_after: float,
        *,
        failures: int = 0,
        attempts: int = 0,
        last_error: BaseException | None = None,
    ) -> None:
        after = f" after {failures} failure{'' if failures == 1 else 's'}" if failures else ""
        super().__init__(
            dependency,
            f"the circuit breaker for {dependency!r} is open{after}; retry in {retry_after:.1f} s",
        )
        self.retry_after = retry_after
        self.failures = failures
        self.attempts = attempts
        self.last_error = last_error


class DependencyTimeoutError(DependencyError):
    """One attempt of a call ran past ``RetryPolicy.timeout`` seconds (it counts as a failed
    attempt; after the last one it is the ``last_error`` of :class:`DependencyFailedError`)."""

    def __init__(self, dependency: str, timeout: float) -> None:
        super().__init__(dependency, f"{dependency!r} did not answer within {timeout:g} s")
        self.timeout = timeout
