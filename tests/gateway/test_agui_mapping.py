"""The pure AG-UI mapper (``netra_actors/gateway/_agui.py``): generated netra streams — runs with
deltas, tools, questions, rollbacks and every terminal state, interleaved — map to frames that
validate against the ``ag-ui-protocol`` models and keep the AG-UI ordering rules and the SSE id
rules, live, replayed, resumed at every id, and joined in the middle. No I/O.

The glue between the mapper and the store (:func:`stream`) does what
``_agui_stream.SseStream`` does: learn a run met after its start from its earlier events when the
mapper asks, and drop what a ``Last-Event-ID: k.i`` client already has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import pytest
from aguikit import SseFrame, StreamChecker, check, id_key, validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netra_actors import Delta, Event
from netra_actors.gateway._agui import AguiMapper, SnapshotFill
from netra_actors.gateway._agui_frames import EventId, Frame, after
from netra_actors.gateway._agui_messages import thread_messages

USER = "alice"
MAX = 2**63
NOW = 1_763_700_000.0
TERMINAL = ("completed", "failed", "timeout", "dead", "cancelled")

Item = Event | Delta


# -- the generated netra streams ----------------------------------------------------------


class E(NamedTuple):
    """An event of a script, before it gets its seq."""

    run: str | None
    name: str
    data: dict[str, Any]


class RunPlan(NamedTuple):
    run: str
    ids: tuple[str, str]
    """The (threadId, runId) its RUN_STARTED/RUN_FINISHED must carry."""
    end: str
    units: list[list[E | Delta]]
    """Commits and deltas, in order; a commit's events stay consecutive in the stream."""


text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=12)


def thread_of(run: str | None) -> str:
    """The netra thread of generated run ``r_<index>``: ``main`` or a thread of its own."""
    if run is None:
        return "main"
    index = int(run.rsplit("_", 1)[1])
    return "main" if index % 2 == 0 else f"th.{index}"


@st.composite
def run_plans(draw: st.DrawFn, index: int) -> RunPlan:
    run = f"r_{index}"
    units: list[list[E | Delta]] = []
    kind = draw(st.sampled_from(["agui", "say", "start_run"]))
    # threadId is the run's netra thread, for every run (the events carry it)
    ids = (thread_of(run), f"agui-{index}") if kind == "agui" else (thread_of(run), run)
    first: list[E | Delta] = []
    if kind != "start_run":
        data: dict[str, Any] = {"role": "user", "text": draw(text), "message_id": f"{run}.u"}
        if kind == "agui":
            data["agui"] = {"threadId": ids[0], "runId": ids[1]}
        first.append(E(run, "message", data))
    units.append([*first, E(run, "run_state", {"state": "pending", "previous": None})])
    units.append([E(run, "run_state", {"state": "starting", "previous": "pending"})])
    end = draw(st.sampled_from(TERMINAL))
    attempts = draw(st.integers(1, 3)) if end != "cancelled" else draw(st.integers(1, 2))
    calls = 0
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        units.append(
            [
                E(run, "agent_started", {"agent": "gen", "attempt": attempt}),
                E(run, "run_state", {"state": "running", "previous": "starting"}),
            ]
        )
        for n, action in enumerate(draw(st.lists(st.sampled_from(ACTIONS), max_size=4))):
            mid = f"{run}.{attempt}.{n}"
            if action == "think":
                units.append([E(run, "agent_thinking", {"text": draw(text)})])
            elif action == "custom":
                units.append([E(run, "my_own_event", {"x": draw(st.integers()), "y": None})])
            elif action == "ask":
                units.append([E(run, "input_requested", {"prompt": draw(text)})])
                units.append([E(run, "run_input", {"input": {"text": draw(text)}})])
            elif action == "say":
                units.append(
                    [
                        E(
                            run,
                            "message",
                            {"role": "assistant", "text": draw(text), "message_id": mid},
                        )
                    ]
                )
            elif action in ("tool", "tool_error", "tool_open"):
                calls += 1
                call = f"{run}.{attempt}.{calls}"
                args = {"text": draw(text), "n": draw(st.integers(-5, 5))}
                units.append(
                    [E(run, "tool_executing", {"tool": "t", "args": args, "call_id": call})]
                )
                if action == "tool":
                    result = {"tool": "t", "call_id": call, "result": {"ok": draw(text)}}
                    units.append([E(run, "tool_completed", result)])
                elif action == "tool_error":
                    units.append(
                        [E(run, "tool_completed", {"tool": "t", "call_id": call, "error": "boom"})]
                    )
            elif action in ("stream", "stream_open"):
                pieces = draw(st.lists(text.filter(bool), min_size=1, max_size=4))
                offset = 0
                for piece in pieces:
                    units.append([Delta(run, attempt, mid, offset, piece)])
                    offset += len(piece)
                if action == "stream":  # committed; "stream_open": left to the rollback
                    units.append(
                        [
                            E(
                                run,
                                "message",
                                {"role": "assistant", "text": "".join(pieces), "message_id": mid},
                            )
                        ]
                    )
        if last and end == "completed":
            units.append([E(run, "agent_completed", {"result": {"ok": True}})])
            units.append([E(run, "run_state", {"state": "completing", "previous": "running"})])
            units.append([E(run, "run_state", {"state": "completed", "previous": "completing"})])
            continue
        reason = {"failed": "crash", "completed": "crash"}.get(end, end) if last else "crash"
        rollback = {"reason": reason, "error": "x", "attempt": attempt, "will_restart": not last}
        units.append([E(run, "run_rolled_back", rollback)])
        if last:
            units.append(
                [E(run, "run_state", {"state": end, "previous": "running", "reason": "r"})]
            )
        else:
            units.append([E(run, "run_state", {"state": "starting", "previous": "running"})])
    return RunPlan(run, ids, end, units)


