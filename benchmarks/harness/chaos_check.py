"""The checker of the durable-run scenarios: what was committed, delivered and executed.

It is given three independent records and compares them; it never asks the servers:

* **committed**: the store, read directly (every user's events, the runs table);
* **delivered**: every socket's record — the events it received, across its reconnects with
  ``resume_from`` (each socket checked gapless and duplicate-free as it read);
* **executed**: the side-effect log (one line per outside effect: idempotency key, run, step).

:func:`check` returns a :class:`Verdict`: the counts, and one line per broken promise of
protocol-v1 "Durable runs: what a client sees":

* every requested run (a ``say`` with a tag) was committed once and ended ``completed``, exactly
  once; no run ended ``dead`` or ``failed``; no run that nobody asked for;
* in the store: ``seq`` is 1..N per user; every ``run_state`` chain is legal, with one
  ``run_rolled_back`` before each state that follows one; the runs table agrees;
* every message once: one user message per tag, one assistant message, one ``agent_completed``,
  one ``agent_thinking`` per step, one ``tool_executing`` / ``tool_completed`` pair per step, one
  ``input_requested`` and one ``run_input`` per question — however many attempts it took;
* every completed step's effect happened (its key is in the log), at most once more per loss of
  its run (in-flight steps are at-least-once), and the key tells the steps apart: one key per
  (run, step), a different key for every step;
* every socket holds exactly the store's events after the point it started from: nothing lost,
  nothing twice, nothing the store does not have (delivered before commit, or rolled back).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from netra_actors._core import TRANSITIONS, RunState

Event = dict[str, Any]
"""An event in the wire shape: ``seq``, ``run_id``, ``event``, ``ts``, ``data``."""

LOSS_REASONS = frozenset({"lost", "dead", "crash", "store_error"})
"""Rollback reasons after which a step that was in flight may run once more."""


@attrs.frozen(kw_only=True)
class Request:
    """A run the client asked for: a ``say`` of ``agent`` whose text holds ``tag``."""

    user: str
    tag: str
    agent: str
    steps: int
    """Tool steps the run makes (``durable_ask``: 1)."""
    asks: int = 0
    """Questions the run asks."""


@attrs.frozen(kw_only=True)
class SocketRecord:
    """What one socket received: events after ``base``, and what it saw wrong as it read."""

    name: str
    user: str
    base: int
    events: Sequence[Event]
    violations: Sequence[str] = ()


@attrs.define
class Verdict:
    """The counts and the problems (empty: every promise kept)."""

    counts: Counter[str] = attrs.field(factory=Counter)
    problems: list[str] = attrs.field(factory=list)

    def fail(self, text: str) -> None:
        self.problems.append(text)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_effects(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The side-effect log's lines (a torn last line would be a bug of the writer: kept as one)."""
    out: list[dict[str, Any]] = []
    for line in lines:
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"torn": line})
    return out


def check(
    stored: Mapping[str, Sequence[Event]],
    runs: Mapping[tuple[str, str], Mapping[str, Any]],
    sockets: Sequence[SocketRecord],
    effects: Sequence[Mapping[str, Any]],
    requests: Sequence[Request],
) -> Verdict:
    """Compare the three records with each other and with what was asked for."""
    verdict = Verdict()
    by_run = _check_streams(stored, runs, verdict)
    _check_requests(stored, by_run, requests, verdict)
    _check_effects(by_run, effects, requests, verdict)
    _check_sockets(stored, sockets, verdict)
    return verdict


