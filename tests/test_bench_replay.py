"""The ``replay`` benchmark keeps working (``--quick --repeat 1 --json``); no thresholds."""

from __future__ import annotations

import json

import pytest

from benchmarks import SCENARIOS, main


def test_replay_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert "replay" in SCENARIOS
    status = main(["replay", "--quick", "--repeat", "1", "--json", "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0, out
    result = json.loads(out)
    assert result["scenario"] == "replay"
    assert result["command"].startswith("python -m benchmarks replay --quick")
    cases = {(r["kind"], r["attempt"]) for r in result["rows"]}
    for kind in ("async", "threaded"):
        for attempt in (
            "first attempt, replay=False",
            "first attempt, journaled",
            "restarted attempt, replayed",
        ):
            assert (kind, attempt) in cases
    for row in result["rows"]:
        assert row["steps"] == 100
        assert row["ms"] > 0
        if row["attempt"] == "first attempt, replay=False":
            assert row["ratio"] == pytest.approx(1.0)
    goal, of_first = result["goals"]
    assert goal["target"] == 1.2
    assert goal["higher_is_better"] is False
    replayed = [r for r in result["rows"] if r["attempt"] == "restarted attempt, replayed"]
    assert goal["measured"] == pytest.approx(max(r["ratio"] for r in replayed))
    assert of_first["target"] == 0.05  # issue 18: replay <= 5% of the first attempt's time
    assert of_first["measured"] == pytest.approx(max(r["of_first"] for r in replayed))