ACTIONS = [
    "think",
    "custom",
    "ask",
    "say",
    "tool",
    "tool_error",
    "tool_open",
    "stream",
    "stream_open",
]


class Scenario(NamedTuple):
    plans: list[RunPlan]
    items: list[Item]
    events: list[Event]
    units: list[int]
    """The indexes of ``items`` where a unit begins (where a live-only stream may join)."""


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    plans = [draw(run_plans(i)) for i in range(draw(st.integers(1, 3)))]
    queues: list[list[list[E | Delta]]] = [list(p.units) for p in plans]
    user_level = draw(st.integers(0, 2))
    queues.append([[E(None, "user_note", {"n": n})] for n in range(user_level)])
    items: list[Item] = []
    events: list[Event] = []
    starts: list[int] = []
    while any(queues):
        live = [q for q in queues if q]
        queue = live[draw(st.integers(0, len(live) - 1))]
        starts.append(len(items))
        for entry in queue.pop(0):
            if isinstance(entry, Delta):
                items.append(entry)
                continue
            seq = len(events) + 1
            event = Event(
                USER,
                seq,
                entry.run,
                entry.name,
                NOW + seq / 1000,
                json.dumps(entry.data),
                thread_of(entry.run),
            )
            events.append(event)
            items.append(event)
    return Scenario(plans, items, events, starts)


# -- the glue of SseStream ----------------------------------------------------------------


class Store:
    def __init__(self, events: Sequence[Event]) -> None:
        self.events = list(events)
        self.lookups: list[str] = []

    def run_events(self, run: str, before: int) -> list[Event]:
        self.lookups.append(run)
        return [e for e in self.events if e.run_id == run and e.seq < before]

    def event(self, seq: int) -> Event | None:
        return next((e for e in self.events if e.seq == seq), None)


def stream(
    items: Sequence[Item],
    store: Store,
    *,
    skip: int | None = None,
    mapper: AguiMapper | None = None,
) -> list[SseFrame]:
    """The frames an SSE stream sends for ``items`` (what ``SseStream._pump`` does)."""
    mapper = mapper or AguiMapper()
    out: list[SseFrame] = []
    for at, item in enumerate(items):
        run = mapper.needs_history(item)
        if run is not None:  # learn from what was committed before the item
            later = (i.seq for i in items[at:] if isinstance(i, Event))
            mapper.learn(run, store.run_events(run, next(later, MAX)))
        if isinstance(item, Event):
            frames: list[Frame] = mapper.event(item)
            if skip is not None:
                frames, skip = list(after(frames, skip)), None
        else:
            frames = mapper.delta(item, NOW + 0.5)
        for frame in frames:
            sse = frame.sse()
            assert sse.endswith(b"\n\n")
            out.append(SseFrame(frame.id, frame.event))
    return out