def _check_streams(
    stored: Mapping[str, Sequence[Event]],
    runs: Mapping[tuple[str, str], Mapping[str, Any]],
    verdict: Verdict,
) -> dict[str, list[Event]]:
    """The store's own invariants; returns each run's events."""
    by_run: dict[str, list[Event]] = {}
    for user, events in stored.items():
        seqs = [e["seq"] for e in events]
        if seqs != list(range(1, len(seqs) + 1)):
            verdict.fail(f"{user}: stored seq is not 1..{len(seqs)}")
        verdict.counts["events committed"] += len(events)
        states: dict[str, RunState] = {}
        awaiting: set[str] = set()
        for e in events:
            run_id, name, data = e["run_id"], e["event"], e["data"]
            if run_id is None:
                continue
            by_run.setdefault(run_id, []).append(e)
            if name == "run_rolled_back":
                verdict.counts[f"rollbacks {data.get('reason')}"] += 1
                if run_id in awaiting:
                    verdict.fail(f"{user} seq {e['seq']}: a second rollback of {run_id}")
                awaiting.add(run_id)
                continue
            if name != "run_state":
                if run_id in states and not states[run_id].is_live:
                    verdict.fail(f"{user} seq {e['seq']}: {name} after {run_id} ended")
                continue
            awaiting.discard(run_id)
            try:
                target = RunState(data["state"])
            except ValueError:
                verdict.fail(f"{user} seq {e['seq']}: unknown state {data}")
                continue
            if data.get("reason") == "recovered":
                verdict.counts["recovered attempts"] += 1
            current = states.get(run_id)
            if current is None:
                if data.get("previous") is not None or target is not RunState.PENDING:
                    verdict.fail(f"{user} seq {e['seq']}: {run_id} starts with {data}")
            elif data.get("previous") != current.value or target not in TRANSITIONS[current]:
                verdict.fail(f"{user} seq {e['seq']}: illegal {current.value} -> {data}")
            states[run_id] = target
        for run_id, state in states.items():
            verdict.counts[f"runs {state.value}"] += 1
            row = runs.get((user, run_id))
            if row is None:
                verdict.fail(f"{user}: run {run_id} has events but no row")
            elif row["state"] != state.value:
                verdict.fail(f"{user}: run {run_id}: row {row['state']}, events {state.value}")
    return by_run


def _count(events: Sequence[Event], name: str, **data: Any) -> int:
    return sum(
        1
        for e in events
        if e["event"] == name and all(e["data"].get(k) == v for k, v in data.items())
    )


def _check_requests(
    stored: Mapping[str, Sequence[Event]],
    by_run: Mapping[str, Sequence[Event]],
    requests: Sequence[Request],
    verdict: Verdict,
) -> None:
    """Each request: one run, completed once, every message once."""
    tags: dict[tuple[str, str], list[str]] = {}
    for user, events in stored.items():
        for e in events:
            if e["event"] == "message" and e["data"].get("role") == "user":
                tag = _tag_of(e["data"].get("text"))
                tags.setdefault((user, tag), []).append(e["run_id"])
    asked = {(r.user, r.tag) for r in requests}
    for key, run_ids in tags.items():
        if key not in asked:
            verdict.fail(f"{key[0]}: a run nobody asked for: {key[1]!r} {run_ids}")
    for request in requests:
        run_ids = tags.get((request.user, request.tag), [])
        if len(run_ids) != 1:
            verdict.fail(f"{request.user} {request.tag}: {len(run_ids)} user messages (want 1)")
            continue
        events = by_run.get(run_ids[0], [])
        _check_run(request, run_ids[0], events, verdict)


def _tag_of(text: Any) -> str:
    try:
        spec = json.loads(text)
    except (TypeError, ValueError):
        return str(text)
    return str(spec.get("tag")) if isinstance(spec, dict) else str(text)


def _check_run(request: Request, run_id: str, events: Sequence[Event], verdict: Verdict) -> None:
    where = f"{request.user} {request.tag} ({run_id})"
    finals = [
        e["data"]["state"]
        for e in events
        if e["event"] == "run_state"
        and e["data"]["state"] in {s.value for s in RunState}
        and not RunState(e["data"]["state"]).is_live
    ]
    if finals != ["completed"]:
        verdict.fail(f"{where}: ended {finals or 'never'} (want completed, once)")
    else:
        verdict.counts["requested runs completed"] += 1
    verdict.counts["attempts"] += max(1, _count(events, "agent_started"))
    once = {
        "message (assistant)": _count(events, "message", role="assistant"),
        "agent_completed": _count(events, "agent_completed"),
        "input_requested": _count(events, "input_requested"),
        "run_input": _count(events, "run_input"),
    }
    want = {"message (assistant)": 1, "agent_completed": 1}
    want["input_requested"] = want["run_input"] = request.asks
    for step in range(1, request.steps + 1):
        once[f"tool_executing step {step}"] = sum(
            1
            for e in events
            if e["event"] == "tool_executing" and (e["data"].get("args") or {}).get("step") == step
        )
        want[f"tool_executing step {step}"] = 1
        if request.agent == "durable_steps":
            once[f"agent_thinking step {step}"] = _count(
                events, "agent_thinking", text=f"step {step}"
            )
            want[f"agent_thinking step {step}"] = 1
    once["tool_completed"] = _count(events, "tool_completed")
    want["tool_completed"] = request.steps
    for name, n in once.items():
        if n != want[name]:
            verdict.fail(f"{where}: {n} x {name} (want {want[name]})")
    verdict.counts["tool steps committed"] += once["tool_completed"]
    diverged = _count(events, "tool_replay_diverged")
    if diverged:
        verdict.fail(f"{where}: {diverged} x tool_replay_diverged (the agent is deterministic)")


