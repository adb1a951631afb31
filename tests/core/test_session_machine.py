"""The rules of one user's session (``netra_actors._core._session`` and its siblings
``_admission``, ``_inputs``, ``_recovery``), tested like ``test_lifecycle.py``: a stateful test
drives random causes against an independent model written here, plus one test per rule.

The model's contract, from the modules' documentation:

* admission checks, in order: unknown agent, input not JSON, input too large, unknown busy
  policy, too many live runs; then with live runs ``parallel`` starts, ``reject`` refuses,
  ``enqueue`` queues behind every live run, ``interrupt`` cancels every live run that is not
  ``completing``;
* a run scheduled for later (``start_at``) does not make the user busy (it is neither refused,
  waited for nor interrupted by a new run), and is itself admitted as ``parallel``;
* a queued run's turn comes once every run it waited for ended, in admission order;
* an attempt takes the run's recorded inputs first; with none left the run waits for its answer
  as a row (no attempt runs); ``send_input`` is taken in ``pending``/``starting``/``running`` up
  to ``max_inputs``, and the input that answers a waiting run starts its next attempt, which
  takes the inputs from the first again;
* the session is idle when every live run waits as a row (for an answer, a timer, its start)
  and its shell is quiet; it may stop ``idle_timeout`` after it became idle; its next deadline
  is the earliest of its runs' wake-ups and, when idle, of the idle timeout.
"""

from __future__ import annotations

from collections import Counter

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from netra_actors._core import LivenessPolicy, RestartPolicy, RunState
from netra_actors._core import _admission as admission
from netra_actors._core import _inputs as inputs
from netra_actors._core import _lifecycle as lc
from netra_actors._core._recovery import StoredRun, recover
from netra_actors._core._session import LiveRun, Session, SessionRules, retry_delay
from netra_actors._exceptions import (
    BusyError,
    CommandError,
    IllegalStateError,
    MailboxFullError,
    TooLargeError,
    UnknownAgentError,
)

S = RunState
NO_LIMITS = LivenessPolicy(heartbeat_timeout=None, run_timeout=None)
RULES = SessionRules(max_live_runs=4, max_inputs=2, max_input_chars=10, idle_timeout=5.0)


class Shell:
    def __init__(self, quiet: bool = True) -> None:
        self.is_quiet = quiet

    def quiet(self) -> bool:
        return self.is_quiet


def new_session(rules: SessionRules = RULES) -> Session[LiveRun]:
    return Session(rules)


def start(
    session: Session[LiveRun], run_id: str, policy: str | None = None, now: float = 0.0
) -> LiveRun:
    """Admit and begin an async run (carrying out its interrupts), as the shell does."""
    admitted = admission.admit(
        session.runs.values(),
        session.rules,
        agent="a",
        known=True,
        input_json="1",
        policy=policy,
    )
    for other_id, plan in admitted.interrupts:
        session.runs[other_id].life = plan.life
        session.ended(other_id)
    plan = admission.begin(
        admitted, now=now, threaded=False, restart=RestartPolicy(), liveness=NO_LIMITS
    )
    run = LiveRun(run_id=run_id, life=plan.life)
    session.add(run, admitted.blockers)
    return run


def turns(session: Session[LiveRun], now: float = 0.0) -> list[str]:
    started = []
    while (turn := session.next_turn(now)) is not None:
        run, plan = turn
        run.life = plan.life
        started.append(run.run_id)
    return started


# ------------------------------------------------------------------------------- the model