def resume(scenario: Scenario, last_event_id: str) -> list[SseFrame]:
    """What ``GET /agui/events`` with ``Last-Event-ID`` sends of the stored events."""
    store = Store(scenario.events)
    k, part = EventId.parse(last_event_id)
    if part is not None and k >= 1:
        return stream([e for e in scenario.events if e.seq >= k], store, skip=part)
    return stream([e for e in scenario.events if e.seq > k], store)


def _open(frames: Sequence[SseFrame]) -> dict[str, tuple[str, str]]:
    """The runs a client that received ``frames`` holds open: {run: (threadId, runId)}."""
    checker = check(frames, clock=False)
    return {r: ids for r, ids in checker.started.items() if r not in checker.finished}


def groups(frames: Sequence[SseFrame]) -> dict[int, list[SseFrame]]:
    out: dict[int, list[SseFrame]] = {}
    for frame in frames:
        if frame.id is not None:
            out.setdefault(id_key(frame.id)[0], []).append(frame)
    return out


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the properties -----------------------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_live_stream_keeps_every_rule(scenario: Scenario) -> None:
    store = Store(scenario.events)
    frames = stream(scenario.items, store)
    checker = check(frames, clock=False)
    # a stream from the start learns only the runs that begin with a state (start_run), once
    assert len(store.lookups) == len(set(store.lookups))
    by_seq = groups(frames)
    assert sorted(by_seq) == [e.seq for e in scenario.events]  # every event has its group
    for seq, group in by_seq.items():
        assert [f.id for f in group] == [*(f"{seq}.{i}" for i in range(1, len(group))), str(seq)]
    for plan in scenario.plans:
        run_frames = checker.of_run(plan.run)
        assert run_frames[0].type == "RUN_STARTED"
        assert (run_frames[0].event["threadId"], run_frames[0].event["runId"]) == plan.ids
        end = checker.finished[plan.run].event
        assert run_frames[-1].event is end
        if plan.end == "completed":
            assert end["type"] == "RUN_FINISHED"
            assert end["outcome"] == {"type": "success"}
        elif plan.end == "cancelled":
            assert end["type"] == "RUN_FINISHED"
            assert end["outcome"] == {"type": "cancelled"}
        else:
            assert end["type"] == "RUN_ERROR"
            assert end["code"] == plan.end
    for event in scenario.events:
        data = event.data
        group = by_seq[event.seq]
        if event.event == "message":
            assert checker.messages[data["message_id"]][1] is False  # ended
            assert checker.text[data["message_id"]] == data["text"]
        elif event.event == "tool_executing":
            group = _after_start(group)
            assert [f.type for f in group] == [
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_END",
                "TOOL_CALL_START",
                "TOOL_CALL_ARGS",
                "TOOL_CALL_END",
            ]
            assert group[2].event["toolCallName"] == data["tool"]
            assert group[2].event["parentMessageId"] == group[0].event["messageId"]
            assert json.loads(group[3].event["delta"]) == data["args"]
        elif event.event == "tool_completed":
            (result,) = _after_start(group)
            assert result.event["messageId"] == f"{data['call_id']}.result"
            assert json.loads(result.event["content"]) == (
                data["result"] if "result" in data else {"error": data["error"]}
            )
        elif event.event == "run_rolled_back":
            *closes, custom = _after_start(group)
            assert custom.event == {**custom.event, "name": "netra.run_rolled_back", "value": data}
            assert all(f.type == "TEXT_MESSAGE_END" for f in closes)
            streamed = {
                d.message_id
                for d in scenario.items
                if isinstance(d, Delta)
                and d.run_id == event.run_id
                and d.attempt == data["attempt"]
            }
            committed = {e.data.get("message_id") for e in scenario.events if e.event == "message"}
            # (a question before the rollback closed what was open then: the segment ended)
            asked = any(
                e.event == "input_requested" and e.run_id == event.run_id and e.seq < event.seq
                for e in scenario.events
            )
            closed = {f.event["messageId"] for f in closes}
            assert closed <= streamed - committed if asked else closed == streamed - committed
        elif event.event == "input_requested":  # the segment ends: an interrupt
            *closes, question, finished = _after_start(group)
            assert all(f.type == "TEXT_MESSAGE_END" for f in closes)
            assert question.event["value"] == data
            assert finished.type == "RUN_FINISHED"
            (interrupt,) = finished.event["outcome"]["interrupts"]
            assert interrupt == {
                "id": f"{event.run_id}.q{event.seq}",
                "reason": "input_requested",
                "message": data["prompt"],
            }
        elif event.event == "run_input":  # the next segment begins
            started, custom = group
            assert started.type == "RUN_STARTED"
            assert started.event["runId"] == f"{event.run_id}.{event.seq}"
            assert custom.event["value"] == data
        elif event.event == "agent_thinking":
            assert [f.type for f in _after_start(group)] == [
                "REASONING_START",
                "REASONING_MESSAGE_START",
                *(["REASONING_MESSAGE_CONTENT"] if data["text"] else []),
                "REASONING_MESSAGE_END",
                "REASONING_END",
            ]
        elif event.event in ("my_own_event", "user_note"):
            (custom,) = _after_start(group)
            assert custom.event["name"] == f"netra.{event.event}"
            assert custom.event["value"] == data
        assert all(f.event["timestamp"] == int(event.ts * 1000) for f in group)


