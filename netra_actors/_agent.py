"""Agents: the classes developers write, their registry, and the context they act through.

An agent never touches a socket or the database. Everything it does goes through its
:class:`AgentContext` to its user's supervisor, which stages it in the run's unit of work:

* ``emit`` / ``think`` / ``say`` stage events;
* ``stage`` stages a row of the developer's own models (or a Core statement);
* ``checkpoint`` commits the unit: from then on its events are delivered and its rows visible;
* ``tool`` records a tool call (``tool_executing`` and ``tool_completed``, each committed);
* returning from :meth:`Agent.run` commits the final unit with ``agent_completed``.

A crash rolls back whatever was staged since the last checkpoint.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import orjson
import trio

from ._core import LivenessPolicy, RestartPolicy
from ._core._journal import JournalCursor, JournalEntry, Outcome, Step
from ._exceptions import (
    AgentError,
    CircuitOpenError,
    ConfigError,
    DependencyFailedError,
    ReservedEventError,
    RunFencedError,
    ToolError,
)
from ._ids import new_message_id
from ._messages import Ask, Checkpoint, Heartbeat, Reply, Write
from ._resilience import Resilience
from ._store import check_stageable
from ._values import JSON, RESERVED_EVENTS, StagedEvent, dumps, loads

T = TypeVar("T")

_new = tuple.__new__
"""Builds a named tuple without its Python-level ``__new__`` (the same value, cheaper)."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


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


class Agent(AgentBase):
    """Base class of async agents (they run as trio tasks).

    Subclass it, set ``name`` and implement :meth:`run`::

        class Echo(Agent):
            name = "echo"

            async def run(self, ctx: AgentContext, input: JSON) -> JSON:
                await ctx.think("echoing")
                return input

    A fresh instance is created for every attempt of a run.
    """

    async def run(self, ctx: AgentContext, input: JSON) -> JSON:
        """Do the run's work. The return value becomes ``agent_completed``'s ``result``."""
        raise NotImplementedError


class AgentRegistry:
    """The agents a runtime knows, by name. The first one is the default unless named."""

    def __init__(self, agents: Iterable[type[AgentBase]], *, default: str | None = None) -> None:
        self._agents: dict[str, type[AgentBase]] = {}
        for cls in agents:
            if not (isinstance(cls, type) and issubclass(cls, AgentBase)):
                raise ConfigError(f"{cls!r} is not an Agent or ThreadedAgent subclass")
            if not _NAME.match(cls.name or ""):
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


_checked_names: set[str] = set()
"""Event names that passed the name check (a cache: at most 4,096 names are kept)."""


def check_event_name(event: str, *, internal: bool = False) -> None:
    """Raise unless agents may emit an event called ``event``."""
    if event not in _checked_names:
        if not isinstance(event, str) or not _NAME.match(event):
            raise ValueError(f"event names match [a-z][a-z0-9_]* (<= 64 chars), got {event!r}")
        if event not in RESERVED_EVENTS and len(_checked_names) < 4096:
            _checked_names.add(event)
    if not internal and event in RESERVED_EVENTS:
        raise ReservedEventError(f"{event!r} is emitted by the runtime, not by agent code")


def stage_event(
    run_id: str,
    event: str,
    data: Mapping[str, JSON] | None,
    *,
    internal: bool = False,
    max_bytes: int | None = None,
) -> StagedEvent:
    """Validate and encode an event an agent wants to emit (encoded once, here)."""
    check_event_name(event, internal=internal)
    if data is None:
        encoded = "{}"
    elif type(data) is not dict and not isinstance(data, Mapping):
        raise TypeError(f"event data must be a mapping (a JSON object), got {type(data).__name__}")
    else:
        try:
            encoded = dumps(data)
        except TypeError as exc:
            raise TypeError(f"event {event!r} data is not JSON-encodable: {exc}") from None
    return _new(StagedEvent, (run_id, event, check_size(event, encoded, max_bytes)))


def text_event(
    run_id: str, event: str, fields: str, text: str, max_bytes: int | None
) -> StagedEvent:
    """A runtime-shaped event ``{<fields>"text": text}`` (``think``, ``say``), encoded directly."""
    encoded = "{" + fields + '"text":' + dumps(text) + "}"
    return _new(StagedEvent, (run_id, event, check_size(event, encoded, max_bytes)))


