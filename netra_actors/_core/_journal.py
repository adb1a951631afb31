"""The journal of a run: everything its attempts committed, and how a new attempt replays it.

Pure: no I/O, no clock, no JSON library (what an attempt does arrives as *keys*: text that is
equal exactly when two actions are the same; the shell makes them, ``_journal_events.py``).

* The run's :class:`Journal` is the ordered list of what its attempts committed: emitted events
  (custom events, thinking, assistant messages), **steps** (tool calls and model calls, with
  their outcome), questions (``input_requested``) and durable sleeps. Its owner keeps it while
  the run is live and rebuilds it from the store (the run's events and model calls) when it
  takes the run over; both ways go through the same operations, so they agree.
* A new attempt runs the agent from the top with a :class:`JournalCursor` over a snapshot. Each
  action that matches the next item is **replayed**: an event is not committed again, a step
  returns its recorded result (or runs again: see :class:`Step`), a question is not asked again,
  a sleep keeps its recorded wake-up time. Past the end the attempt runs live. An action that
  does not match is a **divergence**: it is recorded once (an event saying at which position,
  :attr:`JournalCursor.divergence`), the journal is cut there, and the attempt goes on live.
* The idempotency key of a step names the run, the step's number (the k-th step of the run's
  course) and the call (:func:`step_key`), so it is the same in every attempt that makes the
  same call there.
"""

from __future__ import annotations

import enum
import hashlib
from typing import NamedTuple


class Outcome(enum.StrEnum):
    """How far a journaled step got, as far as the store knows."""

    STARTED = "started"
    """Begun (committed ``tool_executing``) and not completed: it runs again, at least once."""
    OK = "ok"
    """Succeeded: replayable."""
    ERROR = "error"
    """Failed: it runs again (a restart is how transient failures recover)."""


class Kind(enum.StrEnum):
    """What a journal item records."""

    EVENT = "event"
    """An event the agent emitted: a custom event, ``agent_thinking``, an assistant message."""
    STEP = "step"
    """A tool call or a model call, with its outcome."""
    ASK = "ask"
    """A question (``input_requested``): its answers are the run's inputs, in order."""
    SLEEP = "sleep"
    """A durable sleep (``sleeping``): ``value`` is its wake-up time."""


class Item(NamedTuple):
    """One committed thing of the run, in the order it committed."""

    kind: Kind
    key: str
    """What a later attempt's action must equal to replay it."""
    outcome: Outcome = Outcome.OK
    value: str = ""
    """A step: its result (JSON), its error text, or nothing while started; a sleep: until."""
    call_id: str = ""
    """A tool step: the ``call_id`` of its events."""


def step_key(run_id: str, step: int, name: str, args_json: str) -> str:
    """The idempotency key of ``name(args_json)`` at ``step`` of run ``run_id``.

    ``"<run_id>:<step>:<16 hex digits>"``: the digits hash the name and the canonical arguments,
    so a divergent call at the same step gets a different key, and an attempt that repeats the
    call gets the same one.
    """
    digest = hashlib.sha256(f"{name}\x00{args_json}".encode()).hexdigest()[:16]
    return f"{run_id}:{step}:{digest}"


def step_item_key(name: str, args_json: str) -> str:
    """The key of a step item: the call's name and canonical arguments."""
    return f"{name}\x00{args_json}"


class Journal:
    """A run's journal as its owner keeps it (see the module docstring)."""

    __slots__ = ("items",)

    def __init__(self, items: tuple[Item, ...] | list[Item] = ()) -> None:
        self.items: list[Item] = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def snapshot(self) -> tuple[Item, ...]:
        """An immutable copy, for a new attempt."""
        return tuple(self.items)

    def append(self, item: Item) -> None:
        self.items.append(item)

    def cut(self, position: int) -> None:
        """A divergence at ``position``: what came after it belongs to a course left behind."""
        if 0 <= position < len(self.items):
            del self.items[position:]

    def _call(self, call_id: str) -> int | None:
        for i in range(len(self.items) - 1, -1, -1):
            if self.items[i].call_id == call_id:
                return i
        return None

    def tool_started(self, key: str, call_id: str, replaces: str | None = None) -> None:
        """A tool call was committed as begun (in place of the failed call ``replaces``)."""
        item = Item(Kind.STEP, key, Outcome.STARTED, "", call_id)
        at = None if replaces is None else self._call(replaces)
        if at is None:
            self.items.append(item)
        else:
            self.items[at] = item

    def tool_ended(self, call_id: str, outcome: Outcome, value: str) -> None:
        """A tool call's outcome was committed."""
        at = self._call(call_id)
        if at is not None:
            self.items[at] = self.items[at]._replace(outcome=outcome, value=value)


