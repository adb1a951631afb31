"""OpenTelemetry spans of runs, attempts, tool calls, model calls and group commits (optional).

Off unless ``RuntimeConfig.tracing`` turns it on: then (and only then) ``opentelemetry`` is
imported, and a :class:`Tracing` is shared by the runtime's sessions. Off, every hook is one
``is not None`` test.

The spans:

* ``netra.run`` — from the run's admission to its terminal state. Its parent is the trace context
  the command carried (``trace_context``, a W3C ``traceparent`` carrier), else it is a root span.
* ``netra.attempt`` — a child of its run: from ``agent_started`` to its rollback or the run's end.
* ``netra.tool`` — a child of its attempt, one per ``ctx.tool`` call (replayed ones too).
* ``netra.model`` — a child of its attempt, one per model call of the LLM agent.
* ``netra.group_commit`` — a root span per transaction of the store's writer.

Every span is started with an explicit parent context, never from the ambient one:
OpenTelemetry's context lives in contextvars, which trio copies when it spawns a task, so the
ambient span of a supervisor or agent task would be whatever its spawner had.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import outcome

from ._core._lifecycle import AgentStarted, Plan, Rollback
from ._exceptions import ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

#: The instrumentation scope of every span.
SCOPE = "netra_actors"

#: The W3C trace context headers a command may carry (``trace_context``).
TRACE_HEADERS = ("traceparent", "tracestate")


def trace_carrier(header: Callable[[str], str | None]) -> dict[str, str] | None:
    """A request's trace context for ``say``/``start_run``, from its header getter (e.g.
    ``request.header``); values longer than 512 characters are left out (W3C's own limit for
    ``tracestate``). None if it has none."""
    carrier = {k: v for k in TRACE_HEADERS if (v := header(k)) and len(v) <= 512}
    return carrier or None


class RunSpans:
    """A live run's open spans (held by the run: dropped with it if it never ends here)."""

    __slots__ = ("attempt", "run")

    def __init__(self, run: Span) -> None:
        self.run = run
        self.attempt: Span | None = None


class TracedRun(Protocol):
    """What :class:`Tracing` reads of a live run (``_runs.Run``)."""

    run_id: str
    agent: str
    spans: RunSpans | None


def tracing_of(setting: object) -> Tracing | None:
    """The runtime's :class:`Tracing` for ``RuntimeConfig.tracing`` (None: off)."""
    if setting is False:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigError("tracing needs OpenTelemetry: pip install 'netra-actors[otel]'") from None

    provider = None if setting is True else setting
    return Tracing(trace.get_tracer(SCOPE, tracer_provider=provider))  # type: ignore[arg-type]