def _after_start(group: list[SseFrame]) -> list[SseFrame]:
    """A group without the RUN_STARTED that opens a run's next segment (after a question)."""
    return group[1:] if group and group[0].type == "RUN_STARTED" else group


def durable(frames: Sequence[SseFrame]) -> list[SseFrame]:
    return [f for f in frames if f.id is not None]


@SETTINGS
@given(scenarios(), st.data())
def test_replay_and_resume_points_are_exact(scenario: Scenario, data: st.DataObject) -> None:
    store = Store(scenario.events)
    replayed = stream(scenario.events, store)
    check(replayed, clock=False)
    live = stream(scenario.items, Store(scenario.events))
    live_groups, replay_groups = groups(live), groups(replayed)
    for event in scenario.events:
        group = replay_groups[event.seq]
        # the bare k frame is the same however the stream got there
        assert group[-1] == live_groups[event.seq][-1]
        if event.event == "message":
            kinds = [f.type for f in group]
            content = ["TEXT_MESSAGE_CONTENT"] if event.data["text"] else []
            first = ["RUN_STARTED"] if event.data["role"] == "user" else []
            assert kinds == [*first, "TEXT_MESSAGE_START", *content, "TEXT_MESSAGE_END"]
    # resume after durable ids of the replay (the first, the last, some between), and after
    # every k.i of the live stream
    ids = [f.id for f in replayed if f.id is not None]
    some = data.draw(st.lists(st.sampled_from(ids), max_size=8, unique=True))
    for resumed_id in {ids[0], ids[-1], *some}:
        got = resume(scenario, resumed_id)
        position = ids.index(resumed_id)
        assert durable(got) == durable(replayed)[position + 1 :], resumed_id
        check([*replayed[: position + 1], *got], clock=False)  # one stream, as the client sees it
    for frame in live:
        if frame.id is None or "." not in frame.id:
            continue
        k, part = EventId.parse(frame.id)
        assert part is not None
        expected = [f for f in after(_frames(replay_groups[k]), part) if f.id is not None]
        rest = [f for f in replayed if f.id is not None and id_key(f.id)[0] > k]
        got = durable(resume(scenario, frame.id))
        assert got == [SseFrame(f.id, f.event) for f in expected] + rest


def _frames(group: list[SseFrame]) -> list[Frame]:
    return [Frame(f.id, f.event) for f in group]


