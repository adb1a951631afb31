"""A run's attempts, read back from its committed events: what the inspector draws.

Pure: committed :class:`~._values.Event` values in, JSON-ready dicts out (no I/O, no clock).

* An **attempt** starts at its ``agent_started`` and ends at its ``run_rolled_back`` (with the
  reason and error), its ``agent_completed``, or the run's final ``run_state``; a live run's last
  attempt has no end.
* Its **tool steps** are its ``tool_executing`` / ``tool_completed`` pairs (by ``call_id``).
* Its **replayed steps** commit nothing (``_toolcall.py``), so they are derived the way the
  supervisor's journal is built (``_core/_journal.py``): every earlier attempt's committed calls
  are the journal, and a restarted attempt replays the journal's steps that succeeded, in order,
  up to its first real call — or up to the step a ``tool_replay_diverged`` names. An attempt
  that made no real call replayed *at most* the journal's successful steps: those are marked
  ``exact: false``. (Calls made with ``replay=False`` or concurrently take no step; the
  derivation cannot tell them apart and counts them as steps.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ._values import JSON, Event, RunInfo

FINAL_STATES = frozenset({"completed", "failed", "timeout", "dead", "cancelled"})
SUMMARY_CHARS = 160


def _short(value: JSON) -> str:
    text = value if isinstance(value, str) else _compact(value)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _compact(value: JSON) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v)}" for k, v in value.items())
    return repr(value) if isinstance(value, str) else str(value)


def summary(event: str, data: dict[str, Any]) -> str:
    """One line saying what an event is, for the event list."""
    if event == "run_state":
        text = f"{data.get('previous') or '∅'} → {data.get('state')}"
        return text + (f" ({data['reason']})" if data.get("reason") else "")
    if event == "agent_started":
        return f"attempt {data.get('attempt')} of {data.get('agent')}"
    if event == "run_rolled_back":
        restart = ", will restart" if data.get("will_restart") else ""
        return _short(f"{data.get('reason')}{restart}: {data.get('error', '')}")
    if event == "tool_executing":
        return _short(f"{data.get('tool')}({_compact(data.get('args'))})")
    if event == "tool_completed":
        if "error" in data:
            return _short(f"{data.get('tool')} failed: {data['error']}")
        return _short(f"{data.get('tool')} → {_compact(data.get('result'))}")
    if event == "tool_replay_diverged":
        expected, actual = data.get("expected") or {}, data.get("actual") or {}
        return f"step {data.get('step')}: expected {expected.get('tool')}, got {actual.get('tool')}"
    for key in ("text", "prompt", "result", "input"):
        if key in data:
            return _short(data[key])
    return _short(data)


class _Attempt:
    def __init__(self, number: int, start: float) -> None:
        self.number = number
        self.start = start
        self.end: float | None = None
        self.outcome = "running"
        self.rollback: dict[str, JSON] | None = None
        self.tools: dict[str, dict[str, JSON]] = {}
        self.calls: list[tuple[str, str]] = []
        """(name, canonical args) of its real calls, in order."""
        self.diverged: list[dict[str, JSON]] = []
        self.asks: list[dict[str, JSON]] = []
        self.replayed: list[dict[str, JSON]] = []

    def to_json(self) -> dict[str, JSON]:
        return {
            "attempt": self.number,
            "start": self.start,
            "end": self.end,
            "outcome": self.outcome,
            "rollback": self.rollback,
            "tools": list(self.tools.values()),
            "replayed": self.replayed,
            "diverged": self.diverged,
            "asks": self.asks,
        }


class _Journal:
    """The run's journal as the supervisor keeps it: (name, args, ok) per step."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str, bool]] = []

    def replay(self, attempt: _Attempt) -> None:
        """Decide which steps ``attempt`` replayed, then record its own calls."""
        ok_prefix = 0
        while ok_prefix < len(self.steps) and self.steps[ok_prefix][2]:
            ok_prefix += 1
        exact = True
        if attempt.diverged:
            replayed = min(ok_prefix, int(attempt.diverged[0].get("step") or 1) - 1)
        elif attempt.calls:
            replayed = ok_prefix
        else:
            replayed, exact = ok_prefix, attempt.outcome == "completed"
        attempt.replayed = [
            {"step": k + 1, "tool": self.steps[k][0], "exact": exact} for k in range(replayed)
        ]
        if attempt.diverged:
            del self.steps[replayed:]
        step = replayed
        outcomes = [tool.get("status") == "ok" for tool in attempt.tools.values()]
        for (name, args), ok in zip(attempt.calls, outcomes, strict=False):
            entry = (name, args, ok)
            if step < len(self.steps):
                if self.steps[step][:2] != entry[:2]:
                    del self.steps[step + 1 :]
                self.steps[step] = entry
            else:
                self.steps.append(entry)
            step += 1


