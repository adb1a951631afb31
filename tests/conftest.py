"""Settings the whole test suite shares."""

from __future__ import annotations

import os

from netra_actors.demo_agents import TOKEN_PAUSE_ENV

# The demo agent streams at a pace a person can watch (demo_agents.TOKEN_PAUSE); the suite runs
# thousands of demo runs, in this process and in the servers it starts (which inherit this), at
# a fast model's pace instead. tests/runtime/test_demo_pace.py checks the default pace.
os.environ.setdefault(TOKEN_PAUSE_ENV, "0.003")
