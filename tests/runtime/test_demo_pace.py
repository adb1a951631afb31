"""The ``demo`` agent streams at a pace a person can watch, and its run stays short.

The suite streams the demo faster (``tests/conftest.py`` sets ``NETRA_DEMO_TOKEN_PAUSE``); here
the variable is removed, so the agent streams at its default pace.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio
from helpers import make_config

import netra_actors as na
from netra_actors.demo_agents import (
    DEMO_AGENTS,
    TOKEN_PAUSE,
    TOKEN_PAUSE_ENV,
    demo_metadata,
    token_pause,
)
from netra_actors.testing import guest_test


@guest_test()
async def test_the_demo_streams_visibly_paced_and_finishes_quickly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_PAUSE_ENV, raising=False)
    config = make_config(tmp_path)
    arrived: list[float] = []
    async with na.open_runtime(config, agents=DEMO_AGENTS, metadata=[demo_metadata]) as rt:
        sub = await rt.subscribe("alice", deltas=True)
        start = trio.current_time()
        run_id = await rt.start_run("alice", "demo", "one two three four 5 and 6")
        with trio.fail_after(10):
            while True:
                items = await sub.receive_items()
                now = trio.current_time()
                arrived.extend(now for i in items if isinstance(i, na.Delta))
                if any(
                    isinstance(i, na.Event)
                    and i.event == "run_state"
                    and na.RunState(i.data["state"]).is_terminal
                    for i in items
                ):
                    break
        took = trio.current_time() - start
        info = await rt.wait_run("alice", run_id)

    assert info.state is na.RunState.COMPLETED
    pieces = len(info.result["answer"].split())
    assert len(arrived) == pieces  # each word reached the subscriber as a delta of its own
    gaps = [b - a for a, b in itertools.pairwise(arrived)]
    assert min(gaps) >= 0.03  # paced (at least 30 ms a word), not all at once
    assert took < 2.0  # still a short demo


def test_the_pace_can_be_set_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_PAUSE_ENV, "0.001")
    assert token_pause() == 0.001
    for unusable in ("fast", "-1", "nan", "1e9"):
        monkeypatch.setenv(TOKEN_PAUSE_ENV, unusable)
        assert token_pause() == TOKEN_PAUSE
