"""Per-user limits (``netra_actors/gateway/_limits.py``) and the purity of the gateway's pure
modules (codec, tokens, limits, request rules import no I/O or concurrency library)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netra_actors.exceptions import ConfigError
from netra_actors.gateway._limits import RateLimit, TokenBucket, UserLimits


def test_bucket_bursts_then_refills() -> None:
    bucket = TokenBucket.full(RateLimit(per_second=2, burst=3), now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.4) is False
    assert bucket.take(0.5) is True
    assert bucket.take(100.0)
    assert bucket.take(100.0)
    assert bucket.take(100.0)
    assert bucket.take(100.0) is False  # never more than the burst


@given(
    rate=st.floats(0.1, 100), burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 2, allow_nan=False), max_size=200),
)  # fmt: skip
def test_bucket_never_allows_more_than_burst_plus_refill(rate: float, burst: int, gaps: list[float]) -> None:  # fmt: skip
    bucket = TokenBucket.full(RateLimit(per_second=rate, burst=burst), now=0.0)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += bucket.take(now)
    assert allowed <= burst + rate * now + 1e-6


def test_sockets_per_user_and_shared_bucket() -> None:
    limits = UserLimits(RateLimit(per_second=1, burst=2), max_sockets_per_user=2)
    assert limits.open_socket("a", 0.0)
    assert limits.open_socket("a", 0.0)
    assert not limits.open_socket("a", 0.0)
    assert limits.open_socket("b", 0.0)
    # both sockets of "a" draw from one bucket
    assert limits.allow_message("a", 0.0)
    assert limits.allow_message("a", 0.0)
    assert not limits.allow_message("a", 0.0)
    assert limits.allow_message("b", 0.0)
    limits.close_socket("a")
    assert limits.sockets("a") == 1
    assert limits.open_socket("a", 0.0)
    for _ in range(3):
        limits.close_socket("a")
    limits.close_socket("b")
    assert limits.users == 0  # entries go with the last socket: the table is bounded


def test_invalid_limits() -> None:
    with pytest.raises(ConfigError):
        RateLimit(per_second=0)
    with pytest.raises(ConfigError):
        RateLimit(burst=0)
    with pytest.raises(ConfigError):
        UserLimits(RateLimit(), max_sockets_per_user=0)


PURE = ("_protocol.py", "_tokens.py", "_limits.py", "_trust.py", "_session_rules.py")
FORBIDDEN = {"trio", "trio_websocket", "asyncio", "socket", "h11", "wsproto", "time", "threading",
             "sqlalchemy", "prometheus_client", "importlib"}  # fmt: skip
ALLOWED_FIRST_PARTY = {
    "._limits",
    "._tokens",
    "._protocol",
    ".._exceptions",
    ".._validate",
    ".._core._threads",  # pure: the thread-name rule and page limits
}


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    path = Path(__file__).resolve().parents[2] / "netra_actors" / "gateway" / module
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                name = "." * node.level + (node.module or "")
                assert name in ALLOWED_FIRST_PARTY, (module, name)
                continue
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert not roots & FORBIDDEN, (module, roots)
