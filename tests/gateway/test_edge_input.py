"""Issue 20's probe findings at the edge, on both servers (``netra-actors serve`` and uvicorn
with the ASGI adapter) over real sockets:

* a ``seq`` cursor past 2^63 - 1 (``Last-Event-ID``, ``resume_from``) is a bad request (400 /
  ``bad_request`` then 4400), never "the store failed" (503) that AG-UI clients retry forever;
* a token is one string: the padded, standard-alphabet or otherwise respelled forms of a valid
  token are refused (401 / 4401) — the minted one is accepted.
"""

from __future__ import annotations

import json

import pytest
from gwkit import Client, Server, run_async, token

MAX_SEQ = 2**63 - 1
TOO_BIG = ["9223372036854775808", "9223372036854775808.1", "18446744073709551616", "1.9" + "9" * 30]


def agui_events(server: Server, tok: str, last_event_id: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {tok}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return server.get("/agui/events", headers=headers)


@pytest.mark.parametrize("last", TOO_BIG)
def test_last_event_id_past_the_seq_range_is_400(server: Server, user: str, last: str) -> None:
    status, body = agui_events(server, token(user), last)
    assert status == 400, body
    assert json.loads(body)["error"] == "bad_request"


def test_resume_from_past_the_seq_range_is_bad_request(server: Server, user: str) -> None:
    @run_async
    async def scenario() -> None:
        for resume_from in (MAX_SEQ + 1, 2**64, 10**30):
            client = await Client.open(server, hello=False)
            await client.send(
                f'{{"type":"hello","protocol":1,"token":"{token(user)}",'
                f'"resume_from":{resume_from}}}'
            )
            frame = await client.next_frame()
            assert (frame["type"], frame["code"]) == ("error", "bad_request"), frame
            assert await client.closed() == 4400
        # the largest seq there is: beyond this user's head, refused the same way (not a 503)
        client = await Client.open(server, hello=False)
        await client.send({"type": "hello", "protocol": 1, "token": token(user),
                           "resume_from": MAX_SEQ})  # fmt: skip
        frame = await client.next_frame()
        assert (frame["type"], frame["code"]) == ("error", "bad_request"), frame
        assert await client.closed() == 4400

    scenario()


def respellings(tok: str) -> list[str]:
    """The same bytes as ``tok``, spelled otherwise (each a different string)."""
    payload, signature = tok.split(".")
    out = {
        f"{payload}.{signature}=",
        f"{payload}.{signature}" + "=" * (-len(signature) % 4 or 4),
        f"{payload}=.{signature}" if len(payload) % 4 else f"{payload}====.{signature}",
        f"{payload}.{signature.replace('-', '+').replace('_', '/')}",
        f"{payload.replace('-', '+').replace('_', '/')}.{signature}",
        f"{payload}.{signature[:10]}!{signature[10:]}",
    }
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])  # 43 characters for 32 bytes: 2 spare low bits
    for flip in (1, 2, 3):
        out.add(f"{payload}.{signature[:-1]}{alphabet[last ^ flip]}")
    out.discard(tok)
    return sorted(out)


def test_only_the_minted_spelling_of_a_token_is_accepted(server: Server, user: str) -> None:
    tok = token(user)
    variants = respellings(tok)
    assert len(variants) >= 6
    for variant in variants:
        status, body = agui_events(server, variant)
        assert status == 401, (variant, body)

    @run_async
    async def scenario() -> None:
        for variant in variants:
            client = await Client.open(server, hello=False)
            await client.send({"type": "hello", "protocol": 1, "token": variant})
            assert await client.closed() == 4401, variant
        client = await Client.open(server, user, tok=tok)  # the minted one
        assert client.welcome is not None
        assert client.welcome["user_id"] == user
        await client.close()

    scenario()
