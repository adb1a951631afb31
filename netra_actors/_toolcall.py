"""The tool call, written once: the steps of ``ctx.tool`` that both kinds of agent drive.

Sans I/O: no trio, no threads, no clock. The async context (:mod:`._context`) drives a call with
``await``, the threaded one (:mod:`._threaded_context`) through its hand-off to trio; a driver
does only the I/O between the steps (two commits and the call itself), in this order:

1. :meth:`ToolCalls.begin` checks and canonically encodes the arguments and asks the attempt's
   journal cursor (:mod:`._core._journal`) what the call is. A **replayed** call
   (:attr:`ToolCall.replayed`) records nothing and calls nothing: the driver commits what was
   staged before it (or heartbeats) and returns :meth:`ToolCall.replay_result`.
2. :meth:`ToolCall.executing` stages ``tool_executing`` (not for a call an earlier attempt
   began and did not finish: it keeps that call's ``call_id``, its start is committed); the
   driver commits it. A divergence (another call than the journal's at this step) is staged
   first by the staging itself.
3. The driver runs the function under :attr:`ToolCall.key` (:mod:`._idempotency`) and the retry
   and breaker policy of the dependency named like the tool (:mod:`._resilience`).
4. :meth:`ToolCall.completed` (a result) or :meth:`ToolCall.failed` (an error) stages
   ``tool_completed``; the driver commits it, then returns the result or raises the
   :class:`~netra_actors.ToolError`. What the events commit is the run's journal
   (``_journal_events.py`` reads them back).
5. :meth:`ToolCall.end`, however the call ended (the cursor counts the calls in flight).

A cancelled or fenced attempt skips steps 4 and 5's commit: its exception passes through.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._core._journal import JournalCursor, Outcome, Step
from ._exceptions import CircuitOpenError, DependencyFailedError, ToolError
from ._journal_events import canonical_json
from ._staging import Staging, encoded_event
from ._tracing import AttemptTrace, ToolSpan
from ._values import JSON, StagedEvent, dumps, loads

__all__ = ["ToolCall", "ToolCalls", "canonical_json", "tool_args_json"]


def tool_args_json(name: str, args: Mapping[str, JSON], replay: object) -> str:
    """The canonical JSON of a tool call's arguments (and a check of ``replay``)."""
    if type(replay) is not bool:
        raise TypeError(
            f"tool {name!r}: replay= is a keyword of ctx.tool (True or False), reserved: it "
            f"cannot be a tool argument, got {replay!r}"
        )
    try:
        return canonical_json(args)
    except TypeError as exc:
        raise TypeError(f"tool {name!r} arguments are not JSON-encodable: {exc}") from None


def tool_call_id(run_id: str, attempt: int, number: int) -> str:
    """The ``call_id`` of an attempt's ``number``-th tool call (replayed calls have none)."""
    return f"{run_id}.{attempt}.{number}"


def tool_error_text(exc: BaseException) -> str:
    """How a tool's exception is recorded in ``tool_completed``."""
    return f"{type(exc).__name__}: {exc}"[:500]


def tool_failure(exc: Exception) -> tuple[str, int]:
    """The ``error`` text and ``attempts`` that ``tool_completed`` records for a failed call."""
    if isinstance(exc, CircuitOpenError):
        return str(exc)[:500], exc.attempts  # failed fast: the breaker's own words
    if isinstance(exc, DependencyFailedError):
        return tool_error_text(exc.last_error), exc.attempts
    return tool_error_text(exc), 1


