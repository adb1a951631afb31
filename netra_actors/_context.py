"""The context an async agent acts through: :class:`AgentContext`, one per attempt of a run.

An agent never touches a socket or the database. Everything it does goes through its context
to its user's supervisor, which stages it in the run's unit of work:

* ``emit`` / ``think`` / ``say`` stage events (held here, in the attempt's :class:`Staging`);
* ``stage`` stages a row of the developer's own models (or a Core statement);
* ``checkpoint`` commits the unit: from then on its events are delivered and its rows visible;
* ``message`` streams an assistant message (:mod:`._message_stream`);
* ``tool`` records a tool call (:mod:`._toolcall`: ``tool_executing`` and ``tool_completed``,
  each committed, or a replay of what an earlier attempt committed);
* ``ask`` waits for the run's next input (committing what was staged before its question,
  with it), ``sleep`` sleeps durably: the attempt stops there and the run waits as a row; the
  answer or the due time starts a new attempt that replays;
* ``receive`` waits for the run's messages, heartbeating meanwhile;
* returning from :meth:`Agent.run` commits the final unit with ``agent_completed``.

Every attempt replays its run's journal (:mod:`._core._journal`): what earlier attempts
committed is not committed again (:mod:`._staging`). A crash rolls back whatever was staged
since the last checkpoint. A threaded agent's context (:mod:`._threaded_context`) hands its
operations to this one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import trio

from ._conversation import ClientTool, ConversationMessage, run_client_tools
from ._core._journal import Item, JournalCursor
from ._exceptions import RunFencedError
from ._idempotency import keyed_call
from ._journal_events import SLEEPING, ModelStep, ask_key, sleep_key
from ._message_stream import MessageStream
from ._messages import Ask, Checkpoint, Heartbeat, Reply, Sleep, Write
from ._resilience import Resilience
from ._staging import Staging, encoded_event
from ._toolcall import ToolCalls
from ._values import JSON, StagedEvent, dumps, loads

T = TypeVar("T")


class InTask(Protocol):
    """The supervisor's work an async agent may do in its own task while its supervisor is
    parked (``_checkpoint.InTask``): None/False when the message must be sent instead."""

    def checkpoint(
        self,
        run_id: str,
        attempt: int,
        beat: bool,
        events: list[StagedEvent],
        rows: list[tuple[Any, Any]],
        model: ModelStep | None,
        final_result: Any,
        is_final: bool,
        closes: tuple[str, ...],
    ) -> Awaitable[int | None]: ...

    def beat(self, run_id: str, attempt: int, now: float) -> bool: ...


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
        inbox: Callable[[], trio.MemoryReceiveChannel[JSON]],
        max_staged: int,
        beat_every: float = 1.0,
        max_event_bytes: int | None = None,
        max_message_chars: int = 256 * 1024,
        resilience: Resilience | None = None,
        journal: tuple[Item, ...] = (),
        thread: str = "main",
        conversation: Callable[[], Awaitable[tuple[ConversationMessage, ...]]] | None = None,
        in_task: InTask | None = None,
    ) -> None:
        self.user_id = user_id
        """The user this run belongs to."""
        self.run_id = run_id
        """The run's id."""
        self.agent = agent
        """The agent's name."""
        self.attempt = attempt
        """1 for the first attempt; each supervised restart adds one."""
        self.thread = thread
        """The thread the run belongs to."""
        self._conversation = conversation
        self._sup = supervisor
        self._in_task = in_task
        """The session's way to take a checkpoint in this task when the supervisor is parked
        (``_checkpoint.py``; None for a threaded agent's operations)."""
        self._inbox = inbox
        """The run's inbox (made when first asked for: most runs never receive)."""
        self.max_staged = max_staged
        self.max_event_bytes = max_event_bytes
        self._cursor = JournalCursor(run_id, journal)
        """This attempt's walk through the run's journal, as it was when the attempt started."""
        self._staging = self.new_staging()
        self.max_message_chars = max_message_chars
        self._resilience = resilience or Resilience()
        self.beat_every = beat_every
        """Seconds between the heartbeats that staging operations send on their own."""
        self._now = trio.lowlevel.current_clock().current_time
        self._last_beat = self._now()
        self.streaming = 0
        """Messages this attempt is streaming now (their text lives only here until they
        commit)."""
        self._model: ModelStep | None = None
        """A model call that rides the next commit (the one of its streamed answer)."""
        self._tools = ToolCalls(run_id, attempt, self._cursor)
        """This attempt's tool calls (shared with a threaded agent's context)."""
        self._ops = 0
        self._fenced = False
        self._waits: set[trio.CancelScope] = set()

    def new_staging(self) -> Staging:
        """A staging area of this attempt (the threaded context has its own), replaying."""
        return Staging(
            self.run_id, self.max_staged, self.max_event_bytes, self._cursor, self.attempt
        )

    @property
    def replaying(self) -> bool:
        """True while this attempt replays what earlier attempts of the run committed."""
        return not self._cursor.stopped

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
        """After a staging operation: what :meth:`_due` says, if anything."""
        due = self._due()
        if due is not None:
            await due

    def _due(self) -> Awaitable[None] | None:
        """After a staging operation: a heartbeat if one is due, else every 64 operations a
        point to yield at, else None (the common case: no coroutine is made).

        Staging only appends to this context's unit, so it does not yield to the scheduler
        every time: it yields every 64 operations, so that an agent staging in a tight loop
        stays fair to everyone else and notices cancellation (what it staged meanwhile is
        discarded with the attempt).
        """
        if self._now() - self._last_beat >= self.beat_every:
            return self.heartbeat()
        self._ops += 1
        if self._ops & 63 == 0:
            return trio.lowlevel.checkpoint()  # noqa: ASYNC105 - awaited by the caller
        return None

    async def conversation(self) -> tuple[ConversationMessage, ...]:
        """The committed conversation of the run's thread, up to the run's start, oldest first.

        User and assistant messages and tool calls with their results
        (:class:`~netra_actors.ConversationMessage`), the run's own user message included (for a
        ``say``). Read from the store once per run: every attempt of the run gets the same
        tuple (see ``docs/agents.md``, "Reading the conversation").
        """
        self._check()
        if self._conversation is None:
            return ()
        return await self._conversation()

    async def client_tools(self) -> tuple[ClientTool, ...]:
        """The tools the run's client offered (an AG-UI request's ``RunAgentInput.tools``,
        ``say(client_tools=…)``): those of the run's own user message, the same in every
        attempt (read with :meth:`conversation`). Empty when it offered none. Call one with
        :meth:`client_tool`."""
        return run_client_tools(await self.conversation(), self.run_id)

    async def emit(self, event: str, data: Mapping[str, JSON] | None = None) -> None:
        """Stage a custom event. It is delivered after the next checkpoint commits."""
        self._check()
        self._staging.emit(event, data)
        await self._tick()

    async def think(self, text: str) -> None:
        """Stage an ``agent_thinking`` event."""
        if self._fenced:
            self._check()
        self._staging.think(text if type(text) is str else str(text))
        due = self._due()  # not ``_tick``: the hottest path of all makes no coroutine per event
        if due is not None:
            await due

    async def say(self, text: str) -> None:
        """Stage an assistant ``message`` event (whole; to stream one, see :meth:`message`)."""
        self._check()
        self._staging.say(str(text))
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
        ``RuntimeConfig.max_message_chars`` characters. While the attempt replays, a message
        that an earlier attempt committed streams nothing and commits nothing again.
        """
        self._check()
        return MessageStream(self, self.max_message_chars, replaying=self._cursor.next_is_event())

    async def _write(self, message_id: str, text: str) -> None:
        await self._send(Write(self.run_id, self.attempt, message_id, text))

    async def _commit_message(self, message_id: str, text: str) -> int:
        self._check()
        self._staging.say(text, message_id)
        if not self._staging and self._model is None and self._cursor.divergence is None:
            return -1  # replayed: committed by an earlier attempt
        events, rows = self._staging.take()
        return await self._commit_staged(events, rows, closes=(message_id,))

    async def ask(self, prompt: str, *, schema: JSON = None) -> JSON:
        """Ask the user and wait for the answer (a ``send_input`` of the run).

        Commits what was staged before it, then ``input_requested`` (``prompt``, and ``schema``
        if given), as one unit, and returns the ``input`` of the next committed ``run_input``.
        Until the answer comes the run waits as a row: this attempt stops here (nothing of it
        stays in memory), and the answer starts a new attempt that replays up to here and gets
        it. A question the journal has is not asked again: its recorded answer is returned, or
        the attempt waits for it. An answer the run received already (sent early) is returned
        at once, after committing what was staged.
        """
        self._check()
        return await self._ask(prompt, schema, self._staging)

    async def client_tool(self, name: str, args: Mapping[str, JSON] | None = None) -> JSON:
        """Call a tool of the client (an AG-UI frontend tool) and wait for its result.

        A question like :meth:`ask` (``input_requested`` with ``client_tool``: ``name`` and
        ``args``): an AG-UI client sees a tool call, runs it and answers with a ``tool``
        message, whose ``content`` (a string, as the client sent it) this returns. Any
        ``send_input`` of the run answers it too.
        """
        self._check()
        return await self._ask(f"the client's tool {name}", None, self._staging, name, args)

    async def _ask(
        self,
        prompt: str,
        schema: JSON,
        staging: Staging,
        tool: str | None = None,
        args: Mapping[str, JSON] | None = None,
    ) -> JSON:
        """Ask (or call the client's ``tool``), committing what ``staging`` holds (staged
        before the question) in the same unit, first."""
        data: dict[str, JSON] = {"prompt": str(prompt)}
        if schema is not None:
            data["schema"] = schema
        if tool is not None:
            data["client_tool"] = {"name": str(tool), "args": dict(args or {})}
        data_json = dumps(data)
        replayed = self._cursor.ask(ask_key(data_json))
        if self._model is not None:  # placed in the journal by a checkpoint of its own, first
            await self._commit_staged(*staging.take())
        events, rows = staging.take()  # with a divergence to record, if any, first
        reply: Reply[JSON] = Reply()
        cut_at = self._cursor.ask_at()
        hold = self.streaming > 0
        ask = Ask(self.run_id, self.attempt, data_json, reply, events, rows, replayed, cut_at, hold)
        await self._send(ask)
        return await self._wait_beating(reply.wait)

    async def _flush(self, staging: Staging) -> None:
        """Commit what ``staging`` holds (and a divergence waiting to be recorded), if any."""
        if staging or self._cursor.divergence is not None:
            events, rows = staging.take()
            await self._commit_staged(events, rows)

    async def sleep(self, seconds: float) -> None:
        """Sleep durably for ``seconds``: the run commits ``sleeping`` {seconds, until} and
        waits as a row (this attempt stops here; nothing stays in memory), across restarts,
        and wakes at ``until`` (± 1 s) as a new attempt that replays up to here and goes on.
        A sleep the journal has keeps its recorded ``until`` (it returns at once if that has
        passed). ``seconds <= 0`` returns at once and records nothing."""
        seconds = float(seconds)
        if not math.isfinite(seconds):
            raise ValueError(f"seconds must be a finite number, got {seconds!r}")
        self._check()
        if seconds <= 0:
            return
        events, rows, until = self._sleep_staged(self._staging, seconds)
        if until is None:
            return
        reply: Reply[None] = Reply()
        await self._send(Sleep(self.run_id, self.attempt, until, events, rows, reply))
        await self._wait_beating(reply.wait)

    def _sleep_staged(
        self, staging: Staging, seconds: float
    ) -> tuple[list[StagedEvent], list[tuple[Any, Any]], float | None]:
        """What a sleep commits, and until when (None: it is over already)."""
        recorded = self._cursor.sleep(sleep_key(seconds)) if self.replaying else None
        if recorded is not None:
            until = float(loads(recorded))
            if until <= time.time():
                return [], [], None
        else:
            until = time.time() + seconds
            body = f'{{"seconds":{dumps(seconds)},"until":{dumps(until)}}}'
            staging.add_event(encoded_event(self.run_id, SLEEPING, body, self.max_event_bytes))
        events, rows = staging.take()
        return events, rows, until

    async def receive(self) -> JSON:
        """The next message sent to this run (``Runtime.send_to_run``), waiting if none.

        Waiting here is not a sign of trouble: it heartbeats while it waits, so only the run's
        deadline limits how long a run may wait for its next message.
        """
        self._check()
        try:
            return await self._wait_beating(self._inbox().receive)
        except trio.EndOfChannel:
            raise RunFencedError("the run's inbox is closed") from None

    async def _wait_beating(self, wait: Callable[[], Awaitable[T]]) -> T:
        """``await wait()``, heartbeating meanwhile; the attempt's end stops the wait."""
        with trio.CancelScope() as scope:
            self._waits.add(scope)
            try:
                while True:
                    with trio.move_on_after(self.beat_every):
                        return await wait()
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
        now = self._last_beat = self._now()
        in_task = self._in_task
        if (
            in_task is not None
            and not self._fenced
            and in_task.beat(self.run_id, self.attempt, now)
        ):
            await trio.lowlevel.checkpoint()
            return
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
    ) -> int:
        model, self._model = self._model, None
        now = self._now()
        beat = now - self._last_beat >= self.beat_every  # a checkpoint is a sign of life too
        if beat:
            self._last_beat = now
        in_task = self._in_task
        if in_task is not None:  # one hop: the supervisor's work, here, if it is parked
            self._check()
            await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled attempt commits nothing
            head = await in_task.checkpoint(
                self.run_id, self.attempt, beat, events, rows, model, final, is_final, closes
            )
            if head is not None:
                return head
        reply: Reply[int] = Reply()
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
                model=model,
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

        The call is a journaled *step*: in a new attempt, a call the journal has at this point
        returns the result an earlier attempt committed — without calling ``fn`` and without
        committing anything — if it succeeded with the same name and arguments; one that was
        begun and not finished runs again under its ``call_id`` (only its ``tool_completed`` is
        committed); one that failed runs again as a new call. (What was staged before it still
        commits, as before any tool call.) A different call is a divergence:
        ``tool_replay_diverged`` is committed and nothing after it is replayed. ``replay=False`` (a reserved keyword: no tool argument can
        be called ``replay``) always calls ``fn`` and takes no step; so does a call made while
        another one of this attempt is in flight. ``fn`` runs with
        :func:`~netra_actors.idempotency_key` set (and gets it as ``idempotency_key=`` if it
        has a parameter of that name).
        """
        self._check()
        call = self._tools.begin(self._staging, name, args, replay)
        if call.replayed:  # no tool events; what is staged commits
            if self._staging:
                await self.checkpoint()
            else:
                await self._tick()
            return call.replay_result()
        try:
            call.executing()
            await self._flush(self._staging)
            try:
                result_json, attempts = await self._resilience.call(
                    name, keyed_call(fn, call.key, args), args
                )
            except (trio.Cancelled, RunFencedError):
                raise
            except Exception as exc:
                self._check()
                error = call.failed(exc)
                await self._flush(self._staging)
                raise error from exc
            self._check()
            call.completed(result_json, attempts)
            await self._flush(self._staging)
            return loads(result_json)
        finally:
            call.end()

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