class Model:
    """The session's runs in admission order: what each waits for, and its inputs."""

    def __init__(self) -> None:
        self.live: dict[str, set[str] | None] = {}  # run id -> queued behind (None: started)
        self.inputs: dict[str, int] = {}
        self.consumed: dict[str, int] = {}
        self.waiting: dict[str, bool] = {}
        """The run waits for its answer as a row."""
        self.scheduled: dict[str, float] = {}
        """Runs that start later: when."""

    def busy(self) -> list[str]:
        return [r for r in self.live if r not in self.scheduled]

    def admit(
        self, policy: str, known: bool, size: int | None, scheduled: bool = False
    ) -> str | set[str]:
        """The error's name, or the runs to interrupt."""
        if not known:
            return "unknown"
        if size is None:
            return "not json"
        if size > RULES.max_input_chars:
            return "too large"
        if policy not in ("parallel", "reject", "enqueue", "interrupt"):
            return "policy"
        if len(self.live) >= RULES.max_live_runs:
            return "full"
        if scheduled:
            return set()
        if self.busy() and policy == "reject":
            return "busy"
        return set(self.busy()) if policy == "interrupt" else set()

    def add(self, run_id: str, policy: str, start_at: float | None = None) -> None:
        queued = bool(self.busy()) and policy == "enqueue" and start_at is None
        self.live[run_id] = set(self.busy()) if queued else None
        self.inputs[run_id] = self.consumed[run_id] = 0
        self.waiting[run_id] = False
        if start_at is not None:
            self.scheduled[run_id] = start_at

    def idle(self) -> bool:
        """Every live run waits as a row."""
        return all(self.waiting[r] or r in self.scheduled for r in self.live)

    def end(self, run_id: str) -> None:
        del self.live[run_id]
        self.scheduled.pop(run_id, None)
        for blockers in self.live.values():
            if blockers is not None:
                blockers.discard(run_id)

    def turns(self) -> list[str]:
        due = [r for r, b in self.live.items() if b is not None and not b]
        for r in due:
            self.live[r] = None
        return due


POLICIES = st.sampled_from(
    ["parallel", "reject", "enqueue", "interrupt", "parallel", "enqueue", "enqueue", "later"]
)
SIZES = st.sampled_from([1] * 8 + [5, 10, 11, None])  # 10: exactly the limit
COVERAGE: Counter[str] = Counter()


class SessionVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.session = new_session()
        self.model = Model()
        self.count = 0
        self.now = 0.0

    def _pick(self, data: st.DataObject) -> LiveRun | None:
        if not self.session.runs:
            return None
        run_id = data.draw(st.sampled_from(sorted(self.session.runs)))
        return self.session.runs[run_id]

    @rule(
        policy=POLICIES,
        known=st.sampled_from([True] * 6 + [False]),
        size=SIZES,
        later=st.sampled_from([None] * 5 + [100.0, 1000.0]),
    )
    def start(self, policy: str, known: bool, size: int | None, later: float | None) -> None:
        start_at = None if later is None else self.now + later
        expected = self.model.admit(policy, known, size, scheduled=start_at is not None)
        errors = {
            "unknown": UnknownAgentError,
            "not json": CommandError,
            "too large": TooLargeError,
            "policy": CommandError,
            "full": MailboxFullError,
            "busy": BusyError,
        }
        input_json = None if size is None else "x" * size

        def call() -> admission.Admission:
            return admission.admit(
                self.session.runs.values(),
                RULES,
                agent="a",
                known=known,
                input_json=input_json,
                policy=policy,
                scheduled=start_at is not None,
            )

        if isinstance(expected, str):
            with pytest.raises(errors[expected]):
                call()
            COVERAGE[f"refused {expected}"] += 1
            return
        admitted = call()
        if size == RULES.max_input_chars:
            COVERAGE["admitted at the size limit"] += 1
        completing = {r for r, run in self.session.runs.items() if run.life.state is S.COMPLETING}
        assert {r for r, _ in admitted.interrupts} == expected - completing
        for run_id, plan in admitted.interrupts:
            assert plan.life.state is S.CANCELLED
            self.session.runs[run_id].life = plan.life
            self.session.ended(run_id)
            self.model.end(run_id)
        self.count += 1
        run_id = f"r{self.count}"
        plan = admission.begin(
            admitted,
            now=self.now,
            threaded=False,
            restart=RestartPolicy(),
            liveness=NO_LIMITS,
            start_at=start_at,
        )
        self.session.add(LiveRun(run_id=run_id, life=plan.life), admitted.blockers)
        self.model.add(run_id, policy, start_at)
        assert (plan.life.wait is lc.Wait.QUEUE) == (self.model.live[run_id] is not None)
        assert (plan.life.wait is lc.Wait.SCHEDULED) == (start_at is not None)
        if start_at is not None:
            COVERAGE["admitted scheduled"] += 1
            if len(self.model.live) > 1:
                COVERAGE["scheduled beside live runs"] += 1
            return
        busy = len(self.model.busy()) > 1
        if len(self.model.live) > len(self.model.busy()) and not busy and policy != "parallel":
            COVERAGE["not busy beside a scheduled run"] += 1
        COVERAGE[f"admitted {policy}{' queued' if self.model.live[run_id] else ''}"] += 1

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        run = self._pick(data)
        if run is None or run.life.running_attempt is None:
            return
        plan = lc.on_finish(run.life, attempt=run.life.attempt)
        assert plan is not None
        run.life = plan.life
        self.session.ended(run.run_id)
        self.model.end(run.run_id)
        COVERAGE["finished"] += 1

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        run = self._pick(data)
        if run is None:
            return
        plan = self.session.cancel(run)
        run.life = plan.life
        self.session.ended(run.run_id)
        self.model.end(run.run_id)
        COVERAGE["cancelled"] += 1

    @rule()
    def take_turns(self) -> None:
        due = self.session.turns_due
        started = turns(self.session, self.now)
        assert started == self.model.turns()
        if started:
            assert due
            COVERAGE["turns"] += 1
        assert not self.session.turns_due

    @rule(data=st.data())
    def ask(self, data: st.DataObject) -> None:
        run = self._pick(data)
        if run is None or run.life.running_attempt is None:
            return
        m = self.model
        rid = run.run_id
        if m.consumed[rid] < m.inputs[rid]:
            m.consumed[rid] += 1
            assert inputs.ask(run) == f"{m.consumed[rid]}"
            COVERAGE["answered from inputs"] += 1
            if m.consumed[rid] < m.inputs[rid]:
                COVERAGE["answered with a later input recorded"] += 1
        else:
            assert inputs.ask(run) is None
            plan = lc.on_wait(run.life, attempt=run.life.attempt, wait=lc.Wait.INPUT)
            assert plan is not None
            assert plan.stop_attempt
            run.life = plan.life  # as the shell does once the question committed
            m.waiting[rid] = True
            COVERAGE["waits for its answer"] += 1

    @rule(data=st.data())
    def send_input(self, data: st.DataObject) -> None:
        run = self._pick(data)
        if run is None:
            return
        m = self.model
        rid = run.run_id
        value = f"{m.inputs[rid] + 1}"
        if m.inputs[rid] >= RULES.max_inputs:
            with pytest.raises(MailboxFullError):
                inputs.accept_input(run, value, RULES)
            COVERAGE["too many inputs"] += 1
            return
        assert inputs.accept_input(run, value, RULES) == value
        m.inputs[rid] += 1
        answers = inputs.answers(run)
        assert answers == m.waiting[rid]
        inputs.input_committed(run, value)
        if answers:  # its next attempt starts (as the shell does: a new attempt)
            plan = lc.on_wake(run.life, now=self.now)
            assert plan is not None
            assert plan.spawn
            run.life = plan.life
            run.new_attempt()
            m.waiting[rid] = False
            m.consumed[rid] = 0
            COVERAGE["input to a waiting run"] += 1

    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        run = self._pick(data)
        if run is None or run.life.running_attempt is None:
            return
        run.new_attempt()
        self.model.consumed[run.run_id] = 0

    @rule(dt=st.sampled_from([0.0, 1.0, 4.0, 5.0, 10.0]), quiet=st.booleans())
    def time_passes(self, dt: float, quiet: bool) -> None:
        before = self.session.idle_since
        self.now += dt
        shell = Shell(quiet)
        due = self.session.next_deadline(self.now, shell)
        starts = min(self.model.scheduled.values(), default=None)  # no other run has a deadline
        idle = self.model.idle() and quiet
        if not idle:
            assert self.session.idle_since is None
            assert due == starts
            assert not self.session.may_passivate(self.now, shell)
            return
        since = self.now if before is None else before
        assert self.session.idle_since == since
        idle_at = since + RULES.idle_timeout
        assert due == (idle_at if starts is None else min(idle_at, starts))
        assert self.session.may_passivate(self.now, shell) == (self.now >= idle_at)
        if self.now >= idle_at:
            COVERAGE["may passivate"] += 1
            if self.model.live:
                COVERAGE["may passivate with runs waiting as rows"] += 1

    @invariant()
    def matches_model(self) -> None:
        session, model = self.session, self.model
        assert list(session.runs) == list(model.live)
        # Each queued run waits for every run admitted before it, so at most one queued run's
        # turn has come at any moment: the order in which due runs start cannot be observed.
        assert sum(1 for run in session.runs.values() if run.blockers == set()) <= 1
        for run_id, run in session.runs.items():
            assert run.blockers == model.live[run_id]
            assert (run.life.wait is lc.Wait.QUEUE) == (
                model.live[run_id] is not None or run.blockers is not None
            ) or run.blockers is None
            assert len(run.inputs) == model.inputs[run_id]
            assert run.consumed == model.consumed[run_id]
            assert (run.life.wait is lc.Wait.INPUT) == model.waiting[run_id]
            assert (run.life.wait is lc.Wait.SCHEDULED) == (run_id in model.scheduled)


