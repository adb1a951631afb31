"""Logs a person can act on: the JSON format, rate-limited failures, one record per crash.

The formatter and the rate limiter are checked on their own (a fake clock); the crash records
through a real runtime on a SQLite file (``caplog``), and the whole chain — ``configure_logging``
in a fresh process, a crashing agent, JSON lines on stderr — in a subprocess.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

import netra_actors as na
from netra_actors._logs import JsonFormatter, RateLimiter, log_limited
from netra_actors.testing import guest_test

ROOT = Path(__file__).resolve().parent.parent
FAST_RESTART = na.policies.RestartPolicy(max_restarts=3, backoff_initial=0.01, backoff_max=0.05)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record_of(logger: str, msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(logger, logging.ERROR, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


# ---------------------------------------------------------------------------- the formats


def test_a_json_line_has_the_message_the_extra_fields_and_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = record_of("netra_actors.supervisor", "user %r crashed", "alice", run_id="r1")
    record.exc_info = exc_info
    line = JsonFormatter().format(record)
    assert "\n" not in line  # one object, one line: the traceback is a field
    out = json.loads(line)
    assert out["level"] == "ERROR"
    assert out["logger"] == "netra_actors.supervisor"
    assert out["message"] == "user 'alice' crashed"
    assert out["run_id"] == "r1"
    assert out["exc_type"] == "ValueError"
    assert out["traceback"].startswith("Traceback (most recent call last)")
    assert 'raise ValueError("boom")' in out["traceback"]
    assert out["time"].endswith("+00:00")
    assert "args" not in out
    assert "msg" not in out
    assert "exc_info" not in out


def test_fields_that_are_not_json_are_written_as_text() -> None:
    out = json.loads(JsonFormatter().format(record_of("x", "m", where=Path("/tmp/a"))))
    assert out["where"] == "/tmp/a"


def test_configure_logging_writes_text_or_json_and_replaces_its_own_handler() -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        text, lines = io.StringIO(), io.StringIO()
        na.configure_logging("text", "warning", stream=text)
        logging.getLogger("netra_actors.test").warning("hello %s", "there")
        logging.getLogger("netra_actors.test").info("not at this level")
        na.configure_logging("json", logging.INFO, stream=lines)
        logging.getLogger("netra_actors.test").info("now json", extra={"user_id": "u1"})
        assert text.getvalue().rstrip().endswith("WARNING netra_actors.test: hello there")
        assert "now json" not in text.getvalue()  # the first handler was replaced
        [line] = lines.getvalue().splitlines()
        assert json.loads(line)["user_id"] == "u1"
        assert sum(getattr(h, "_netra", False) for h in root.handlers) == 1
        with pytest.raises(na.exceptions.ConfigError):
            na.configure_logging("yaml")  # type: ignore[arg-type]
    finally:
        root.handlers[:], root.level = before


# ---------------------------------------------------------------------------- rate limiting


def test_the_rate_limiter_lets_one_through_per_period_and_counts_the_rest() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)
    assert limiter.admit("k") == (0, 0.0)
    clock.now += 1
    assert limiter.admit("k") is None
    assert limiter.admit("other") == (0, 0.0)  # keys are apart
    clock.now += 8.9
    assert limiter.admit("k") is None
    clock.now += 2
    admitted = limiter.admit("k")
    assert admitted is not None
    assert admitted[0] == 2
    assert admitted[1] == pytest.approx(11.9)
    assert limiter.admit("k") is None


def test_the_rate_limiter_forgets_the_oldest_keys_first() -> None:
    limiter = RateLimiter(10.0, clock=FakeClock(), max_keys=2)
    for key in ("a", "b", "c"):
        assert limiter.admit(key) == (0, 0.0)
    assert limiter.admit("c") is None
    assert limiter.admit("a") == (0, 0.0)  # forgotten: let through again


def test_a_repeated_failure_is_logged_once_per_period_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)
    log = logging.getLogger("netra_actors.test")
    caplog.set_level(logging.WARNING, "netra_actors.test")
    logged = []
    for i in range(60):
        clock.now += 0.2  # 60 failures in 12 s
        logged.append(
            log_limited(log, logging.WARNING, "store", "commit failed: %s", f"disk full {i}",
                        limiter=limiter)
        )  # fmt: skip
    other = log_limited(log, logging.WARNING, "store", "another template", limiter=limiter)
    assert other  # another message is another failure
    assert logged.count(True) == 2
    first, second, third = caplog.records
    assert first.getMessage() == "commit failed: disk full 0"
    assert not hasattr(first, "suppressed")
    assert second.getMessage() == "commit failed: disk full 50 (and 49 more in the last 10 s)"
    assert second.suppressed == 49  # type: ignore[attr-defined]
    assert third.getMessage() == "another template"


# ------------------------------------------------------------------ crashes of a real runtime


class CrashesTwice(na.Agent):
    name = "crashes_twice"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        if ctx.attempt <= 2:
            raise ValueError(f"boom in attempt {ctx.attempt}")
        return "ok"


class FailsOnPurpose(na.Agent):
    name = "fails"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        raise na.exceptions.RunFailedError("no such city")


class ThreadedCrash(na.ThreadedAgent):
    name = "threaded_crash"
    restart_policy = na.policies.RestartPolicy(restart="temporary")

    def run(self, ctx: na.ThreadedContext, input: na.JSON) -> na.JSON:
        raise KeyError("missing")


def crash_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "reason", None) in ("crash", "error")]


@guest_test()
async def test_every_crash_is_one_record_with_its_traceback_and_tags(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "netra_actors")
    config = na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "n.db"), restart=FAST_RESTART)
    agents = [CrashesTwice, FailsOnPurpose, ThreadedCrash]
    async with na.open_runtime(config, agents=agents) as rt:
        run_id = await rt.start_run("alice", "crashes_twice")
        assert (await rt.wait_run("alice", run_id)).state is na.RunState.COMPLETED
        failed = await rt.start_run("bob", "fails")
        assert (await rt.wait_run("bob", failed)).state is na.RunState.FAILED
        threaded = await rt.start_run("carol", "threaded_crash")
        with trio.fail_after(10):
            assert (await rt.wait_run("carol", threaded)).state is na.RunState.FAILED

    records = crash_records(caplog)
    tags = [(r.user_id, r.run_id, r.attempt, r.agent, r.reason) for r in records]  # type: ignore[attr-defined]
    assert tags == [
        ("alice", run_id, 1, "crashes_twice", "crash"),
        ("alice", run_id, 2, "crashes_twice", "crash"),
        ("bob", failed, 1, "fails", "error"),
        ("carol", threaded, 1, "threaded_crash", "crash"),
    ]
    assert [r.levelno for r in records] == [logging.ERROR] * 2 + [logging.WARNING, logging.ERROR]
    for record, error in zip(records, ("boom in attempt 1", "boom in attempt 2"), strict=False):
        assert record.exc_info is not None
        assert str(record.exc_info[1]) == error
        assert "in run\n" in caplog.handler.formatter.formatException(record.exc_info)  # type: ignore[union-attr]
        assert f"attempt {record.attempt} of agent 'crashes_twice' crashed" in record.getMessage()  # type: ignore[attr-defined]
    assert isinstance(records[3].exc_info[1], KeyError)  # type: ignore[index]
    # No other record carries a traceback: each crash is told once.
    assert [r for r in caplog.records if r.exc_info] == records


# ------------------------------------------------------------- the whole chain, in a process

SCRIPT = """
import sys
import netra_actors as na