def timeline(run: RunInfo, events: Sequence[Event], *, truncated: bool = False) -> dict[str, JSON]:
    """The picture of one run: its attempts (see the module doc) and its event list."""
    attempts: list[_Attempt] = []
    listed: list[dict[str, JSON]] = []
    for ev in events:
        data = ev.data
        current = attempts[-1] if attempts else None
        _apply(ev, data, current, attempts)
        listed.append(
            {
                "seq": ev.seq,
                "ts": ev.ts,
                "event": ev.event,
                "attempt": attempts[-1].number if attempts else 0,
                "summary": summary(ev.event, data),
            }
        )
    if attempts and run.state.value == "running" and attempts[-1].end is None:
        last = attempts[-1]
        if last.asks and last.asks[-1].get("answered") is False:
            last.outcome = "waiting"
    journal = _Journal()
    for attempt in attempts:
        journal.replay(attempt)
    return {
        "run": _run_json(run),
        "start": events[0].ts if events else run.created_at,
        "end": None if run.state.is_live else run.updated_at,
        "attempts": [a.to_json() for a in attempts],
        "events": listed,
        "truncated": truncated,
    }


def _apply(ev: Event, data: dict[str, Any], current: _Attempt | None, out: list[_Attempt]) -> None:
    name = ev.event
    if name == "agent_started":
        out.append(_Attempt(int(data.get("attempt") or len(out) + 1), ev.ts))
        return
    if current is None or current.end is not None:
        if name == "run_state" and data.get("state") in FINAL_STATES and current is not None:
            current.end = current.end or ev.ts
        return
    if name == "tool_executing":
        call_id = str(data.get("call_id"))
        current.tools[call_id] = {
            "call_id": call_id,
            "tool": data.get("tool"),
            "start": ev.ts,
            "end": None,
            "status": "running",
            "summary": summary(name, data),
        }
        current.calls.append((str(data.get("tool")), _compact(data.get("args"))))
    elif name == "tool_completed":
        tool = current.tools.get(str(data.get("call_id")))
        if tool is not None:
            tool.update(end=ev.ts, status="error" if "error" in data else "ok")
    elif name == "tool_replay_diverged":
        current.diverged.append({"ts": ev.ts, **data})
    elif name == "input_requested":
        current.asks.append(
            {"ts": ev.ts, "prompt": _short(data.get("prompt", "")), "answered": False}
        )
    elif name == "run_input" and current.asks:
        current.asks[-1]["answered"] = True
    elif name == "run_rolled_back":
        current.end, current.outcome = ev.ts, "rolled_back"
        current.rollback = {
            "reason": data.get("reason"),
            "error": data.get("error"),
            "will_restart": data.get("will_restart"),
        }
    elif name == "agent_completed":
        current.end, current.outcome = ev.ts, "completed"
    elif name == "run_state" and data.get("state") in FINAL_STATES:
        current.end, current.outcome = ev.ts, str(data.get("state"))


def _run_json(run: RunInfo) -> dict[str, JSON]:
    out = run.to_wire()
    out.update(user_id=run.user_id, live=run.state.is_live, input=run.input)
    return out


def runs_json(runs: Iterable[RunInfo]) -> list[dict[str, JSON]]:
    """The runs of a user, as the inspector lists them."""
    return [_run_json(run) for run in runs]