def test_session_vs_model() -> None:
    COVERAGE.clear()
    run_state_machine_as_test(
        SessionVsModel,
        settings=settings(
            max_examples=400,
            stateful_step_count=50,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    for needed in [
        "refused unknown",
        "refused not json",
        "refused too large",
        "refused policy",
        "refused full",
        "refused busy",
        "admitted enqueue queued",
        "admitted interrupt",
        "admitted parallel",
        "finished",
        "cancelled",
        "turns",
        "answered from inputs",
        "answered with a later input recorded",
        "admitted at the size limit",
        "waits for its answer",
        "too many inputs",
        "input to a waiting run",
        "may passivate",
        "may passivate with runs waiting as rows",
        "admitted scheduled",
        "scheduled beside live runs",
        "not busy beside a scheduled run",
    ]:
        assert needed in COVERAGE, (needed, sorted(COVERAGE))


# ------------------------------------------------------------------------------ each rule


def test_enqueued_runs_start_in_order_once_the_runs_before_them_ended() -> None:
    session = new_session()
    first = start(session, "a")
    start(session, "b", "enqueue")
    start(session, "c", "enqueue")
    assert session.runs["b"].blockers == {"a"}
    assert session.runs["c"].blockers == {"a", "b"}
    assert turns(session) == []
    first.life = lc.on_cancel(first.life).life
    session.ended("a")
    assert session.turns_due
    assert turns(session) == ["b"]
    assert session.runs["b"].life.state is S.RUNNING
    session.runs["b"].life = lc.on_cancel(session.runs["b"].life).life
    session.ended("b")
    assert turns(session) == ["c"]


def test_interrupt_leaves_a_completing_run_to_finish() -> None:
    session = new_session()
    a = start(session, "a")
    start(session, "b")
    a.life = attrs.evolve(a.life, state=S.COMPLETING)
    admitted = admission.admit(
        session.runs.values(), RULES, agent="x", known=True, input_json="1", policy="interrupt"
    )
    assert [r for r, _ in admitted.interrupts] == ["b"]
    assert admitted.interrupts[0][1].life.state is S.CANCELLED
    assert admitted.interrupts[0][1].life.reason == "cancelled"


def test_admission_checks_in_order() -> None:
    session = new_session(SessionRules(max_live_runs=1))
    start(session, "a")
    with pytest.raises(UnknownAgentError):
        admission.admit([], RULES, agent="x", known=False, input_json=None, policy="bad")
    with pytest.raises(CommandError, match="JSON"):
        admission.admit([], RULES, agent="x", known=True, input_json=None, policy="bad")
    with pytest.raises(CommandError, match="if_busy"):
        admission.admit([], RULES, agent="x", known=True, input_json="1", policy="bad")
    with pytest.raises(MailboxFullError):
        admission.admit(
            session.runs.values(),
            session.rules,
            agent="x",
            known=True,
            input_json="1",
            policy="reject",
        )


def test_send_input_only_while_the_run_may_take_it() -> None:
    session = new_session()
    run = start(session, "a")
    run.life = lc.on_cancel(run.life).life
    with pytest.raises(IllegalStateError):
        inputs.accept_input(run, "1", RULES)


def test_a_new_attempt_takes_the_inputs_from_the_first_again() -> None:
    run = start(new_session(), "a")
    inputs.input_committed(run, "1")
    inputs.input_committed(run, "2")
    assert [inputs.ask(run), inputs.ask(run), inputs.ask(run)] == ["1", "2", None]
    run.new_attempt()
    assert [inputs.ask(run), inputs.ask(run)] == ["1", "2"]


def test_the_next_deadline_is_the_earliest_of_the_runs_and_idle() -> None:
    session = new_session()
    shell = Shell()
    assert session.next_deadline(10.0, shell) == 15.0
    assert session.next_deadline(12.0, shell) == 15.0  # the idle clock keeps its start
    run = LiveRun(
        run_id="a",
        life=lc.begin(
            now=12.0,
            threaded=False,
            restart=RestartPolicy(),
            liveness=LivenessPolicy(heartbeat_timeout=None, run_timeout=3.0),
        ).life,
    )
    session.add(run)
    assert session.next_deadline(12.0, shell) == 15.0  # the run's deadline; not idle
    assert session.idle_since is None
    assert [r.run_id for r, _ in session.ticks(15.0)] == ["a"]
    assert list(session.ticks(14.0)) == []


def test_commit_retry_backs_off_then_gives_up() -> None:
    assert [retry_delay(n, retries=3) for n in (1, 2, 3)] == [0.1, 0.2, None]
    assert retry_delay(1, retries=1) is None


def test_recovery_keeps_waiting_and_queued_runs_and_resumes_started_runs() -> None:
    def stored(
        run_id: str,
        state: RunState,
        queued: bool = False,
        runnable: bool = True,
        wait: lc.Wait = lc.Wait.NONE,
        wake_at: float | None = None,
    ) -> StoredRun:
        return StoredRun(
            run_id=run_id,
            state=state,
            attempt=1 if state is not S.PENDING else 0,
            queued=queued,
            runnable=runnable,
            threaded=False,
            restart=RestartPolicy(),
            liveness=NO_LIMITS,
            wait=wait,
            wake_at=wake_at,
        )

    done = recover(
        [
            stored("a", S.RUNNING),
            stored("b", S.PENDING),
            stored("c", S.PENDING, queued=True),
            stored("d", S.PENDING, queued=True, runnable=False),
            stored("w", S.RUNNING, wait=lc.Wait.INPUT),
            stored("s", S.PENDING, wait=lc.Wait.SCHEDULED, wake_at=50.0),
            stored("e", S.PENDING, queued=True),
        ],
        now=0.0,
    )
    assert [r.plan.life.state for r in done] == [
        *(S.STARTING, S.RUNNING, S.PENDING, S.FAILED),
        *(S.RUNNING, S.PENDING, S.PENDING),
    ]
    assert done[0].plan.steps[0].reason == "lost"  # type: ignore[union-attr]
    assert [r.plan.life.wait for r in done][4:6] == [lc.Wait.INPUT, lc.Wait.SCHEDULED]
    assert [r.plan.steps for r in done][4:6] == [(), ()]  # they keep waiting: nothing commits
    # a queued run waits for the runs before it that stay live (not for one that starts later)
    assert [r.blockers for r in done] == [
        None,
        None,
        {"a", "b"},
        None,
        None,
        None,
        {"a", "b", "c", "w"},
    ]


def test_a_scheduled_run_neither_makes_the_user_busy_nor_waits() -> None:
    session = new_session()
    later = admission.begin(
        admission.admit([], RULES, agent="a", known=True, input_json="1", policy="reject"),
        now=0.0,
        threaded=False,
        restart=RestartPolicy(),
        liveness=NO_LIMITS,
        start_at=100.0,
    )
    session.add(LiveRun(run_id="later", life=later.life))
    assert session.only_waiting()
    now = admission.admit(
        session.runs.values(), RULES, agent="a", known=True, input_json="1", policy="reject"
    )
    assert now == admission.Admission()  # not refused, not queued behind it
    start(session, "b", "enqueue")
    assert session.runs["b"].blockers is None
    assert [r.run_id for r, _ in session.ticks(100.0)] == ["later"]


def test_runs_due_together_are_planned_earliest_first_each_once() -> None:
    session = new_session()
    dues = {"a": 30.0, "b": 10.0, "c": 20.0, "d": 10.0, "e": 99.0}  # admitted in this order
    for run_id, due in dues.items():
        begun = lc.begin(now=0.0, threaded=False, restart=RestartPolicy(), liveness=NO_LIMITS)
        sleeps = lc.on_wait(begun.life, attempt=1, wait=lc.Wait.TIMER, wake_at=due)
        assert sleeps is not None
        session.add(LiveRun(run_id=run_id, life=sleeps.life))
    plans = session.ticks(50.0)
    # due order; a tie keeps the order the runs were admitted in; "e" is not due yet
    assert [r.run_id for r, _ in plans] == ["b", "d", "c", "a"]
    for run, plan in plans:  # each wakes once: its next attempt
        assert (plan.spawn, plan.life.attempt, plan.life.wait) == (True, 2, lc.Wait.NONE)
        run.life = plan.life
    assert session.ticks(50.0) == []
