"""The journal in terms of events: what each committed event adds to a run's journal, and the
keys an attempt's actions are matched by (both made here, so that they always agree).

The rules of the journal are the core's (``_core/_journal.py``); this module only reads and
writes JSON. A run's journal is built the same way whether its owner follows its commits
(:func:`fold`, once per committed event) or rebuilds it from the store after a lost process
(:func:`rebuild`: the run's events in ``seq`` order, with its model calls placed where they
committed), so a new attempt replays the same thing either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import orjson
from sqlalchemy import Insert, insert

from ._core._journal import Divergence, Item, Journal, Kind, Outcome, step_item_key
from ._store._base import ModelCall
from ._store._schema import model_calls
from ._values import RESERVED_EVENTS, Event, StagedEvent, dumps, loads

DIVERGED = "replay_diverged"
"""A new attempt did something else than the journal recorded (any kind of action)."""
TOOL_DIVERGED = "tool_replay_diverged"
"""A new attempt made another call than the journal recorded at that step."""
SLEEPING = "sleeping"
"""A durable sleep: ``{seconds, until}`` (``until`` in seconds since the epoch)."""

_NOT_JOURNALED = RESERVED_EVENTS | {"run_input"}


def canonical_json(value: object) -> str:
    """``value`` as canonical JSON text (sorted keys): equal values, equal text."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def event_key(event: str, data_json: str) -> str:
    """The key of an emitted event (custom, ``agent_thinking``)."""
    return f"{event}\x00{data_json}"


def message_key(text: str) -> str:
    """The key of an assistant message: its text (its ``message_id`` is new every attempt)."""
    return f"message\x00{text}"


def ask_key(data_json: str) -> str:
    """The key of a question: its ``input_requested`` payload (prompt, schema)."""
    return data_json


def sleep_key(seconds: float) -> str:
    """The key of a durable sleep: its duration."""
    return dumps(float(seconds))


def fold(journal: Journal, event: str, data_json: str) -> None:
    """Add one committed event of the run to its journal (events of the runtime are skipped)."""
    if event in _NOT_JOURNALED:
        return
    if event == "tool_executing":
        d = loads(data_json)
        if d.get("replay") is False:
            return  # not journaled (its ``tool_completed`` then finds no item either)
        key = step_item_key(d["tool"], canonical_json(d["args"]))
        journal.tool_started(key, d["call_id"], d.get("replaces"))
    elif event == "tool_completed":
        d = loads(data_json)
        if "result" in d:
            journal.tool_ended(d["call_id"], Outcome.OK, dumps(d["result"]))
        else:
            journal.tool_ended(d["call_id"], Outcome.ERROR, str(d.get("error", "")))
    elif event == "message":
        d = loads(data_json)
        if d.get("role") == "assistant":  # the user's message of ``say`` is no agent's action
            journal.append(Item(Kind.EVENT, message_key(str(d.get("text", "")))))
    elif event == "input_requested":
        journal.append(Item(Kind.ASK, ask_key(data_json)))
    elif event == SLEEPING:
        d = loads(data_json)
        journal.append(Item(Kind.SLEEP, sleep_key(d["seconds"]), value=dumps(d["until"])))
    elif event in (DIVERGED, TOOL_DIVERGED):
        position = loads(data_json).get("position")
        if isinstance(position, int):
            journal.cut(position)
    else:
        journal.append(Item(Kind.EVENT, event_key(event, data_json)))


def model_item(name: str, args_json: str, response_json: str) -> Item:
    """The journal item of a model call that answered ``response_json``."""
    return Item(Kind.STEP, step_item_key(name, args_json), Outcome.OK, response_json)


def fold_unit(journal: Journal, events: Sequence[StagedEvent], model: Item | None = None) -> None:
    """Add a committed unit of an attempt: a model call (if any) goes after the divergence
    the unit records first (if any) and before its other events (see :func:`model_after`)."""
    rest = events
    if model is not None:
        if events and events[0].event in (DIVERGED, TOOL_DIVERGED):
            fold(journal, events[0].event, events[0].data_json)
            rest = events[1:]
        journal.append(model)
    for ev in rest:
        fold(journal, ev.event, ev.data_json)


def model_after(head: int, events: Sequence[StagedEvent]) -> int:
    """The ``seq`` a model call of a unit committed after: the user's head before the unit,
    or the unit's leading divergence (what :func:`rebuild` places it by)."""
    return head + 1 if events and events[0].event in (DIVERGED, TOOL_DIVERGED) else head


