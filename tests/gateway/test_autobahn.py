"""WebSocket conformance: the Autobahn TestSuite cases (groups 1–7, 9, 10), run by ``kosoku``
against the gateway's transport in echo mode (``netra-actors serve --echo``: the same HTTP front,
handshake, bounded sends and closing logic as the real gateway, with an echo handler)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from importlib.metadata import version

import pytest
from gwkit import Server, run_async

kosoku = pytest.importorskip("kosoku")

from kosoku._kosoku import CaseResult  # noqa: E402

GROUPS = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
CASES = 301


@pytest.mark.slow
def test_autobahn_groups_1_to_7_9_10(make_server: Callable[..., Server]) -> None:
    # group 9 sends messages of up to 16 MiB
    srv = make_server("--echo", "--max-message-size", str(16 * 1024 * 1024), "--log-level", "warning")  # fmt: skip

    async def scenario() -> list[CaseResult]:
        try:
            return list(await kosoku.run_fuzzingclient(srv.ws_url, cases=GROUPS, concurrency=2))
        except kosoku.FailureError as failure:
            failed = [
                f"{r.case_id}: {r.behavior.value}/{r.behavior_close.value} {r.result} {r.result_close}"
                for r in failure.results
                if not r.passed
            ]
            pytest.fail("Autobahn cases failed:\n" + "\n".join(failed[:30]))

    results = run_async(scenario, timeout=300)()
    verdicts = collections.Counter((r.behavior.value, r.behavior_close.value) for r in results)
    print(f"Autobahn (kosoku {version('kosoku')}): {len(results)} cases: {dict(verdicts)}")
    assert len(results) == CASES, verdicts
    assert all(r.passed for r in results), verdicts
    assert all(b in PASSING and c in PASSING for b, c in verdicts), verdicts