@SETTINGS
@given(scenarios(), st.data())
def test_a_resumed_live_stream_keeps_the_rules(scenario: Scenario, data: st.DataObject) -> None:
    """Resume after the bare id of any event, with deltas after it (a reconnect in the middle):
    a run the client holds open is announced again first (same ids, no SSE id)."""
    live = stream(scenario.items, Store(scenario.events))
    bare = [f for f in live if f.id is not None and "." not in f.id]
    point = data.draw(st.sampled_from(bare))
    k = int(point.id or "0")
    position = next(
        i for i, it in enumerate(scenario.items) if isinstance(it, Event) and it.seq == k
    )
    store = Store(scenario.events)
    rest = stream(scenario.items[position + 1 :], store)
    held = _open(live[: live.index(point) + 1])
    checker = StreamChecker(open_runs=held, resumed=point.id, clock=False).feed_all(rest)
    for run, ids in held.items():
        of_run = checker.of_run(run)
        if of_run:
            assert (of_run[0].type, of_run[0].id) == ("RUN_STARTED", None)
            assert (of_run[0].event["threadId"], of_run[0].event["runId"]) == ids
    assert len(store.lookups) == len(set(store.lookups))  # at most one lookup per run


@SETTINGS
@given(scenarios(), st.data())
def test_a_live_only_stream_joining_anywhere_keeps_the_rules(
    scenario: Scenario, data: st.DataObject
) -> None:
    join = data.draw(st.sampled_from([*scenario.units, len(scenario.items)]))
    store = Store(scenario.events)
    frames = stream(scenario.items[join:], store)
    checker = check(frames, clock=False)
    assert len(store.lookups) == len(set(store.lookups))
    for plan in scenario.plans:
        if plan.run in checker.started:
            first = checker.of_run(plan.run)[0]
            before = [
                it
                for it in scenario.items[:join]
                if isinstance(it, Event) and it.run_id == plan.run
            ]
            if not any(e.event == "input_requested" for e in before):  # its first segment
                ids = (first.event["threadId"], first.event["runId"])
                assert ids == plan.ids  # POST /agui runs keep their ids
            seen = {e.seq for e in before}
            paused = bool(before) and before[-1].event == "input_requested"
            if seen and not paused:  # joined in a segment: a synthetic, provisional RUN_STARTED
                assert first.type == "RUN_STARTED"
                assert first.id is None
                assert "seq" not in first.event["metadata"]["netra"]
            elif paused:  # joined between segments: the next one opens as in a replay
                assert first.type == "RUN_STARTED"
                assert first.id is not None


# -- focused cases ------------------------------------------------------------------------


def _event(seq: int, run: str | None, name: str, **data: Any) -> Event:
    return Event(USER, seq, run, name, NOW + seq, json.dumps(data))


def test_a_streamed_message_and_its_rollback() -> None:
    events = [
        _event(1, "r", "run_state", state="pending", previous=None),
        _event(2, "r", "run_rolled_back", reason="crash", error="e", attempt=1, will_restart=True),
        _event(3, "r", "message", role="assistant", text="Hello", message_id="m2"),
        _event(4, "r", "run_state", state="completed", previous="completing"),
    ]
    items: list[Item] = [events[0], Delta("r", 1, "m1", 0, "Hi"), events[1]]
    items += [Delta("r", 2, "m2", 0, "Hel"), Delta("r", 2, "m2", 3, "lo"), *events[2:]]
    frames = stream(items, Store(events))
    check(frames, clock=False)
    summary = [(f.id, f.type, f.event.get("delta")) for f in frames]
    assert summary == [
        ("1.1", "RUN_STARTED", None),
        ("1", "CUSTOM", None),
        (None, "TEXT_MESSAGE_START", None),
        (None, "TEXT_MESSAGE_CONTENT", "Hi"),
        ("2.1", "TEXT_MESSAGE_END", None),  # the rollback closes what its attempt left open
        ("2", "CUSTOM", None),
        (None, "TEXT_MESSAGE_START", None),
        (None, "TEXT_MESSAGE_CONTENT", "Hel"),
        (None, "TEXT_MESSAGE_CONTENT", "lo"),
        ("3", "TEXT_MESSAGE_END", None),
        ("4", "RUN_FINISHED", None),
    ]
    # replayed: no provisional text; the committed message is START, CONTENT, END
    replayed = stream(events, Store(events))
    assert [(f.id, f.type) for f in replayed] == [
        ("1.1", "RUN_STARTED"),
        ("1", "CUSTOM"),
        ("2", "CUSTOM"),
        ("3.1", "TEXT_MESSAGE_START"),
        ("3.2", "TEXT_MESSAGE_CONTENT"),
        ("3", "TEXT_MESSAGE_END"),
        ("4", "RUN_FINISHED"),
    ]
    # a resume from 2.1 (the live stream's END): the rollback's group is shorter now
    resumed = stream(events[1:], Store(events), skip=1)
    assert [f.id for f in resumed] == [None, "2", "3.1", "3.2", "3", "4"]  # RUN_STARTED first