def divergence_event(run_id: str, attempt: int, divergence: Divergence) -> StagedEvent:
    """The one event that records a divergence: ``tool_replay_diverged`` when another call was
    made at a step, else ``replay_diverged``; both say where the journal is cut (``position``)."""
    expected = divergence.expected
    if expected.kind is Kind.STEP and divergence.actual_kind is Kind.STEP:
        name, _, args = expected.key.partition("\x00")
        actual_name, _, actual_args = divergence.actual_key.partition("\x00")
        body = (
            f'{{"position":{divergence.position},"step":{divergence.step},"expected":{{"tool":{dumps(name)},'
            f'"args":{args}}},"actual":{{"tool":{dumps(actual_name)},"args":{actual_args}}},'
            f'"attempt":{attempt}}}'
        )
        return StagedEvent(run_id, TOOL_DIVERGED, body)
    data = {
        "position": divergence.position,
        "expected": _described(expected.kind, expected.key),
        "actual": _described(divergence.actual_kind, divergence.actual_key),
        "attempt": attempt,
    }
    return StagedEvent(run_id, DIVERGED, dumps(data))


def question_diverged(
    journal: Journal, run_id: str, attempt: int, data_json: str, cut_at: int
) -> StagedEvent:
    """The divergence of a question that must be committed while its attempt replays (the
    journal has something else at ``cut_at``: the course it recorded did not ask there)."""
    items = journal.items
    expected = items[cut_at] if cut_at < len(items) else Item(Kind.ASK, "")
    divergence = Divergence(cut_at, 0, expected, Kind.ASK, ask_key(data_json))
    return divergence_event(run_id, attempt, divergence)


def _described(kind: Kind, key: str) -> dict[str, str]:
    """What a divergence event says of an action (its kind and name, not its data)."""
    if kind is Kind.STEP:
        return {"kind": "step", "name": key.partition("\x00")[0]}
    if kind is Kind.EVENT:
        return {"kind": "event", "event": key.partition("\x00")[0]}
    return {"kind": kind.value}


class ModelStep(NamedTuple):
    """A model call an attempt commits (with the unit that carries its streamed answer)."""

    step: int
    name: str
    args_json: str
    request_sha256: str
    response_json: str

    def item(self) -> Item:
        return model_item(self.name, self.args_json, self.response_json)


def model_call_statement(
    user_id: str, run_id: str, attempt: int, model: ModelStep, after_seq: int
) -> Insert:
    """The row a model call commits in ``netra_model_calls`` (with its unit)."""
    return insert(model_calls).values(
        user_id=user_id,
        run_id=run_id,
        attempt=attempt,
        step=model.step,
        name=model.name,
        request_sha256=model.request_sha256,
        response=model.response_json,
        created_at=time.time(),
        after_seq=after_seq,
    )


class History(NamedTuple):
    """What a run's committed events say, as the owner that takes the run over needs it."""

    journal: Journal
    inputs: list[str]
    """Its ``run_input`` values (JSON), in order."""
    restarts: list[float]
    """When its restarts were granted (``ts`` of each ``run_rolled_back`` that restarted)."""


def rebuild(events: Iterable[Event], model_calls: Sequence[ModelCall] = ()) -> History:
    """A run's journal, inputs and restarts from its committed events (in ``seq`` order) and
    its model calls (each placed after the event it committed after)."""
    journal = Journal()
    inputs: list[str] = []
    restarts: list[float] = []
    calls = sorted(model_calls, key=lambda c: (c.after_seq, c.attempt, c.step))
    i = 0
    for ev in events:
        while i < len(calls) and calls[i].after_seq < ev.seq:
            journal.append(_model(calls[i]))
            i += 1
        if ev.event == "run_input":
            inputs.append(dumps(loads(ev.data_json)["input"]))
        elif ev.event == "run_rolled_back" and loads(ev.data_json).get("will_restart"):
            restarts.append(ev.ts)
        fold(journal, ev.event, ev.data_json)
    for call in calls[i:]:
        journal.append(_model(call))
    return History(journal, inputs, restarts)


def _model(call: ModelCall) -> Item:
    args_json = canonical_json({"request_sha256": call.request_sha256})
    return model_item(call.name, args_json, call.response)