def assistant_message(
    run_id: str, text: str, max_bytes: int | None, *, message_id: str | None = None
) -> StagedEvent:
    """An assistant ``message`` event (with its ``message_id``: a new one unless given)."""
    mid = message_id or new_message_id()
    return text_event(
        run_id, "message", f'"role":"assistant","message_id":"{mid}",', text, max_bytes
    )


def check_size(event: str, encoded: str, max_bytes: int | None) -> str:
    """``encoded``, unless it is larger than ``max_bytes``."""
    if max_bytes is not None and len(encoded) > max_bytes:
        raise ValueError(
            f"event {event!r} data is {len(encoded)} bytes of JSON, more than the limit of "
            f"{max_bytes} (RuntimeConfig.max_event_bytes)"
        )
    return encoded


class Staging:
    """The work an attempt staged since its last checkpoint, held by the agent's side.

    Staged work is invisible until a checkpoint commits it, so it does not need to travel to
    the supervisor one item at a time: it goes with the checkpoint, as one message. A crash
    discards it with the context, exactly as a rollback of the unit would.
    """

    __slots__ = ("events", "limit", "rows")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.events: list[StagedEvent] = []
        self.rows: list[tuple[Any, Any]] = []

    def _room(self) -> None:
        if len(self.events) + len(self.rows) >= self.limit:
            raise AgentError(
                f"more than {self.limit} items staged without a checkpoint: "
                "call checkpoint() more often"
            )

    def add_event(self, staged: StagedEvent) -> None:
        events = self.events
        if len(events) >= self.limit - len(self.rows):
            self._room()
        events.append(staged)

    def add_row(self, row: Any, params: Any) -> None:
        check_stageable(row)
        self._room()
        self.rows.append((row, params))

    def take(self) -> tuple[list[StagedEvent], list[tuple[Any, Any]]]:
        events, rows = self.events, self.rows
        self.events, self.rows = [], []
        return events, rows


def tool_call_id(run_id: str, attempt: int, number: int) -> str:
    """The ``call_id`` of an attempt's ``number``-th tool call."""
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


_KEY: contextvars.ContextVar[str] = contextvars.ContextVar("netra_actors.idempotency_key")
"""The idempotency key of the tool call whose function runs now (in this task or thread)."""


def idempotency_key() -> str:
    """The idempotency key of the tool call whose function is running (inside ``ctx.tool``).

    For a journaled call it is ``"<run_id>:<step>:<hash of the name and arguments>"``: the same
    in every attempt of the run that makes the same call at the same step, so an external API
    that deduplicates on it (an ``Idempotency-Key`` header) performs the step once even when a
    crash inside the call makes the restarted attempt run it again. For a call that is not
    journaled (``replay=False``, or made while another call of the attempt is in flight) it is
    the call's ``call_id``. A tool function may also take it as a keyword parameter named
    ``idempotency_key``. Raises :class:`~netra_actors.AgentError` outside a tool call.
    """
    try:
        return _KEY.get()
    except LookupError:
        raise AgentError(
            "idempotency_key() is only available while a tool's function runs (in ctx.tool)"
        ) from None


def canonical_json(value: JSON) -> str:
    """``value`` as canonical JSON text (sorted keys): equal values, equal text."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


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


_accepts_key: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def accepts_idempotency_key(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` has a parameter ``idempotency_key`` that can be passed by keyword."""
    with contextlib.suppress(KeyError, TypeError):
        return _accepts_key[fn]
    try:
        param = inspect.signature(fn).parameters.get("idempotency_key")
    except (TypeError, ValueError):
        param = None
    found = param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    with contextlib.suppress(TypeError):  # not weakly referenceable: not cached
        _accepts_key[fn] = found
    return found


def _passes_key(fn: Callable[..., Any], args: Mapping[str, JSON]) -> bool:
    return "idempotency_key" not in args and accepts_idempotency_key(fn)