def test_a_run_ending_with_a_message_open_closes_it_first() -> None:
    events = [
        _event(1, "r", "run_state", state="pending", previous=None),
        _event(2, "r", "run_state", state="cancelled", previous="running"),
    ]
    frames = stream([events[0], Delta("r", 1, "m", 0, "so far"), events[1]], Store(events))
    check(frames, clock=False)
    assert [(f.id, f.type) for f in frames][-2:] == [
        ("2.1", "TEXT_MESSAGE_END"),
        ("2", "RUN_FINISHED"),
    ]
    assert frames[-1].event["outcome"] == {"type": "cancelled"}


def test_deltas_out_of_order_or_joined_late() -> None:
    events = [_event(1, "r", "run_state", state="running", previous="starting")]
    mapper = AguiMapper()
    mapper.learn("r", [])
    # joined in the middle of a message: nothing of it until it commits
    assert mapper.delta(Delta("r", 1, "late", 4, "text"), NOW) == [
        Frame(
            None,
            {
                "type": "RUN_STARTED",
                "threadId": "main",
                "runId": "r",
                "timestamp": int(NOW * 1000),
                "metadata": {"netra": {"run_id": "r"}},
            },
        ),
    ]
    assert mapper.delta(Delta("r", 1, "late", 8, "more"), NOW) == []
    deltas = [
        Delta("r", 1, "m", 0, "ab"),
        Delta("r", 1, "m", 1, "bcd"),
        Delta("r", 1, "m", 9, "x"),
        Delta("r", 1, "m", 4, "e"),
    ]
    committed = _event(2, "r", "message", role="assistant", text="abcdefghijx!", message_id="m")
    frames = stream([*deltas, committed], Store(events), mapper=mapper)
    contents = [f.event["delta"] for f in frames if f.type == "TEXT_MESSAGE_CONTENT"]
    # an overlap is trimmed; after a gap no more deltas; the committed message sends the rest
    assert contents == ["ab", "cd", "efghijx!"]
    assert [f.type for f in frames][-2:] == ["TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"]
    assert frames[-1].id == "2"
    assert frames[-2].id == "2.1"
    # the late message: its committed form, whole
    late = mapper.event(
        _event(3, "r", "message", role="assistant", text="whole", message_id="late")
    )
    assert [(f.id, f.event["type"], f.event.get("delta")) for f in late] == [
        ("3.1", "TEXT_MESSAGE_START", None),
        ("3.2", "TEXT_MESSAGE_CONTENT", "whole"),
        ("3", "TEXT_MESSAGE_END", None),
    ]
    for sse in frames:
        validate(sse.event)
    for frame in late:
        validate(frame.event)


def test_resume_in_the_middle_of_a_post_run_keeps_its_ids() -> None:
    """``Last-Event-ID: k`` where k is an event of a POST /agui run other than its message:
    the RUN_FINISHED after the resume carries the input's threadId/runId."""
    agui = {"threadId": "T", "runId": "R"}
    events = [
        _event(1, "r", "message", role="user", text="hi", message_id="u", agui=agui),
        _event(2, "r", "run_state", state="pending", previous=None),
        _event(3, "r", "agent_thinking", text="…"),
        _event(4, "r", "message", role="assistant", text="answer", message_id="a"),
        _event(5, "r", "run_state", state="completed", previous="completing"),
    ]
    for k in ("2", "3", "3.1", "4.1", "4.2"):
        scenario = Scenario([], list(events), events, [])
        frames = resume(scenario, k)
        assert frames[-1].type == "RUN_FINISHED"
        assert (frames[-1].event["threadId"], frames[-1].event["runId"]) == ("T", "R"), k
        # resumed in the middle of the run: it opens with the run's RUN_STARTED, no SSE id
        assert [(f.type, f.id) for f in frames if f.type == "RUN_STARTED"] == [
            ("RUN_STARTED", None)
        ], k
        assert frames[0].type == "RUN_STARTED"
        assert (frames[0].event["threadId"], frames[0].event["runId"]) == ("T", "R"), k
    # a live-only stream joining between the user message and the first state
    store = Store(events)
    frames = stream(events[1:], store)
    assert (frames[0].type, frames[0].id) == ("RUN_STARTED", None)
    assert (frames[0].event["threadId"], frames[0].event["runId"]) == ("T", "R")
    assert store.lookups == ["r"]
    # joining with the assistant's message: a synthetic RUN_STARTED, then the message
    frames = stream(events[3:], Store(events))
    assert [(f.id, f.type) for f in frames][:2] == [
        (None, "RUN_STARTED"),
        ("4.1", "TEXT_MESSAGE_START"),
    ]
    assert frames[0].event["runId"] == "R"


