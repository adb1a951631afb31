"""One socket's protocol rules (``netra_actors/gateway/_session_rules.py``), pure: the close
code each way a session can end gets, without a socket."""

from __future__ import annotations

import json

from netra_actors.gateway import TokenClaims, mint_token
from netra_actors.gateway._session_rules import (
    GOING_AWAY,
    INTERNAL,
    MESSAGE_TOO_BIG,
    NORMAL,
    PROTOCOL_VIOLATION,
    TOO_MANY,
    UNAUTHORIZED,
    Close,
    Session,
    Strikes,
    check_hello,
    check_message,
    hello_timeout,
    subscription_closed,
)

SECRET = b"rules-secret-0123456789"
NOW = 1_000_000.0


def hello(**fields: object) -> str:
    doc = {"type": "hello", "protocol": 1, "token": mint_token(SECRET, "ann", 60, now=NOW)}
    return json.dumps({**doc, **fields})


def test_a_valid_hello_opens_the_session() -> None:
    session = check_hello(hello(resume_from=7, features=["deltas", "x"]), SECRET, now=NOW)
    assert isinstance(session, Session)
    assert session.claims.user == "ann"
    assert (session.resume_from, session.features) == (7, frozenset({"deltas"}))


def test_a_socket_signed_in_by_its_upgrade_needs_no_token_and_takes_no_other_users() -> None:
    ann = TokenClaims(user="ann", expires_at=NOW + 30)
    session = check_hello(hello(token=None), SECRET, now=NOW, signed_in=ann)
    assert isinstance(session, Session)
    assert session.claims == ann
    # a token of the same user: the session ends when the first of the two expires
    session = check_hello(hello(), SECRET, now=NOW, signed_in=ann)
    assert isinstance(session, Session)
    assert session.claims == ann
    late = TokenClaims(user="ann", expires_at=NOW + 3600)
    session = check_hello(hello(), SECRET, now=NOW, signed_in=late)
    assert isinstance(session, Session)
    assert session.claims.expires_at == NOW + 60
    bob = mint_token(SECRET, "bob", 60, now=NOW)
    close = check_hello(hello(token=bob), SECRET, now=NOW, signed_in=ann)
    assert isinstance(close, Close)
    assert (close.code, close.token_refused) == (UNAUTHORIZED, "another_user")
    close = check_hello(hello(token="forged.token"), SECRET, now=NOW, signed_in=ann)
    assert isinstance(close, Close)
    assert close.code == UNAUTHORIZED
    # not signed in by the upgrade: a token is required, as ever
    close = check_hello(hello(token=None), SECRET, now=NOW)
    assert isinstance(close, Close)
    assert close.code == UNAUTHORIZED


def test_the_first_frame_must_be_a_hello() -> None:
    for message in ("{", '{"type": "ping"}', "[]"):
        assert check_hello(message, SECRET, now=NOW) == Close(
            PROTOCOL_VIOLATION, "the first frame must be hello"
        )


def test_a_refused_token_closes_4401_and_says_why() -> None:
    expired = check_hello(hello(), SECRET, now=NOW + 61)
    assert isinstance(expired, Close)
    assert (expired.code, expired.token_refused, expired.error) == (UNAUTHORIZED, "expired", None)
    forged = check_hello(hello(), b"another-secret", now=NOW)
    assert isinstance(forged, Close)
    assert (forged.code, forged.token_refused) == (UNAUTHORIZED, "bad_signature")


def test_bad_hello_fields_send_an_error_then_close_4400() -> None:
    for fields in ({"protocol": 2}, {"resume_from": -1}, {"features": "deltas"}):
        close = check_hello(hello(**fields), SECRET, now=NOW)
        assert isinstance(close, Close)
        assert close.code == PROTOCOL_VIOLATION
        assert close.error is not None
        assert close.error == ("bad_request", close.reason)


def test_messages_are_text_within_the_byte_limit() -> None:
    assert check_message("é" * 50, 100) is None
    assert check_message("é" * 51, 100) == Close(MESSAGE_TOO_BIG, "frames are limited to 100 bytes")
    assert check_message(b"x", 100) == Close(PROTOCOL_VIOLATION, "binary frames are not allowed")


def test_strikes_in_a_row_past_the_limit_close_4429() -> None:
    strikes = Strikes(2)
    assert [strikes.rate_limited(), strikes.rate_limited()] == [None, None]
    strikes.allowed()  # one message within the rate: start over
    assert [strikes.rate_limited(), strikes.rate_limited()] == [None, None]
    close = strikes.rate_limited()
    assert close is not None
    assert close.code == TOO_MANY


def test_the_end_of_the_subscription_and_the_hello_timeout() -> None:
    assert subscription_closed("shutdown") == Close(GOING_AWAY, "server shutting down")
    assert subscription_closed("closed") == Close(NORMAL, "")
    assert subscription_closed("session_failed").code == INTERNAL
    assert subscription_closed("anything else").code == INTERNAL
    assert hello_timeout(1.5) == Close(4408, "no hello within 1.5s")