class Tracing:
    """Starts and ends the spans (see the module docstring)."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import context, propagate, trace

        self._tracer = tracer
        self._trace = trace
        self._propagate = propagate
        self._empty: Context = context.Context()

    def _child_of(self, span: Span) -> Context:
        return self._trace.set_span_in_context(span, self._empty)

    def _error(self, span: Span, description: str) -> None:
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, description))

    # -- runs and attempts (the supervisor's task) -------------------------------------------

    def admitted(
        self, user_id: str, run: TracedRun, carrier: Mapping[str, str] | None, *, recovered: bool
    ) -> None:
        """The run's span starts; ``carrier`` (``traceparent``, ``tracestate``) is its parent."""
        parent = self._empty
        if carrier:
            parent = self._propagate.extract(dict(carrier), context=self._empty)
        attributes: dict[str, Any] = {
            "netra.user_id": user_id,
            "netra.run_id": run.run_id,
            "netra.agent": run.agent,
        }
        if recovered:
            attributes["netra.recovered"] = True
        run.spans = RunSpans(self._tracer.start_span("netra.run", parent, attributes=attributes))

    def applied(self, user_id: str, run: TracedRun, plan: Plan) -> None:
        """A plan of the run committed: end the attempt it rolled back, start the attempt it
        began, end the run if it ended."""
        spans = run.spans
        if spans is None:  # recovered on activation: admitted by an earlier process
            self.admitted(user_id, run, None, recovered=True)
            spans = run.spans
            assert spans is not None
        for step in plan.steps:
            if isinstance(step, Rollback) and spans.attempt is not None:
                attempt = spans.attempt
                attempt.set_attribute("netra.outcome", "rolled_back")
                attempt.set_attribute("netra.rollback_reason", step.reason)
                attempt.set_attribute("netra.will_restart", step.will_restart)
                self._error(attempt, step.error or step.reason)
                attempt.end()
                spans.attempt = None
            elif isinstance(step, AgentStarted):
                spans.attempt = self._tracer.start_span(
                    "netra.attempt",
                    self._child_of(spans.run),
                    attributes={"netra.run_id": run.run_id, "netra.attempt": step.attempt},
                )
        state = plan.life.state
        if state.is_terminal:
            if spans.attempt is not None:
                spans.attempt.set_attribute("netra.outcome", state.value)
                spans.attempt.end()
                spans.attempt = None
            spans.run.set_attribute("netra.state", state.value)
            spans.run.set_attribute("netra.attempts", plan.life.attempt)
            if state.value != "completed":
                self._error(spans.run, plan.life.reason or state.value)
            spans.run.end()

    def log_fields(self, run: TracedRun) -> dict[str, str]:
        """``trace_id`` and ``span_id`` of the run's attempt (or run) span, for a log record."""
        spans = run.spans
        if spans is None:
            return {}
        ctx = (spans.attempt or spans.run).get_span_context()
        return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}

    def attempt(self, run: TracedRun) -> AttemptTrace | None:
        """What the attempt's tool and model calls start their spans from."""
        spans = run.spans
        if spans is None or spans.attempt is None:
            return None
        return AttemptTrace(self, self._child_of(spans.attempt))

    # -- group commits (the store's writer: a thread on SQLite) ------------------------------

    def group_commit(self, units: Sequence[Any], ops: Sequence[Any], started: float) -> None:
        """A root span for one transaction of the writer that began at ``started``
        (``time.perf_counter()``) and has just ended."""
        end = time.time_ns()
        begin = end - int((time.perf_counter() - started) * 1e9)
        failed = sum(1 for p in units if isinstance(p.result, outcome.Error))
        span = self._tracer.start_span(
            "netra.group_commit",
            self._empty,
            attributes={
                "netra.batch.units": len(units),
                "netra.batch.users": len({p.user_id for p in units}),
                "netra.batch.events": sum(len(p.unit.events) for p in units),
                "netra.batch.ops": len(ops),
                "netra.batch.failed": failed,
            },
            start_time=begin,
        )
        if failed:
            self._error(span, f"{failed} unit(s) failed")
        span.end(end_time=end)


class AttemptTrace:
    """The spans of one attempt's tool and model calls (any thread may start them)."""

    __slots__ = ("_parent", "_tracing")

    def __init__(self, tracing: Tracing, parent: Context) -> None:
        self._tracing = tracing
        self._parent = parent

    def tool(self, name: str, call_id: str, *, replayed: bool) -> ToolSpan:
        """A started ``netra.tool`` span (a replayed call's ends at once)."""
        span = self._tracing._tracer.start_span(
            "netra.tool",
            self._parent,
            attributes={"netra.tool.name": name, "netra.tool.call_id": call_id,
                        "netra.replayed": replayed},
        )  # fmt: skip
        if replayed:
            span.end()
        return ToolSpan(self._tracing, span)

    @contextlib.contextmanager
    def model(self, model: str, *, replayed: bool) -> Iterator[Span]:
        """A ``netra.model`` span around one model call."""
        span = self._tracing._tracer.start_span(
            "netra.model",
            self._parent,
            attributes={"netra.model": model, "netra.replayed": replayed},
        )
        try:
            yield span
        except BaseException as exc:
            self._tracing._error(span, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            span.end()


class ToolSpan:
    """One tool call's span: :meth:`failed` records its error, :meth:`end` ends it."""

    __slots__ = ("_span", "_tracing")

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self._span = span

    def failed(self, error: str) -> None:
        self._span.set_attribute("netra.tool.error", error)
        self._tracing._error(self._span, error)

    def end(self) -> None:
        self._span.end()


@contextlib.contextmanager
def model_span(trace: AttemptTrace | None, model: str, *, replayed: bool) -> Iterator[Span | None]:
    """``trace.model(...)``, or nothing when tracing is off."""
    if trace is None:
        yield None
        return
    with trace.model(model, replayed=replayed) as span:
        yield span