def test_events_of_no_run_are_custom_events() -> None:
    frames = stream([_event(1, None, "user_note", n=1)], Store([]))
    assert frames == [
        SseFrame(
            "1",
            {
                "type": "CUSTOM",
                "name": "netra.user_note",
                "value": {"n": 1},
                "timestamp": int((NOW + 1) * 1000),
                "metadata": {"netra": {"seq": 1, "run_id": None}},
            },
        ),
    ]
    validate(frames[0].event)


def test_timeout_and_dead_are_run_errors() -> None:
    for state in ("failed", "timeout", "dead"):
        events = [
            _event(1, "r", "run_state", state="pending", previous=None),
            _event(2, "r", "run_state", state=state, previous="running", reason="why"),
            _event(3, "r", "agent_thinking", text="late"),  # nothing of a run after its end
        ]
        frames = stream(events, Store(events))
        check(frames, clock=False)
        end = frames[-1].event
        assert (end["type"], end["code"], end["message"]) == (
            "RUN_ERROR",
            state,
            f"the run ended {state}: why",
        )


# -- EventId and after() --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("0", (0, None)), ("7", (7, None)), ("7.1", (7, 1)), (" 7.12 ", (7, 12)), ("007.01", (7, 1))],
)
def test_event_id_parse_accepts(text: str, parsed: tuple[int, int | None]) -> None:
    assert EventId.parse(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "a",
        "7.",
        ".1",
        "7.0",
        "-1",
        "+1",
        "7.1.2",
        "1e3",
        "7. 1",
        "7.-1",
        "٣",
        "7.٣",
        "1_000",
        "0x1",
    ],
)
def test_event_id_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        EventId.parse(text)


@given(st.text(max_size=8) | st.from_regex(r"\A\s*[0-9]{1,4}(\.[0-9]{1,3})?\s*\Z"))
def test_event_id_parse_is_exactly_k_or_k_dot_i(text: str) -> None:
    match = re.fullmatch(r"([0-9]+)(?:\.([0-9]+))?", text.strip())
    if match is None or (match[2] is not None and int(match[2]) < 1):
        with pytest.raises(ValueError):
            EventId.parse(text)
    else:
        part = int(match[2]) if match[2] is not None else None
        assert EventId.parse(text) == (int(match[1]), part)


@given(st.integers(1, 6), st.integers(1, 10))
def test_after_keeps_the_bare_k_even_for_a_shorter_group(n: int, part: int) -> None:
    frames = [Frame(f"5.{i}", {"i": i}) for i in range(1, n)] + [Frame("5", {"i": n})]
    rest = list(after(frames, part))
    assert rest[-1] == frames[-1]
    assert rest == (frames[part:] if part < n else [frames[-1]])


# -- thread-scoped streams: snapshots ---------------------------------------------------------


def _fill(fills: Sequence[SnapshotFill], events: Sequence[Event]) -> None:
    """Fill the mapper's snapshots as the stream does: the thread's committed conversation."""
    for fill in fills:
        fill.fill(thread_messages([e for e in events if e.seq <= fill.upto]))


