"""Signed tokens (``netra_actors/gateway/_tokens.py``), property-based. Pure: time is an argument."""

from __future__ import annotations

import base64
import string

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
    # not even in the don't-care bits of base64's last character: one token, one string
    with pytest.raises(TokenError):
        verify_token(SECRET, tampered, now=1000.0)


def _lenient_b64(text: str) -> bytes:
    """What a lenient decoder makes of ``text`` (any alphabet, padding or not, junk skipped)."""
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    text = "".join(c for c in text if c.isalnum() or c in "+/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _respell(part: str, kind: str, pick: int) -> str:
    """Another spelling of the same bytes as ``part`` (canonical unpadded base64url)."""
    if kind == "padding":
        return part + "=" * (-len(part) % 4 or 4)
    if kind == "standard":
        return part.replace("-", "+").replace("_", "/")
    if kind == "low_bits":  # the spare bits of the last character set differently
        raw = _lenient_b64(part)
        spare = {2: 4, 3: 2}.get(len(part) % 4, 0)
        if not spare:
            return part
        alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
        last = alphabet.index(part[-1])
        variant = part[:-1] + alphabet[last ^ (1 + pick % ((1 << spare) - 1))]
        assert _lenient_b64(variant) == raw
        return variant
    if kind == "whitespace":  # characters outside the alphabet, skipped by lenient decoders
        i = pick % (len(part) + 1)
        return part[:i] + " \n\t!"[pick % 4] + part[i:]
    raise AssertionError(kind)


@given(
    user=users,
    which=st.sampled_from(["signature", "payload", "both"]),
    kind=st.sampled_from(["padding", "standard", "low_bits", "whitespace"]),
    pick=st.integers(0, 1000),
)
def test_every_other_spelling_of_a_token_is_refused(
    user: str, which: str, kind: str, pick: int
) -> None:
    token = mint_token(SECRET, user, 60, now=1000.0)
    payload, signature = token.split(".")
    if which in ("payload", "both"):
        payload = _respell(payload, kind, pick)
    if which in ("signature", "both"):
        signature = _respell(signature, kind, pick)
    variant = f"{payload}.{signature}"
    assume(variant != token)
    # the same bytes, so a lenient check would accept it...
    assert _lenient_b64(payload) == _lenient_b64(token.split(".")[0])
    assert _lenient_b64(signature) == _lenient_b64(token.split(".")[1])
    # ...but only the minted string is the token
    with pytest.raises(TokenError):
        verify_token(SECRET, variant, now=1000.0)
    assert verify_token(SECRET, token, now=1000.0).user == user


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
