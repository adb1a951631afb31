"""The data lifecycle's rules (``_core/_erasure.py``) and the close code of an erased user
(``gateway/_session_rules.py``): pure, no I/O."""

from __future__ import annotations

import attrs
import pytest

from netra_actors._core import RunState
from netra_actors._core import _erasure as rules
from netra_actors._exceptions import CommandError, IllegalStateError
from netra_actors.gateway._session_rules import USER_ERASED, subscription_closed


@attrs.frozen
class R:
    run_id: str
    thread: str


def test_a_deletion_cancels_the_runs_of_its_thread_only_in_order() -> None:
    runs = [R("r1", "work"), R("r2", "main"), R("r3", "work")]
    assert rules.runs_of_thread(runs, "work") == ["r1", "r3"]
    assert rules.runs_of_thread(runs, "other") == []


def test_a_completing_run_makes_a_deletion_wait() -> None:
    with pytest.raises(IllegalStateError):
        rules.check_cancellable(RunState.COMPLETING)
    for state in (RunState.PENDING, RunState.STARTING, RunState.RUNNING):
        rules.check_cancellable(state)


@pytest.mark.parametrize(
    ("live", "last_ts", "verdict"),
    [
        (0, 99.0, rules.Verdict.ERASE),
        (0, None, rules.Verdict.ERASE),
        (1, 10.0, rules.Verdict.KEEP),  # a live run keeps its thread, however old
        (0, 100.0, rules.Verdict.KEEP),  # activity at the cutoff itself keeps it
        (0, 150.0, rules.Verdict.KEEP),
    ],
)
def test_retention_erases_only_idle_threads_without_live_runs(
    live: int, last_ts: float | None, verdict: rules.Verdict
) -> None:
    assert rules.retention_verdict(live, last_ts, idle_before=100.0) is verdict


def test_the_cutoff_and_the_thread_deleted_event() -> None:
    assert rules.idle_before(10 * rules.DAY, 3) == 7 * rules.DAY
    assert rules.thread_deleted("t", "retention") == {"thread": "t", "reason": "retention"}
    with pytest.raises(CommandError):
        rules.thread_deleted("t", "whim")


def test_an_erased_user_s_sockets_close_4410() -> None:
    close = subscription_closed("erased")
    assert (close.code, USER_ERASED) == (4410, 4410)
    assert "drop your local state" in close.reason