class ToolCalls:
    """An attempt's tool calls: its walk through the run's journal, and how many it made."""

    __slots__ = ("attempt", "cursor", "made", "run_id", "trace")

    def __init__(self, run_id: str, attempt: int, cursor: JournalCursor) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.cursor = cursor
        """The attempt's place in the journal (the LLM agent's model responses take steps too)."""
        self.made = 0
        """Calls made for real (not replayed): the last one's number in its ``call_id``."""
        self.trace: AttemptTrace | None = None
        """Where the calls' spans start (tracing on only: ``_tracing.py``)."""

    def begin(
        self, staging: Staging, name: str, args: Mapping[str, JSON], replay: bool
    ) -> ToolCall:
        """Step 1: what the call ``name(**args)`` is (it stages into ``staging``)."""
        args_json = tool_args_json(name, args, replay)
        step = self.cursor.step(name, args_json, replay=replay)
        if step.replay_json is not None:
            call = ToolCall(self, staging, name, args_json, step, "")
        elif step.again is not None and step.again.outcome is Outcome.STARTED:
            call = ToolCall(self, staging, name, args_json, step, step.again.call_id)
        else:
            self.made += 1
            call_id = tool_call_id(self.run_id, self.attempt, self.made)
            call = ToolCall(self, staging, name, args_json, step, call_id)
        if self.trace is not None:
            call.span = self.trace.tool(name, call.call_id, replayed=call.replayed)
        return call


class ToolCall:
    """One call of ``ctx.tool``, from :meth:`ToolCalls.begin` to :meth:`end`."""

    __slots__ = ("_calls", "_staging", "args_json", "call_id", "name", "span", "step")

    def __init__(
        self,
        calls: ToolCalls,
        staging: Staging,
        name: str,
        args_json: str,
        step: Step,
        call_id: str,
    ) -> None:
        self._calls = calls
        self._staging = staging
        self.name = name
        self.args_json = args_json
        """The canonical JSON of its arguments."""
        self.step = step
        """What the journal cursor decided."""
        self.call_id = call_id
        """Its ``call_id`` in ``tool_executing`` and ``tool_completed`` (empty when replayed)."""
        self.span: ToolSpan | None = None
        """Its span (tracing on only; a replayed call's has ended)."""

    @property
    def replayed(self) -> bool:
        """True if an earlier attempt's result stands in for the call."""
        return self.step.replay_json is not None

    def replay_result(self) -> JSON:
        """The result an earlier attempt committed for this step."""
        assert self.step.replay_json is not None
        return loads(self.step.replay_json)

    @property
    def key(self) -> str:
        """The idempotency key the function runs under: its step's, or else its ``call_id``."""
        return self.step.key or self.call_id

    def executing(self) -> None:
        """Step 2: stage the call's start (``replaces``: the failed call it runs again)."""
        again = self.step.again
        if again is not None and again.outcome is Outcome.STARTED:
            return  # begun by an earlier attempt: its ``tool_executing`` is committed
        if self.step.step is None:
            extra = ',"replay":false'  # not journaled: every attempt makes it again
        elif again is not None:
            extra = f',"replaces":{dumps(again.call_id)}'
        else:
            extra = ""
        body = (
            f'{{"tool":{dumps(self.name)},"args":{self.args_json},'
            f'"call_id":{dumps(self.call_id)}{extra}}}'
        )
        self._staging.add_event(self._event("tool_executing", body))

    def completed(self, result_json: str, attempts: int) -> None:
        """Step 4, the function returned ``result_json``: stage ``tool_completed``."""
        self._staging.add_event(self._completed(f'"result":{result_json}', attempts))

    def failed(self, exc: Exception) -> ToolError:
        """Step 4, the call failed with ``exc``: stage ``tool_completed`` with its error; the
        error to raise (from ``exc``) once it is committed."""
        error, attempts = tool_failure(exc)
        if self.span is not None:
            self.span.failed(error)
        self._staging.add_event(self._completed(f'"error":{dumps(error)}', attempts))
        return ToolError(self.name, self.call_id, error)

    def end(self) -> None:
        """Step 5: the call is no longer in flight."""
        self._calls.cursor.end()
        if self.span is not None:
            self.span.end()

    def _event(self, event: str, body: str) -> StagedEvent:
        return encoded_event(self._calls.run_id, event, body, self._staging.max_bytes)

    def _completed(self, outcome: str, attempts: int) -> StagedEvent:
        """``tool_completed`` {tool, call_id, result | error, attempts}."""
        body = (
            f'{{"tool":{dumps(self.name)},"call_id":{dumps(self.call_id)},{outcome},'
            f'"attempts":{attempts}}}'
        )
        return self._event("tool_completed", body)