def _check_effects(
    by_run: Mapping[str, Sequence[Event]],
    effects: Sequence[Mapping[str, Any]],
    requests: Sequence[Request],
    verdict: Verdict,
) -> None:
    """Each completed step's effect happened, at most once more per loss; keys tell steps apart."""
    by_key: dict[str, list[Mapping[str, Any]]] = {}
    for line in effects:
        if "torn" in line:
            verdict.fail(f"a torn line in the side-effect log: {line['torn']!r}")
            continue
        by_key.setdefault(str(line["key"]), []).append(line)
    verdict.counts["effects executed"] += sum(len(v) for v in by_key.values())
    keys_of: dict[tuple[str, int], set[str]] = {}
    for key, lines in by_key.items():
        places = {(str(x["run"]), int(x["step"])) for x in lines}
        if len(places) != 1:
            verdict.fail(f"effect key {key} names several steps: {sorted(places)}")
        for place in places:
            keys_of.setdefault(place, set()).add(key)
    for (run_id, step), keys in keys_of.items():
        if len(keys) != 1:
            verdict.fail(f"run {run_id} step {step}: {len(keys)} different keys {sorted(keys)}")
        if run_id not in by_run:
            verdict.fail(f"an effect of run {run_id}, which the store does not have")
    for run_id, events in by_run.items():
        losses = sum(
            1
            for e in events
            if e["event"] == "run_rolled_back" and e["data"].get("reason") in LOSS_REASONS
        )
        for e in events:
            if e["event"] != "tool_completed" or "error" in e["data"]:
                continue
            result = e["data"].get("result") or {}
            done = by_key.get(str(result.get("key")), [])
            step_no = result.get("step")
            if not done:
                verdict.fail(f"run {run_id} step {step_no}: completed, but no effect with its key")
            elif len(done) > 1 + losses:
                verdict.fail(
                    f"run {run_id} step {step_no}: {len(done)} effects after {losses} losses "
                    f"(at most {1 + losses})"
                )
            if len(done) > 1:
                verdict.counts["effects repeated (in flight at a loss)"] += len(done) - 1
    del requests  # the per-request step counts are checked on the committed events


def _check_sockets(
    stored: Mapping[str, Sequence[Event]], sockets: Sequence[SocketRecord], verdict: Verdict
) -> None:
    """Each socket holds exactly the store's events after its base, equal to the store's."""
    for sock in sockets:
        for text in sock.violations:
            verdict.fail(f"socket {sock.name}: {text}")
        events = stored.get(sock.user, [])
        expected = [_wire(e) for e in events if e["seq"] > sock.base]
        got = [_wire(e) for e in sock.events]
        verdict.counts["events delivered"] += len(got)
        by_seq = {e["seq"]: e for e in expected}
        bad = [e for e in got if by_seq.get(e["seq"]) != e]
        for e in bad[:3]:
            verdict.fail(
                f"socket {sock.name}: seq {e['seq']} {e['event']} was delivered but the store has "
                f"{by_seq.get(e['seq'])}"
            )
        seqs = [e["seq"] for e in got]
        if len(set(seqs)) != len(seqs):
            verdict.fail(f"socket {sock.name}: {len(seqs) - len(set(seqs))} events twice")
        missing = sorted({e["seq"] for e in expected} - set(seqs))
        if missing:
            verdict.fail(
                f"socket {sock.name}: {len(missing)} committed events never delivered, "
                f"from seq {missing[0]}"
            )
        verdict.counts["sockets"] += 1


def _wire(e: Mapping[str, Any]) -> dict[str, Any]:
    return {k: e[k] for k in ("seq", "run_id", "event", "ts", "data")}
