"""Command-level errors over real sockets: every code, the ``id`` echo, and the connection
staying open (and working) after each one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gwkit import Client, Server, run_async, token


async def expect_error(
    client: Client, frame: dict[str, Any] | str, code: str, id: str | None = None
) -> dict[str, Any]:
    await client.send(frame)
    answer = await client.reply()
    assert answer["type"] == "error", answer
    assert answer["code"] == code, answer
    assert isinstance(answer["message"], str)
    assert answer["message"]
    assert answer.get("id") == id, answer
    return answer


async def still_works(client: Client) -> None:
    assert await client.command({"type": "ping", "id": "alive"}) == {"type": "pong", "id": "alive"}


BAD_REQUESTS: list[tuple[str, str | dict[str, Any], str | None]] = [
    ("malformed json", '{"type": "ping"', None),
    ("not json at all", "hello?", None),
    ("array", "[1, 2, 3]", None),
    ("string", '"ping"', None),
    ("number", "42", None),
    ("null", "null", None),
    ("no type", {"id": "a"}, None),
    ("type not a string", {"type": 7, "id": "a"}, None),
    ("id not a string", {"type": "ping", "id": 5}, None),
    ("say without text", {"type": "say", "id": "a"}, "a"),
    ("say text not a string", {"type": "say", "id": "a", "text": ["hi"]}, "a"),
    ("say agent not a string", {"type": "say", "id": "a", "text": "hi", "agent": 3}, "a"),
    ("start_run without agent", {"type": "start_run", "id": "a", "input": 1}, "a"),
    ("start_run agent not a string", {"type": "start_run", "id": "a", "agent": {}}, "a"),
    ("cancel_run without run_id", {"type": "cancel_run", "id": "a"}, "a"),
    ("cancel_run run_id not a string", {"type": "cancel_run", "id": "a", "run_id": 12}, "a"),
]


@pytest.mark.parametrize(("case", "frame", "id"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request(server: Server, user: str, case: str, frame: str | dict[str, Any], id: str | None) -> None:  # fmt: skip
    @run_async
    async def scenario() -> None:
        client = await Client.open(server, user)
        await expect_error(client, frame, "bad_request", id)
        await still_works(client)

    scenario()


@run_async
async def test_unknown_command(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    await expect_error(client, {"type": "dance", "id": "d1"}, "unknown_command", "d1")
    await expect_error(client, {"type": "welcome"}, "unknown_command")
    await still_works(client)


@run_async
async def test_unknown_agent(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    await expect_error(
        client, {"type": "start_run", "id": "s", "agent": "nope"}, "unknown_agent", "s"
    )
    await expect_error(client, {"type": "say", "id": "t", "text": "x", "agent": "nope"}, "unknown_agent", "t")  # fmt: skip
    await still_works(client)
    # nothing was committed for the refused commands
    runs = await client.command({"type": "get_runs", "id": "g"})
    assert runs["head_seq"] == 0
    assert runs["runs"] == []


@run_async
async def test_unknown_run_reveals_nothing(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    a = await expect_error(client, {"type": "cancel_run", "id": "x", "run_id": "r_nope"}, "unknown_run", "x")  # fmt: skip
    b = await expect_error(client, {"type": "cancel_run", "id": "x", "run_id": ""}, "unknown_run", "x")  # fmt: skip
    assert a == b
    await still_works(client)


@run_async
async def test_too_large_fields(server: Server, user: str) -> None:
    client = await Client.open(server, user)
    limit = 16 * 1024
    await expect_error(client, {"type": "say", "id": "big", "text": "x" * (limit + 1)}, "too_large", "big")  # fmt: skip
    # the limit counts UTF-8 bytes: 8193 two-byte characters are 16386 bytes
    await expect_error(client, {"type": "say", "id": "utf", "text": "é" * 8193}, "too_large", "utf")  # fmt: skip
    # a 65-character id is too large, and is not echoed
    await expect_error(client, {"type": "ping", "id": "i" * 65}, "too_large", None)
    assert await client.command({"type": "ping", "id": "i" * 64}) == {
        "type": "pong",
        "id": "i" * 64,
    }
    # exactly at the limit is fine
    answer = await client.command({"type": "say", "id": "ok", "text": "y" * limit})
    assert answer["type"] == "ack"
    assert answer["id"] == "ok"
    await client.wait_run_end(answer["run_id"])


@run_async
async def test_resume_from_beyond_head_is_bad_request(server: Server, user: str) -> None:
    client = await Client.open(server, user, hello=False)
    await client.send({"type": "hello", "protocol": 1, "token": token(user), "resume_from": 5})
    answer = await client.next_frame()
    assert answer["type"] == "error"
    assert answer["code"] == "bad_request"
    assert await client.closed() == 4400


@pytest.mark.parametrize("resume_from", [-1, "3", 1.5, True])
def test_invalid_resume_from_is_bad_request(server: Server, user: str, resume_from: object) -> None:
    @run_async
    async def scenario() -> None:
        client = await Client.open(server, user, hello=False)
        hello = {"type": "hello", "protocol": 1, "token": token(user), "resume_from": resume_from}
        await client.send(json.dumps(hello))
        answer = await client.next_frame()
        assert answer["type"] == "error"
        assert answer["code"] == "bad_request"
        assert await client.closed() == 4400

    scenario()


@run_async
async def test_unsupported_protocol_version(server: Server, user: str) -> None:
    client = await Client.open(server, user, hello=False)
    await client.send({"type": "hello", "protocol": 2, "token": token(user)})
    answer = await client.next_frame()
    assert answer["type"] == "error"
    assert answer["code"] == "bad_request"
    assert await client.closed() == 4400