na.configure_logging("json")

class Crashy(na.Agent):
    name = "crashy"

    async def run(self, ctx, input):
        await ctx.think("about to fail")
        if ctx.attempt == 1:
            raise ZeroDivisionError("the first attempt divides by zero")
        return "second time lucky"

async def main():
    config = na.RuntimeConfig(
        database_url=na.sqlite_url(sys.argv[1]),
        restart=na.policies.RestartPolicy(backoff_initial=0.01, backoff_max=0.05),
    )
    async with na.open_runtime(config, agents=[Crashy]) as rt:
        run_id = await rt.start_run("alice", "crashy")
        info = await rt.wait_run("alice", run_id)
        print(run_id, info.state.value)

na.run(main)
"""


def run_script(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter on this tree, with a database path as argument."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "n.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    return out


def test_configure_logging_json_in_a_process_gives_one_parsable_crash_line(
    tmp_path: Path,
) -> None:
    out = run_script(tmp_path, SCRIPT)
    run_id, state = out.stdout.split()
    assert state == "completed"
    lines = [json.loads(line) for line in out.stderr.splitlines()]  # every line is JSON
    crashes = [line for line in lines if line.get("reason") == "crash"]
    assert len(crashes) == 1
    [crash] = crashes
    assert crash["level"] == "ERROR"
    assert crash["logger"] == "netra_actors.supervisor"
    assert (crash["user_id"], crash["run_id"], crash["attempt"], crash["agent"]) == (
        "alice", run_id, 1, "crashy",
    )  # fmt: skip
    assert crash["exc_type"] == "ZeroDivisionError"
    assert "the first attempt divides by zero" in crash["traceback"]
    assert 'raise ZeroDivisionError("the first attempt divides by zero")' in crash["traceback"]