class Step(NamedTuple):
    """What an attempt's journal cursor decided for one call."""

    step: int | None
    """The call's number (``None``: not journaled: ``replay=False`` or concurrent)."""
    key: str | None
    """Its idempotency key (``None`` when not journaled: the caller uses the ``call_id``)."""
    replay_json: str | None = None
    """The recorded result to return instead of calling (``None``: call for real)."""
    again: Item | None = None
    """The journal has this call, begun or failed: it runs again. A begun call keeps its
    ``call_id`` (its ``tool_executing`` is not committed again); a failed one is a new call
    that replaces it."""

    @property
    def replayed(self) -> bool:
        return self.replay_json is not None


_UNJOURNALED = Step(None, None)


class Divergence(NamedTuple):
    """An attempt's action that did not match the journal (recorded once, then live)."""

    position: int
    """Where the journal is cut: the items before it stay."""
    step: int
    """The number of the attempt's step it happened at (or of its last step)."""
    expected: Item
    actual_kind: Kind
    actual_key: str


class JournalCursor:
    """One attempt's walk through the journal snapshot it started with."""

    __slots__ = ("_items", "_pos", "divergence", "in_flight", "run_id", "steps", "stopped")

    def __init__(self, run_id: str, items: tuple[Item, ...] = ()) -> None:
        self.run_id = run_id
        self._items = items
        self._pos = 0
        self.stopped = not items
        """True once nothing more can be replayed (diverged, or past the snapshot's end)."""
        self.steps = 0
        """Steps taken so far (replayed or live): the next one is number ``steps + 1``."""
        self.in_flight = 0
        """Calls of this attempt that run now (begun, not :meth:`end`-ed)."""
        self.divergence: Divergence | None = None
        """A divergence not recorded yet: the next thing this attempt commits records it."""

    @property
    def position(self) -> int:
        """How many items this attempt replayed."""
        return self._pos

    def _match(self, kind: Kind, key: str) -> Item | None:
        """The next item if it is ``kind``/``key`` (it is consumed); else a divergence."""
        if self.stopped:
            return None
        item = self._items[self._pos]
        if item.kind is kind and item.key == key:
            self._pos += 1
            if self._pos == len(self._items):
                self.stopped = True
            return item
        self.stopped = True
        self.divergence = Divergence(self._pos, self.steps, item, kind, key)
        return None

    def take_divergence(self) -> Divergence | None:
        """The divergence to record now (once)."""
        divergence, self.divergence = self.divergence, None
        return divergence

    def event(self, key: str) -> bool:
        """An event the attempt emits: True if it is replayed (do not commit it again)."""
        return self._match(Kind.EVENT, key) is not None

    def next_is_event(self) -> bool:
        """True if the next item is an event (a message being streamed may replay it)."""
        return not self.stopped and self._items[self._pos].kind is Kind.EVENT

    def ask(self, key: str) -> bool:
        """A question: True if the journal has it next (do not ask it again). A question
        answered by an input the run already had commits nothing, so it is not journaled: one
        the journal does not have next is no divergence yet (see :meth:`ask_at`)."""
        if self.stopped:
            return False
        item = self._items[self._pos]
        if item.kind is not Kind.ASK or item.key != key:
            return False
        self._match(Kind.ASK, key)
        return True

    def ask_at(self) -> int | None:
        """Where a question the journal does not have would cut it, if it must be committed
        (the run had no input left for it): the position, while replaying; else None."""
        return None if self.stopped else self._pos

    def sleep(self, key: str) -> str | None:
        """A durable sleep: its recorded wake-up time if the journal has it, else None."""
        item = self._match(Kind.SLEEP, key)
        return None if item is None else item.value

    def step(self, name: str, args_json: str, *, replay: bool = True) -> Step:
        """Decide the next call ``name(args_json)``: replay it, or run it (journaled or not).

        Unless the result says :attr:`Step.replayed`, the call is now in flight: the caller
        must call :meth:`end` when it is over (however it ends).
        """
        if not replay or self.in_flight:
            self.in_flight += 1
            return _UNJOURNALED
        self.steps += 1
        k = self.steps
        key = step_key(self.run_id, k, name, args_json)
        item = self._match(Kind.STEP, step_item_key(name, args_json))
        if item is not None and item.outcome is Outcome.OK:
            return Step(k, key, item.value)
        self.in_flight += 1
        return Step(k, key, None, item)

    def end(self) -> None:
        """A call that :meth:`step` did not replay is over."""
        self.in_flight -= 1
