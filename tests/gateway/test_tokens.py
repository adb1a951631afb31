"""Signed tokens (``netra_actors/gateway/_tokens.py``), property-based. Pure: time is an argument."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from netra_actors.gateway._tokens import (
    MAX_USER_LENGTH,
    TokenError,
    check_user_name,
    mint_token,
    verify_token,
)

SECRET = b"unit-test-secret-0123456789"
users = st.text(min_size=1, max_size=MAX_USER_LENGTH).filter(
    lambda u: u.strip() != "" and u.isprintable()
)
times = st.floats(0, 4e9, allow_nan=False)
ttls = st.floats(0.01, 1e7, allow_nan=False)


@given(user=users, now=times, ttl=ttls)
def test_round_trip(user: str, now: float, ttl: float) -> None:
    token = mint_token(SECRET, user, ttl, now=now)
    claims = verify_token(SECRET, token, now=now)
    assert claims.user == user
    assert abs(claims.expires_at - (now + ttl)) < 0.01
    assert "=" not in token
    assert "/" not in token
    assert "+" not in token


@given(user=users, now=times, ttl=ttls, later=st.floats(0, 1e7, allow_nan=False))
def test_expired_once_now_reaches_expiry(user: str, now: float, ttl: float, later: float) -> None:
    token = mint_token(SECRET, user, ttl, now=now)
    expiry = verify_token(SECRET, token, now=now).expires_at
    with pytest.raises(TokenError) as info:
        verify_token(SECRET, token, now=expiry + later)
    assert info.value.reason == "expired"


@given(user=users, index=st.integers(0, 10_000), char=st.sampled_from("AQgw_-.x0="))
def test_any_tampering_is_refused(user: str, index: int, char: str) -> None:
    token = mint_token(SECRET, user, 60, now=1000.0)
    i = index % len(token)
    tampered = token[:i] + char + token[i + 1 :]
    assume(tampered != token)
    try:
        claims = verify_token(SECRET, tampered, now=1000.0)
    except TokenError:
        return
    # base64 has a few don't-care bits in its last character: the claims must still be the same
    assert claims.user == user


@given(user=users)
def test_another_secret_is_refused(user: str) -> None:
    token = mint_token(SECRET, user, 60, now=0.0)
    with pytest.raises(TokenError) as info:
        verify_token(b"another-secret-abcdefghij", token, now=0.0)
    assert info.value.reason == "bad_signature"


@given(st.text(max_size=200) | st.none() | st.integers())
def test_garbage_gives_a_typed_error(token: object) -> None:
    with pytest.raises(TokenError):
        verify_token(SECRET, token, now=0.0)


def test_invalid_minting() -> None:
    for bad_user in ("", "   ", "x" * (MAX_USER_LENGTH + 1), "tab\there", 5):
        with pytest.raises(ValueError):
            check_user_name(bad_user)
    with pytest.raises(ValueError):
        mint_token(b"", "alice", 60, now=0.0)
    for ttl in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            mint_token(SECRET, "alice", ttl, now=0.0)
