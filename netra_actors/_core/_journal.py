"""The journal of a run's steps: what a restarted attempt may replay instead of doing again.

Pure: no I/O, no clock, no JSON library (arguments and results arrive already encoded, as
canonical JSON text, so comparing two calls is comparing two strings).

* A **step** is the k-th journaled call of an attempt (k = 1, 2, …): a tool call, or (later) a
  model response. Calls that opt out (``replay=False``) and calls made while another one is in
  flight in the same attempt take no step.
* The run's :class:`Journal` (held by its supervisor) keeps, for each step, the last committed
  :class:`JournalEntry`: ``started`` (the call was committed as begun), ``ok`` (with its result)
  or ``error`` (with its error text). It is built only from what was committed.
* Each attempt reads an immutable snapshot through a :class:`JournalCursor`: the k-th call whose
  step k is ``ok`` with the same name and arguments is *replayed*; a ``started`` or ``error`` step
  runs again; a different name or arguments is a *divergence*: the journal stops there for the
  attempt, and recording the new step k drops every entry after it.
* The idempotency key of a step names the run, the position and the call
  (:func:`step_key`), so it is the same in every attempt that makes the same call there.
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


class JournalEntry(NamedTuple):
    """The committed outcome of one step (travels on the checkpoint that commits it)."""

    step: int
    """The position, 1-based."""
    name: str
    """The tool's name (or, for a model response, its journal name)."""
    args_json: str
    """The canonical JSON of the call's arguments (sorted keys)."""
    outcome: Outcome
    value: str = ""
    """``ok``: the result's JSON; ``error``: the error text; ``started``: empty."""

    def same_call(self, name: str, args_json: str) -> bool:
        """True if this entry records the call ``name(args_json)``."""
        return self.name == name and self.args_json == args_json


def step_key(run_id: str, step: int, name: str, args_json: str) -> str:
    """The idempotency key of ``name(args_json)`` at ``step`` of run ``run_id``.

    ``"<run_id>:<step>:<16 hex digits>"``: the digits hash the name and the canonical arguments,
    so a divergent call at the same step gets a different key, and an attempt that repeats the
    call gets the same one.
    """
    digest = hashlib.sha256(f"{name}\x00{args_json}".encode()).hexdigest()[:16]
    return f"{run_id}:{step}:{digest}"


class Step(NamedTuple):
    """What an attempt's journal cursor decided for one call."""

    step: int | None
    """The call's position (``None``: not journaled: ``replay=False`` or concurrent)."""
    key: str | None
    """Its idempotency key (``None`` when not journaled: the caller uses the ``call_id``)."""
    replay_json: str | None = None
    """The recorded result to return instead of calling (``None``: call for real)."""
    diverged_from: JournalEntry | None = None
    """The journal expected another call at this step (the journal stops here)."""

    @property
    def replayed(self) -> bool:
        return self.replay_json is not None

    def entry(self, name: str, args_json: str, outcome: Outcome, value: str = "") -> JournalEntry:
        """The journal entry that records this (journaled) step's ``outcome``."""
        assert self.step is not None, "a call that is not journaled records no entry"
        return JournalEntry(self.step, name, args_json, outcome, value)


_UNJOURNALED = Step(None, None)


class JournalCursor:
    """One attempt's walk through the journal snapshot it started with."""

    __slots__ = ("_entries", "_next", "_stopped", "in_flight", "run_id")

    def __init__(self, run_id: str, entries: tuple[JournalEntry, ...] = ()) -> None:
        self.run_id = run_id
        self._entries = entries
        self._next = 1
        self._stopped = not entries
        self.in_flight = 0
        """Calls of this attempt that run now (begun, not :meth:`end`-ed)."""

    @property
    def next_step(self) -> int:
        """The position the next journaled call will take."""
        return self._next

    @property
    def stopped(self) -> bool:
        """True once nothing more can be replayed (diverged, or past the snapshot's end)."""
        return self._stopped

    def begin(self, name: str, args_json: str, *, replay: bool = True) -> Step:
        """Decide the next call ``name(args_json)``: replay it, or run it (journaled or not).

        Unless the result says :attr:`Step.replayed`, the call is now in flight: the caller
        must call :meth:`end` when it is over (however it ends).
        """
        if not replay or self.in_flight:
            self.in_flight += 1
            return _UNJOURNALED
        k = self._next
        self._next = k + 1
        key = step_key(self.run_id, k, name, args_json)
        diverged: JournalEntry | None = None
        if not self._stopped:
            entries = self._entries
            if k <= len(entries):
                recorded = entries[k - 1]
                if recorded.same_call(name, args_json):
                    if recorded.outcome is Outcome.OK:
                        if k == len(entries):
                            self._stopped = True
                        return Step(k, key, recorded.value)
                else:
                    diverged = recorded
                    self._stopped = True
            else:
                self._stopped = True
        self.in_flight += 1
        return Step(k, key, None, diverged)

    def end(self) -> None:
        """A call that :meth:`begin` did not replay is over."""
        self.in_flight -= 1


class Journal:
    """A run's journal, as its supervisor keeps it across attempts (step k at index k - 1)."""

    __slots__ = ("_entries",)

    def __init__(self, entries: tuple[JournalEntry, ...] | list[JournalEntry] = ()) -> None:
        self._entries: list[JournalEntry] = list(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, step: int) -> JournalEntry:
        """The entry of ``step`` (1-based)."""
        if step < 1:
            raise IndexError(step)
        return self._entries[step - 1]

    def snapshot(self) -> tuple[JournalEntry, ...]:
        """An immutable copy, for a new attempt."""
        return tuple(self._entries)

    def record(self, entry: JournalEntry) -> bool:
        """Keep ``entry`` as the last committed outcome of its step.

        A different call than the one recorded at that step (a divergence) also drops every
        later entry: they were made by attempts whose course this one left. An entry that would
        leave a gap is not kept (False): steps are taken in order and every one not replayed is
        recorded, so it does not happen.
        """
        entries = self._entries
        k = entry.step
        if k < 1 or k > len(entries) + 1:
            return False
        if k == len(entries) + 1:
            entries.append(entry)
            return True
        if not entries[k - 1].same_call(entry.name, entry.args_json):
            del entries[k:]
        entries[k - 1] = entry
        return True