def keyed_call(fn: Callable[..., Any], key: str, args: Mapping[str, JSON]) -> Callable[..., Any]:
    """``fn`` as a tool runs it from trio: under its key, returning its result's JSON text (a
    result that is not JSON is a failed attempt)."""
    pass_key = _passes_key(fn, args)

    async def call(**kwargs: Any) -> str:
        token = _KEY.set(key)
        try:
            result = fn(**kwargs, idempotency_key=key) if pass_key else fn(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        finally:
            _KEY.reset(token)
        return dumps(result)

    return call


def keyed_call_sync(
    fn: Callable[..., Any], key: str, args: Mapping[str, JSON]
) -> Callable[..., str]:
    """:func:`keyed_call` for a thread (a threaded agent's tool)."""
    pass_key = _passes_key(fn, args)

    def call(**kwargs: Any) -> str:
        token = _KEY.set(key)
        try:
            result = fn(**kwargs, idempotency_key=key) if pass_key else fn(**kwargs)
        finally:
            _KEY.reset(token)
        return dumps(result)

    return call


def tool_executing(
    run_id: str, name: str, args_json: str, call_id: str, max_bytes: int | None
) -> StagedEvent:
    """``tool_executing`` {tool, args, call_id}, encoded from the canonical arguments."""
    encoded = f'{{"tool":{dumps(name)},"args":{args_json},"call_id":{dumps(call_id)}}}'
    return _new(
        StagedEvent, (run_id, "tool_executing", check_size("tool_executing", encoded, max_bytes))
    )


def tool_completed(
    run_id: str,
    name: str,
    call_id: str,
    attempts: int,
    max_bytes: int | None,
    *,
    result_json: str | None = None,
    error: str | None = None,
) -> StagedEvent:
    """``tool_completed`` {tool, call_id, result | error, attempts}."""
    outcome = f'"result":{result_json}' if error is None else f'"error":{dumps(error)}'
    encoded = f'{{"tool":{dumps(name)},"call_id":{dumps(call_id)},{outcome},"attempts":{attempts}}}'
    return _new(
        StagedEvent, (run_id, "tool_completed", check_size("tool_completed", encoded, max_bytes))
    )


def tool_replay_diverged(
    run_id: str, step: Step, name: str, args_json: str, attempt: int, max_bytes: int | None
) -> StagedEvent:
    """``tool_replay_diverged`` {step, expected: {tool, args}, actual: {tool, args}, attempt}."""
    expected = step.diverged_from
    assert expected is not None
    encoded = (
        f'{{"step":{step.step},"expected":{{"tool":{dumps(expected.name)},'
        f'"args":{expected.args_json}}},"actual":{{"tool":{dumps(name)},"args":{args_json}}},'
        f'"attempt":{attempt}}}'
    )
    event = "tool_replay_diverged"
    return _new(StagedEvent, (run_id, event, check_size(event, encoded, max_bytes)))


def journal_entry(
    step: Step, name: str, args_json: str, outcome: Outcome, value: str = ""
) -> JournalEntry | None:
    """The journal entry a tool call's checkpoint carries (``None``: not journaled)."""
    return None if step.step is None else step.entry(name, args_json, outcome, value)


class AgentContext:
    """What an agent can do. One per attempt; it stops working when the attempt is over."""

    def __init__(
        self,
        *,
        user_id: str,
        run_id: str,
        agent: str,
        attempt: int,
        supervisor: trio.MemorySendChannel[Any],
        inbox: trio.MemoryReceiveChannel[JSON],
        max_staged: int,
        beat_every: float = 1.0,
        max_event_bytes: int | None = None,
        max_message_chars: int = 256 * 1024,
        resilience: Resilience | None = None,
        journal: tuple[JournalEntry, ...] = (),
    ) -> None:
        self.user_id = user_id
        """The user this run belongs to."""
        self.run_id = run_id
        """The run's id."""
        self.agent = agent
        """The agent's name."""
        self.attempt = attempt
        """1 for the first attempt; each supervised restart adds one."""
        self._sup = supervisor
        self._inbox = inbox
        self._staging = Staging(max_staged)
        self.max_staged = max_staged
        self.max_event_bytes = max_event_bytes
        self.max_message_chars = max_message_chars
        self._resilience = resilience or Resilience()
        self.beat_every = beat_every
        """Seconds between the heartbeats that staging operations send on their own."""
        self._now = trio.lowlevel.current_clock().current_time
        self._last_beat = self._now()
        self._calls = 0
        self._journal = journal
        """The run's journal as it was when this attempt started (immutable)."""
        self._cursor = JournalCursor(run_id, journal)
        """This attempt's position in it (shared with a threaded agent's context)."""
        self._ops = 0
        self._fenced = False
        self._waits: set[trio.CancelScope] = set()

    @property
    def fenced(self) -> bool:
        """True once this attempt is over (cancelled, timed out, dead, or restarted)."""
        return self._fenced

    def _fence(self) -> None:
        """End this attempt: every further operation raises :class:`RunFencedError`."""
        self._fenced = True
        for scope in self._waits:
            scope.cancel()

    def _check(self) -> None:
        if self._fenced:
            raise RunFencedError("this attempt of the run is over")

    async def _send(self, msg: object) -> None:
        self._check()
        try:
            await self._sup.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise RunFencedError("the user's session has stopped") from None

    async def _tick(self) -> None:
        """After a staging operation: a heartbeat if one is due.

        Staging only appends to this context's unit, so it does not yield to the scheduler
        every time: it yields every 64 operations, so that an agent staging in a tight loop
        stays fair to everyone else and notices cancellation (what it staged meanwhile is
        discarded with the attempt).
        """
        if self._now() - self._last_beat >= self.beat_every:
            await self.heartbeat()
            return
        self._ops += 1
        if self._ops & 63 == 0:
            await trio.lowlevel.checkpoint()

    async def emit(self, event: str, data: Mapping[str, JSON] | None = None) -> None:
        """Stage a custom event. It is delivered after the next checkpoint commits."""
        self._check()
        self._staging.add_event(
            stage_event(self.run_id, event, data, max_bytes=self.max_event_bytes)
        )
        await self._tick()

    async def think(self, text: str) -> None:
        """Stage an ``agent_thinking`` event."""
        self._check()
        self._staging.add_event(
            text_event(self.run_id, "agent_thinking", "", str(text), self.max_event_bytes)
        )
        await self._tick()

    async def say(self, text: str) -> None:
        """Stage an assistant ``message`` event (whole; to stream one, see :meth:`message`)."""
        self._check()
        self._staging.add_event(assistant_message(self.run_id, str(text), self.max_event_bytes))
        await self._tick()

    def message(self) -> MessageStream:
        """Stream an assistant message token by token, then commit it once::

            async with ctx.message() as m:
                async for token in model_stream():
                    await m.write(token)  # sent to the user's sockets at once, not committed

        Each ``write`` reaches the sockets as a provisional ``delta`` right away. Leaving the
        block normally stages the whole text as one ``message`` event and commits it (with
        anything else staged): it supersedes the deltas. If the attempt is rolled back, its
        ``run_rolled_back`` retracts the text that was not committed. A message holds at most
        ``RuntimeConfig.max_message_chars`` characters.
        """
        self._check()
        return MessageStream(self)

    async def _write(self, message_id: str, text: str) -> None:
        await self._send(Write(self.run_id, self.attempt, message_id, text))

    async def _commit_message(self, message_id: str, text: str) -> int:
        self._check()
        self._staging.add_event(
            assistant_message(self.run_id, text, self.max_event_bytes, message_id=message_id)
        )
        events, rows = self._staging.take()
        return await self._commit_staged(events, rows, closes=(message_id,))

    async def ask(self, prompt: str, *, schema: JSON = None) -> JSON:
        """Ask the user and wait for the answer (a ``send_input`` of the run).

        Commits ``input_requested`` (``prompt``, and ``schema`` if given) and returns the
        ``input`` of the next committed ``run_input``. In a restarted attempt it returns the next
        input the run already received, without asking again. The run's deadline applies while
        it waits; waiting is no sign of trouble (it heartbeats).
        """
        data: dict[str, JSON] = {"prompt": str(prompt)}
        if schema is not None:
            data["schema"] = schema
        reply: Reply[JSON] = Reply()
        await self._send(Ask(self.run_id, self.attempt, dumps(data), reply))
        return await self._wait_beating(reply)

    async def _wait_beating(self, reply: Reply[T]) -> T:
        """Wait for ``reply``, heartbeating meanwhile; the attempt's end stops the wait."""
        with trio.CancelScope() as scope:
            self._waits.add(scope)
            try:
                while True:
                    with trio.move_on_after(self.beat_every):
                        return await reply.wait()
                    await self.heartbeat()
            finally:
                self._waits.discard(scope)
        raise RunFencedError("this attempt of the run is over")

    async def stage(self, row: Any, params: Any = None) -> None:
        """Stage a row of your own: an ORM instance or a Core statement (with ``params``).

        It is written in the same transaction as the run's events at the next checkpoint; a
        crash before then discards it. The object is handed over: do not modify it afterwards.
        """
        self._check()
        self._staging.add_row(row, params)
        await self._tick()

    async def heartbeat(self) -> None:
        """Tell the supervisor this attempt is alive.

        Staging operations (emit, think, say, stage) send one too when the last one is more than
        ``beat_every`` seconds old (at most a second, and a quarter of the heartbeat timeout), and
        so do checkpoints and waiting in :meth:`receive`.
        """
        self._last_beat = self._now()
        await self._send(Heartbeat(self.run_id, self.attempt))

    async def checkpoint(self) -> int:
        """Commit everything staged so far. Returns the user's head ``seq`` after the commit.

        If the commit fails, the unit is rolled back, the supervisor records a ``store_error``
        rollback and restarts the run per its policy: this attempt ends here.
        """
        events, rows = self._staging.take()
        return await self._commit_staged(events, rows)

    async def _commit_staged(
        self,
        events: list[StagedEvent],
        rows: list[tuple[Any, Any]],
        *,
        final: JSON = None,
        is_final: bool = False,
        closes: tuple[str, ...] = (),
        journal: JournalEntry | None = None,
    ) -> int:
        reply: Reply[int] = Reply()
        now = self._now()
        beat = now - self._last_beat >= self.beat_every  # a checkpoint is a sign of life too
        if beat:
            self._last_beat = now
        await self._send(
            Checkpoint(
                self.run_id,
                self.attempt,
                reply,
                beat,
                events=events,
                rows=rows,
                final_result=final,
                is_final=is_final,
                closes=closes,
                journal=journal,
            )
        )
        return await reply.wait()

    async def tool(
        self, name: str, fn: Callable[..., Any], /, *, replay: bool = True, **args: JSON
    ) -> JSON:
        """Run a tool call: ``fn(**args)`` (sync or async), recorded as two committed events.

        ``tool_executing`` (with ``args`` and a ``call_id``) is committed before the call and
        ``tool_completed`` (with ``result``, or ``error``, and ``attempts``) after it. The call
        follows the retry and circuit-breaker policy of the dependency named ``name`` in
        ``RuntimeConfig.dependencies`` (none declared: one attempt). If it fails, this raises
        :class:`~netra_actors.ToolError` after recording it (an open breaker fails at once). A
        sync ``fn`` runs on the event loop: it must not block (wrap blocking work in
        ``trio.to_thread.run_sync``). Returns the result as JSON decodes it (a tuple comes back
        as a list).

        The call is a journaled *step*: in a restarted attempt, the k-th journaled call returns
        the result that an earlier attempt committed for step k — without calling ``fn`` and
        without committing anything — if that step succeeded with the same name and arguments.
        (What was staged before it still commits, as before any tool call.) A different call
        at step k is a divergence: ``tool_replay_diverged`` is committed and nothing after it is
        replayed. ``replay=False`` (a reserved keyword: no tool argument can
        be called ``replay``) always calls ``fn`` and takes no step; so does a call made while
        another one of this attempt is in flight. ``fn`` runs with
        :func:`~netra_actors.idempotency_key` set (and gets it as ``idempotency_key=`` if it
        has a parameter of that name).
        """
        self._check()
        args_json = tool_args_json(name, args, replay)
        cursor = self._cursor
        step = cursor.begin(name, args_json, replay=replay)
        if step.replay_json is not None:  # replayed: no tool events; what is staged commits
            staging = self._staging
            if staging.events or staging.rows:
                events, rows = staging.take()
                await self._commit_staged(events, rows)
            else:
                await self._tick()
            return loads(step.replay_json)
        try:
            return await self._tool_call(name, fn, args, args_json, step)
        finally:
            cursor.end()

    async def _tool_call(
        self,
        name: str,
        fn: Callable[..., Any],
        args: Mapping[str, JSON],
        args_json: str,
        step: Step,
    ) -> JSON:
        self._calls += 1
        call_id = tool_call_id(self.run_id, self.attempt, self._calls)
        limit = self.max_event_bytes
        staging = self._staging
        if step.diverged_from is not None:
            staging.add_event(
                tool_replay_diverged(self.run_id, step, name, args_json, self.attempt, limit)
            )
        staging.add_event(tool_executing(self.run_id, name, args_json, call_id, limit))
        events, rows = staging.take()
        started = journal_entry(step, name, args_json, Outcome.STARTED)
        await self._commit_staged(events, rows, journal=started)
        key = step.key or call_id
        try:
            result_json, attempts = await self._resilience.call(
                name, keyed_call(fn, key, args), args
            )
        except (trio.Cancelled, RunFencedError):
            raise
        except Exception as exc:
            error, attempts = tool_failure(exc)
            done = tool_completed(self.run_id, name, call_id, attempts, limit, error=error)
            failed = journal_entry(step, name, args_json, Outcome.ERROR, error)
            await self._tool_record(done, failed)
            raise ToolError(name, call_id, error) from exc
        done = tool_completed(self.run_id, name, call_id, attempts, limit, result_json=result_json)
        await self._tool_record(done, journal_entry(step, name, args_json, Outcome.OK, result_json))
        return loads(result_json)

    async def _tool_record(self, event: StagedEvent, journal: JournalEntry | None) -> None:
        self._check()
        self._staging.add_event(event)
        events, rows = self._staging.take()
        await self._commit_staged(events, rows, journal=journal)

    async def _finish(
        self,
        result: JSON,
        events: list[StagedEvent] | None = None,
        rows: list[tuple[Any, Any]] | None = None,
    ) -> None:
        """Commit the final unit: staged work, ``agent_completed`` and ``completing``."""
        dumps(result)  # the result must be JSON: fail here, inside the attempt
        if events is None or rows is None:
            events, rows = self._staging.take()
        await self._commit_staged(events, rows, final=result, is_final=True)

    async def receive(self) -> JSON:
        """The next message sent to this run (``Runtime.send_to_run``), waiting if none.

        Waiting here is not a sign of trouble: it heartbeats while it waits, so only the run's
        deadline limits how long a run may wait for its next message.
        """
        self._check()
        with trio.CancelScope() as scope:
            self._waits.add(scope)
            try:
                while True:
                    with trio.move_on_after(self.beat_every):
                        return await self._inbox.receive()
                    await self.heartbeat()
            except trio.EndOfChannel:
                raise RunFencedError("the run's inbox is closed") from None
            finally:
                self._waits.discard(scope)
        raise RunFencedError("this attempt of the run is over")


class MessageStream:
    """An assistant message being streamed (see :meth:`AgentContext.message`)."""

    def __init__(self, ctx: AgentContext) -> None:
        self._ctx = ctx
        self.message_id = new_message_id()
        """The ``message_id`` of its deltas and of its committed ``message`` event."""
        self._parts: list[str] = []
        self._length = 0
        self._open = True

    @property
    def text(self) -> str:
        """Everything written so far."""
        return "".join(self._parts)

    async def write(self, text: str) -> None:
        """Send ``text`` to the user's sockets now (provisional until the message commits)."""
        self._ctx._check()
        text = check_write(self._open, self._length, str(text), self._ctx.max_message_chars)
        if text:
            self._parts.append(text)
            self._length += len(text)
            await self._ctx._write(self.message_id, text)

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._open:
            return
        self._open = False
        if exc_type is None:  # an exception leaves it uncommitted: a rollback retracts it
            await self._ctx._commit_message(self.message_id, self.text)


def check_write(is_open: bool, length: int, text: str, max_chars: int) -> str:
    """``text``, if it may still be written to a message of ``length`` characters."""
    if not is_open:
        raise AgentError("this message is already committed: start a new one")
    if length + len(text) > max_chars:
        raise AgentError(
            f"a streamed message holds at most {max_chars} characters "
            "(RuntimeConfig.max_message_chars): commit it and stream the rest as a new one"
        )
    return text
