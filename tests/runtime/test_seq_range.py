"""A ``seq`` cursor past what a store can hold (2^63 - 1) is the caller's mistake: the runtime API
refuses it with ``CommandError`` (``bad_request``) before any query, never a ``StoreError``."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_config

import netra_actors as na
from netra_actors.testing import guest_test

MAX_SEQ = 2**63 - 1
OUT_OF_RANGE = [MAX_SEQ + 1, 2**64, 10**30, -1]


@guest_test()
async def test_out_of_range_cursors_are_bad_requests(tmp_path: Path) -> None:
    async with na.open_runtime(make_config(tmp_path), agents=[]) as rt:
        for seq in OUT_OF_RANGE:
            with pytest.raises(na.CommandError) as refused:
                await rt.read_events("alice", seq, 10)
            assert refused.value.code == "bad_request"
            assert not isinstance(refused.value, na.exceptions.StoreError)
            with pytest.raises(na.CommandError) as refused:
                await rt.subscribe("alice", resume_from=seq)
            assert refused.value.code == "bad_request"
            with pytest.raises(na.CommandError):
                [e async for e in rt.replay("alice", seq)]
        # the edges of the range are served: the largest cursor is merely beyond the head
        assert await rt.read_events("alice", MAX_SEQ, 10) == []
        assert await rt.read_events("alice", 0, 10) == []
        with pytest.raises(na.exceptions.ResumeBeyondHeadError):
            await rt.subscribe("alice", resume_from=MAX_SEQ)
