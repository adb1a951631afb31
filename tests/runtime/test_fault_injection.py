"""Fault injection at every await point of a run, as a property (hypothesis).

An agent follows a random script (think, stage a row, checkpoint, tool call, sleep, hang), and
hypothesis injects faults: a crash at any step of any attempt, a failing tool, a store failure on
any commit, a cancellation at any moment, a hang past the heartbeat timeout, a short deadline.
After every example the invariants of the brief must hold:

2. every event a subscriber got was already committed (and the stream equals the store's);
3. seq is gapless;
4. nothing staged in a rolled-back unit is visible, and every attempt that did not complete
   has exactly one ``run_rolled_back`` (naming it), before the run's next ``run_state``;
5. restarts follow the policy (never more than ``max_restarts`` + 1 attempts);
6. the run's ``run_state`` events replay through the state machine.

It runs on the MemoryStore with trio's MockClock, so each example takes milliseconds.
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import attrs
import trio
import trio.testing
from helpers import assert_legal_runs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Insert, Integer, MetaData, String, Table, insert

import netra_actors as na
from netra_actors._uow import UnitOfWork
from netra_actors.testing import MemoryStore

tokens_md = MetaData()
token_rows = Table(
    "tokens", tokens_md, Column("id", Integer, primary_key=True), Column("token", String)
)

OPS = ["think", "row", "checkpoint", "tool_ok", "tool_err", "sleep"]
POLICY = na.policies.RestartPolicy(max_restarts=2, window=10_000, backoff_initial=0.5)


@attrs.define
class Ledger:
    """What the agent did, per token: staged, and confirmed committed (checkpoint returned)."""

    staged: set[str] = attrs.field(factory=set)
    confirmed: set[str] = attrs.field(factory=set)


LEDGERS: dict[str, Ledger] = {}


class Scripted(na.Agent):
    name = "scripted"
    restart_policy = POLICY
    liveness = na.policies.LivenessPolicy(heartbeat_timeout=30.0, run_timeout=500.0)

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        ledger = LEDGERS.setdefault(ctx.run_id, Ledger())
        ops: list[str] = input["ops"]
        crash_at: dict[str, int] = input["crash_at"]
        hang_at: dict[str, int] = input["hang_at"]
        pending: list[str] = []
        for i, op in enumerate(ops):
            token = f"{ctx.attempt}.{i}"
            if crash_at.get(str(ctx.attempt)) == i:
                raise RuntimeError(f"injected crash at step {i}")
            if hang_at.get(str(ctx.attempt)) == i:
                await trio.sleep(1000)  # no heartbeat: dead after 30 s
            if op == "think":
                await ctx.think(token)
                ledger.staged.add(token)
                pending.append(token)
            elif op == "row":
                replayed = ctx.replaying  # a row staged while replaying was committed before
                await ctx.stage(insert(token_rows).values(token=token))
                if not replayed:
                    ledger.staged.add(token)
                    pending.append(token)
            elif op == "checkpoint":
                await ctx.checkpoint()
                ledger.confirmed.update(pending)
                pending.clear()
            elif op in ("tool_ok", "tool_err"):

                def tool(fail: bool = op == "tool_err") -> str:
                    if fail:
                        raise ValueError("injected tool error")
                    return "ok"

                with contextlib.suppress(na.ToolError):  # recorded; the agent carries on
                    await ctx.tool("t", tool)
                ledger.confirmed.update(pending)  # a tool call checkpoints what came before
                pending.clear()
            else:
                await trio.sleep(1)
        return {"done": True}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    ops = draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=12))
    attempts = [str(a) for a in range(1, POLICY.max_restarts + 2)]
    crash_at = draw(
        st.dictionaries(st.sampled_from(attempts), st.integers(0, len(ops) - 1), max_size=3)
    )
    hang_at = draw(
        st.dictionaries(st.sampled_from(attempts), st.integers(0, len(ops) - 1), max_size=1)
    )
    return {
        "ops": ops,
        "crash_at": crash_at,
        "hang_at": hang_at,
        "fail_commits": draw(st.sets(st.integers(0, 15), max_size=3)),
        "cancel_at": draw(st.none() | st.floats(0, 20)),
        "run_timeout": draw(st.sampled_from([500.0, 3.5])),
    }


def run_scenario(sc: dict[str, Any]) -> None:
    commits = {"n": 0}

    def fail(user: str, unit: UnitOfWork) -> BaseException | None:
        runtime_owned = (
            not any(
                e.event in ("agent_thinking", "tool_executing", "tool_completed", "agent_completed")
                for e in unit.events
            )
            and not unit.statements
        )
        if runtime_owned:
            return None  # runtime notices are retried; a store that stays down is another test
        n = commits["n"]
        commits["n"] += 1
        return OSError(f"injected store failure #{n}") if n in sc["fail_commits"] else None

    store = MemoryStore(fail_when=fail)
    agent = type(
        "ScriptedVariant",
        (Scripted,),
        {
            "liveness": na.policies.LivenessPolicy(
                heartbeat_timeout=30.0, run_timeout=sc["run_timeout"]
            )
        },
    )
    delivered: list[na.Event] = []
    committed_at_delivery: list[bool] = []

    async def main() -> na.RunInfo:
        async with na.open_runtime(na.RuntimeConfig(), agents=[agent], store=store) as rt:
            sub = await rt.subscribe("u")
            run_id = await rt.start_run(
                "u", "scripted", {k: sc[k] for k in ("ops", "crash_at", "hang_at")}
            )

            async def cancel_later() -> None:
                await trio.sleep(sc["cancel_at"])
                with contextlib.suppress(
                    na.exceptions.IllegalStateError
                ):  # it may have ended already
                    await rt.cancel_run("u", run_id)

            async def read() -> None:
                while True:
                    for e in await sub.receive_batch():
                        stored = store.events.get("u", [])
                        committed_at_delivery.append(
                            e.seq <= len(stored) and stored[e.seq - 1] == e
                        )
                        delivered.append(e)

            async with trio.open_nursery() as n:
                n.start_soon(read)
                if sc["cancel_at"] is not None:
                    n.start_soon(cancel_later)
                info = await rt.wait_run("u", run_id)
                await trio.sleep(0.01)
                n.cancel_scope.cancel()
            return info

    info = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    events = store.events["u"]
    # 2: commit before send, and the delivered stream is the stored stream
    assert all(committed_at_delivery)
    assert delivered == events
    # 3: gapless
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # 6: legal transitions, and the final state is the run's
    assert assert_legal_runs(events)[info.run_id] is info.state
    # 4: staged work of rolled-back units never becomes visible
    ledger = LEDGERS.pop(info.run_id, Ledger())
    visible = {e.data["text"] for e in events if e.event == "agent_thinking"}
    visible |= {str(cast(Insert, t).compile().params["token"]) for _, t, _ in store.rows}
    assert ledger.confirmed <= visible, "a confirmed checkpoint is missing from the store"
    assert visible <= ledger.staged
    # 4 & 5: one rollback per attempt that did not complete, each naming its attempt
    rollbacks = [e.data for e in events if e.event == "run_rolled_back"]
    attempts = info.attempt
    assert attempts <= POLICY.max_restarts + 1
    failed_attempts = attempts if info.state is not na.RunState.COMPLETED else attempts - 1
    got = [r["attempt"] for r in rollbacks]
    if len(got) == failed_attempts + 1:
        # it ended (cancel/timeout/dead) while waiting to restart: that ending has its own
        # rollback too, naming the last attempt, after the crash's ``will_restart: true``
        assert rollbacks[-1]["reason"] in ("cancelled", "timeout", "dead")
        assert rollbacks[-2]["will_restart"] is True
        got = got[:-1]
        assert rollbacks[-1]["attempt"] == attempts
    assert got == list(range(1, failed_attempts + 1))
    assert all(r["will_restart"] for r in rollbacks[:-1])
    if rollbacks and info.state is not na.RunState.COMPLETED:
        assert rollbacks[-1]["will_restart"] is False
    if info.state is na.RunState.CANCELLED:
        assert rollbacks[-1]["reason"] == "cancelled"
    if info.state is na.RunState.FAILED:
        assert {r["reason"] for r in rollbacks} <= {"crash", "store_error"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants_hold_under_injected_faults(sc: dict[str, Any]) -> None:
    run_scenario(sc)


def test_a_scenario_with_every_fault_at_once() -> None:
    run_scenario(
        {
            "ops": ["think", "row", "checkpoint", "tool_err", "think", "sleep", "tool_ok", "row"],
            "crash_at": {"1": 4},
            "hang_at": {"2": 5},
            "fail_commits": {2},
            "cancel_at": None,
            "run_timeout": 500.0,
        }
    )
