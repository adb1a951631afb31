"""Settings the whole test suite shares."""

from __future__ import annotations

import os

from netra_actors.demo_agents import TOKEN_PAUSE_ENV

# The demo agent streams at a pace a person can watch (demo_agents.TOKEN_PAUSE); the suite runs
# thousands of demo runs, in this process and in the servers it starts (which inherit this), at
# a fast model's pace instead. tests/runtime/test_demo_pace.py checks the default pace.
os.environ.setdefault(TOKEN_PAUSE_ENV, "0.003")

# Hypothesis also draws "local constants": literals it mines from every module of this project
# that is imported at the time. Which programs a derandomized test runs would then depend on
# which other test modules pytest happened to collect, and the stateful tests that check they
# reached every rule (derandomize=True) would pass alone and fail in the full suite. Mine none:
# the same programs whatever is selected.
try:
    from hypothesis.internal.conjecture import providers as _providers
except ImportError:  # pragma: no cover - a Hypothesis without constant mining
    pass
else:
    if hasattr(_providers, "_get_local_constants"):
        _no_constants = _providers.Constants()
        _providers._get_local_constants = lambda: _no_constants
