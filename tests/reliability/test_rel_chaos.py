"""Issue 18's chaos test, short: servers lose their processes while durable runs are live.

3 real ``netra-actors serve`` processes on one fresh PostgreSQL database (60 s of faults) and on
one SQLite file (30 s): a random server is killed (``kill -9``), paused past the lease TTL
(SIGSTOP/SIGCONT) or restarted (SIGTERM) every ~4 s while ``durable_steps`` runs (8 tool steps,
each appending its effect with its idempotency key to a side-effect log) and ``durable_ask`` runs
(answered with ``send_input`` through a random server) are live; every user has two sockets that
reconnect to random servers with ``resume_from``. Then :func:`benchmarks.harness.chaos_check.check`
compares the store, the sockets and the side-effect log (the promises are listed there). The full
size (3 minutes, 200 runs) is ``./run bench chaos`` (docs/benchmarks.md, docs/reliability.md).

The checker's own tests come first: fed a record that breaks one promise, it must say so.
"""

from __future__ import annotations

import asyncio
import copy
import os
import random
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness.chaos import ChaosPlan, run_chaos
from benchmarks.harness.chaos_check import Request, SocketRecord, check
from benchmarks.harness.durable_cluster import database
from benchmarks.harness.postgres import PgUnavailable

# -- the checker can fail ---------------------------------------------------------------------

RUN = "r_1"
USER = "u"


def _event(seq: int, name: str, data: dict[str, Any], run: str | None = RUN) -> dict[str, Any]:
    return {"seq": seq, "run_id": run, "event": name, "ts": 1000.0 + seq, "data": data}


def _good_run(lost: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One completed ``durable_steps`` run of 2 steps (lost once after step 1 if ``lost``)."""
    evs: list[tuple[str, dict[str, Any]]] = [
        ("message", {"role": "user", "text": '{"tag": "t1"}'}),
        ("run_state", {"state": "pending", "previous": None}),
        ("run_state", {"state": "starting", "previous": "pending"}),
        ("run_state", {"state": "running", "previous": "starting"}),
        ("agent_started", {"attempt": 1}),
    ]
    effects = []
    for step in (1, 2):
        key = f"{RUN}:{step}:abc{step}"
        evs.append(("agent_thinking", {"text": f"step {step}"}))
        evs.append(("tool_executing", {"tool": "effect", "args": {"step": step}, "call_id": "c"}))
        evs.append(("tool_completed", {"tool": "effect", "result": {"step": step, "key": key}}))
        effects.append({"key": key, "run": RUN, "step": step})
        if lost and step == 1:
            evs.append(("run_rolled_back", {"reason": "lost", "attempt": 1, "will_restart": True}))
            evs.append(("run_state", {"state": "starting", "previous": "running",
                                      "reason": "recovered"}))  # fmt: skip
            evs.append(("run_state", {"state": "running", "previous": "starting"}))
            effects.append({"key": f"{RUN}:2:abc2", "run": RUN, "step": 2})  # in flight
    evs += [
        ("message", {"role": "assistant", "text": "done t1"}),
        ("agent_completed", {"result": {}}),
        ("run_state", {"state": "completing", "previous": "running"}),
        ("run_state", {"state": "completed", "previous": "completing"}),
    ]
    return [_event(i + 1, n, d) for i, (n, d) in enumerate(evs)], effects


def _verdict(
    stored: list[dict[str, Any]],
    effects: list[dict[str, Any]],
    delivered: list[dict[str, Any]] | None = None,
    state: str = "completed",
) -> list[str]:
    sock = SocketRecord(name="s", user=USER, base=0, events=delivered or copy.deepcopy(stored))
    request = Request(user=USER, tag="t1", agent="durable_steps", steps=2)
    verdict = check({USER: stored}, {(USER, RUN): {"state": state}}, [sock], effects, [request])
    return verdict.problems


def test_the_checker_accepts_a_run_that_kept_every_promise() -> None:
    stored, effects = _good_run()
    assert _verdict(stored, effects) == []
    stored, effects = _good_run(lost=True)
    assert _verdict(stored, effects) == []  # a step in flight at a loss: one more effect


def test_the_checker_finds_each_broken_promise() -> None:
    stored, effects = _good_run()
    # a run ended dead (today's kill -9): not completed, steps missing
    dead = [*stored[:9], _event(10, "run_rolled_back", {"reason": "dead", "will_restart": False}),
            _event(11, "run_state", {"state": "dead", "previous": "running"})]  # fmt: skip
    assert any("ended ['dead']" in p for p in _verdict(dead, effects[:1], state="dead"))
    # an effect twice without a loss; an effect with another step's key; none at all
    assert any("2 effects after 0 losses" in p for p in _verdict(stored, [*effects, effects[0]]))
    wrong = [*effects, {"key": effects[0]["key"], "run": RUN, "step": 2}]
    assert any("names several steps" in p for p in _verdict(stored, wrong))
    assert any("no effect with its key" in p for p in _verdict(stored, effects[:1]))
    # a message committed twice (a replay that committed again)
    twice = [*stored[:-2], _event(len(stored) - 1, "message", {"role": "assistant", "text": "x"})]
    twice += [dict(e, seq=e["seq"] + 1) for e in stored[-2:]]
    assert any("2 x message (assistant)" in p for p in _verdict(twice, effects))
    # delivered but never committed; committed but never delivered; a seq gap in the store
    extra = [*copy.deepcopy(stored), _event(len(stored) + 1, "agent_thinking", {"text": "?"})]
    assert any("delivered but the store has None" in p for p in _verdict(stored, effects, extra))
    assert any("never delivered" in p for p in _verdict(stored, effects, stored[:-3]))
    gap = [*stored[:3], *stored[4:]]
    assert any("stored seq is not" in p for p in _verdict(gap, effects, gap))
    # a run nobody asked for
    other = [_event(len(stored) + 1, "message", {"role": "user", "text": '{"tag": "zz"}'}, "r_2")]
    assert any("nobody asked for" in p for p in _verdict([*stored, *other], effects))


# -- the chaos run itself -------------------------------------------------------------------------


def _chaos(kind: str, plan: ChaosPlan, tmp_path: Path) -> None:
    try:
        with database(kind, tmp_path) as store:
            result = asyncio.run(run_chaos(plan, store, tmp_path))
    except PgUnavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")
    counts = dict(result.verdict.counts)
    print(f"[figures] chaos {kind}: seed {plan.seed} faults {dict(result.faults)} "
          f"{round(result.seconds, 1)} s, settle {round(result.settle_seconds, 1)} s, "
          f"resent {result.resent}: {counts}")  # fmt: skip
    assert result.verdict.ok, "\n".join(result.verdict.problems[:40])
    assert sum(result.faults.values()) >= 3, result.faults  # the faults did happen
    assert counts.get("rollbacks lost", 0) >= 1, counts  # and hit live runs


def _seed() -> int:
    seed = int(os.environ.get("NETRA_CHAOS_SEED", str(random.randrange(1 << 30))))
    print(f"seed {seed} (set NETRA_CHAOS_SEED to replay the same fault schedule)")
    return seed


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_chaos_on_postgresql(tmp_path: Path) -> None:
    plan = ChaosPlan(seconds=60, users=6, runs=30, asks=8, pause=0.6, ttl=2.0, seed=_seed())
    _chaos("postgres", plan, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_on_one_sqlite_file(tmp_path: Path) -> None:
    plan = ChaosPlan(seconds=30, users=4, runs=14, asks=4, pause=0.6, ttl=2.0, seed=_seed())
    _chaos("sqlite", plan, tmp_path)