def test_thinking_committed_with_a_streamed_message_moves_it_after_the_thinking() -> None:
    """Live equals replay: the client showed the streamed text before the thinking its unit
    committed first; two snapshots (without it, then with it) move it to its committed place."""
    events = [
        _event(1, "r", "message", role="user", text="hi", message_id="u", agui={"threadId": "main", "runId": "R"}),
        _event(2, "r", "agent_thinking", text="hmm"),
        _event(3, "r", "message", role="assistant", text="Hello", message_id="m"),
    ]  # fmt: skip
    mapper = AguiMapper(snapshots=True)
    frames = [*mapper.event(events[0]), *mapper.delta(Delta("r", 1, "m", 0, "Hel"), NOW)]
    assert mapper.take_fills() == []
    frames += mapper.event(events[1])
    assert mapper.take_fills() == []  # the thinking alone: no snapshot yet
    frames += mapper.event(events[2])
    fills = mapper.take_fills()
    assert [(f.upto, f.without) for f in fills] == [(3, "m"), (3, None)]
    _fill(fills, events)
    group = [(f.id, f.event["type"]) for f in frames if f.id and f.id.startswith("3")]
    assert group == [
        ("3.1", "TEXT_MESSAGE_CONTENT"),
        ("3.2", "TEXT_MESSAGE_END"),
        ("3.3", "MESSAGES_SNAPSHOT"),
        ("3", "MESSAGES_SNAPSHOT"),
    ]
    drop, add = frames[-2].event["messages"], frames[-1].event["messages"]
    assert [m["id"] for m in drop] == ["u", "r.t2"]
    assert [m["id"] for m in add] == ["u", "r.t2", "m"]
    check([SseFrame(f.id, f.event) for f in frames], clock=False)
    # a stream of no thread cannot move messages: it keeps the first set's frames
    plain = AguiMapper()
    plain.event(events[0])
    plain.delta(Delta("r", 1, "m", 0, "Hel"), NOW)
    plain.event(events[1])
    assert [f.event["type"] for f in plain.event(events[2])] == [
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
    ]
    assert plain.take_fills() == []


def test_a_streamed_message_committed_in_place_needs_no_snapshot() -> None:
    events = [
        _event(1, "r", "agent_thinking", text="first"),
        _event(2, "r", "message", role="assistant", text="Hello", message_id="m"),
    ]
    mapper = AguiMapper(snapshots=True)
    mapper.learn("r", [])
    mapper.event(events[0])
    mapper.delta(Delta("r", 1, "m", 0, "Hello"), NOW)
    assert [f.event["type"] for f in mapper.event(events[1])] == ["TEXT_MESSAGE_END"]
    assert mapper.take_fills() == []


def test_a_thread_stream_resumed_inside_a_group_gets_a_snapshot() -> None:
    """``Last-Event-ID: k.i`` inside a rollback's group (the client got the END of the
    retracted text, not the snapshot) or a message's group (begun, not ended): the resumed
    stream opens with the run's RUN_STARTED, then a snapshot of the thread through k stands
    for the rest of the group's message events; its run events follow; the bare k ends it."""
    agui = {"threadId": "main", "runId": "R"}
    events = [
        _event(1, "r", "message", role="user", text="hi", message_id="u", agui=agui),
        _event(2, "r", "run_rolled_back", reason="crash", error="e", attempt=1, will_restart=True),
        _event(3, "r", "message", role="assistant", text="Hello", message_id="m"),
        _event(4, "r", "run_state", state="completed", previous="completing"),
    ]
    for seq, part in ((2, 1), (2, 2), (3, 1), (3, 2), (1, 1), (1, 3)):
        mapper = AguiMapper(snapshots=True)
        mapper.learn("r", [e for e in events if e.seq < seq])
        frames = mapper.resumed(events[seq - 1], part)
        _fill(mapper.take_fills(), events)
        summary = [(f.id, f.event["type"]) for f in frames]
        rest = [("2", "CUSTOM")] if seq == 2 else []
        if len(rest):
            expected = [(f"{seq}.{part + 1}", "MESSAGES_SNAPSHOT"), *rest]
        else:
            expected = [(str(seq), "MESSAGES_SNAPSHOT")]
        assert summary == [(None, "RUN_STARTED"), *expected], (seq, part)
        snapshot = next(f for f in frames if f.event["type"] == "MESSAGES_SNAPSHOT")
        ids = [m["id"] for m in snapshot.event["messages"]]
        assert ids == (["u", "m"] if seq >= 3 else ["u"])
        later = [f for e in events[seq:] for f in mapper.event(e)]
        check(
            [SseFrame(f.id, f.event) for f in [*frames, *later]],
            clock=False,
            resumed=f"{seq}.{part}",
        )
