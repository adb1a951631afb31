"""The wire form of provisional text between the nodes of a cluster: pure, no I/O.

The owner of a user hands the deltas its agents stream to the cluster's relay; the relay sends
them to the other nodes (PostgreSQL ``NOTIFY`` on ``netra_deltas``, or a local datagram on a
SQLite cluster), whose followers give them to their sockets. A payload is::

    <crc32 of the JSON, 8 hex digits> <JSON: [node, [[user, run, attempt, message, offset, text], ...]]>

* **Batched per message**: consecutive deltas of one message in one flush are merged into one
  entry (a delta of a message continues the previous one exactly: ``offset`` + its length).
* **Under the payload limit**: every payload encodes to at most ``limit`` bytes of UTF-8
  (PostgreSQL refuses a ``NOTIFY`` payload of 8,000 bytes or more). A batch that does not fit is
  split across payloads, in order; one delta whose text alone does not fit is split into
  consecutive pieces (offsets adjusted), never cut.
* **Garbling is detected**: :func:`decode` checks the checksum and the shape and raises
  :class:`ValueError`; the receiver then stops streaming what it cannot vouch for (it never shows
  text it is unsure of).

The same datagrams carry **hints** on a SQLite cluster (``_cluster_hints.py``): "a command was
posted to the inbox", "a reply was written". A hint starts with ``!`` (a delta payload starts
with a hex digit, so the two never mix)::

    !<crc32 of the JSON, 8 hex digits> <JSON: [kind, node, [name, ...]]>

``kind`` is ``inbox`` (names: user ids) or ``reply`` (names: request ids); no names means "any"
(the sender had more than it keeps). :func:`decode_hint` refuses a garbled one
(:class:`ValueError`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import orjson

from ._values import Delta

LIMIT = 7_900
"""Bytes per payload (PostgreSQL's ``NOTIFY`` payload must be shorter than 8,000 bytes)."""

_Entry = tuple[str, str, int, str, int, str]


def merge(items: Iterable[tuple[str, Delta]]) -> list[tuple[str, Delta]]:
    """Deltas in the order they were streamed, each message's consecutive ones merged into one.

    Only the order within a message matters (messages are independent). A delta that does not
    continue its message's last entry exactly (it never happens on one owner) starts a new one.
    """
    out: list[tuple[str, Delta]] = []
    last: dict[str, int] = {}  # message id -> index in out of its last entry
    for user_id, delta in items:
        i = last.get(delta.message_id)
        if i is not None:
            prev = out[i][1]
            if prev.offset + len(prev.text) == delta.offset:
                out[i] = (user_id, prev._replace(text=prev.text + delta.text))
                continue
        last[delta.message_id] = len(out)
        out.append((user_id, delta))
    return out


def _entry(user_id: str, d: Delta) -> _Entry:
    return (user_id, d.run_id, d.attempt, d.message_id, d.offset, d.text)


def _size(entry: _Entry) -> int:
    return len(orjson.dumps(entry)) + 1  # the comma between entries


def _pieces(user_id: str, delta: Delta, room: int) -> list[_Entry]:
    """``delta`` as consecutive entries that each encode to at most ``room`` bytes."""
    entry = _entry(user_id, delta)
    if _size(entry) <= room:
        return [entry]
    if len(delta.text) <= 1:
        raise ValueError(f"a delta's ids alone exceed the relay's payload limit ({room} bytes)")
    half = len(delta.text) // 2
    first = delta._replace(text=delta.text[:half])
    rest = delta._replace(offset=delta.offset + half, text=delta.text[half:])
    return _pieces(user_id, first, room) + _pieces(user_id, rest, room)


def _frame(node: str, entries: list[_Entry]) -> str:
    body = orjson.dumps([node, entries])
    return f"{zlib.crc32(body):08x} {body.decode()}"


def encode(node: str, items: Iterable[tuple[str, Delta]], *, limit: int = LIMIT) -> list[str]:
    """Payloads for ``items`` (``(user_id, delta)`` in streaming order), each at most ``limit``
    bytes, merged per message and split to fit, in order."""
    overhead = len(_frame(node, [])) + 1
    room = limit - overhead
    payloads: list[str] = []
    batch: list[_Entry] = []
    used = 0
    for user_id, delta in merge(items):
        for entry in _pieces(user_id, delta, room):
            size = _size(entry)
            if batch and used + size > room:
                payloads.append(_frame(node, batch))
                batch, used = [], 0
            batch.append(entry)
            used += size
    if batch:
        payloads.append(_frame(node, batch))
    return payloads


def decode(payload: str) -> tuple[str, list[tuple[str, Delta]]]:
    """``(node, [(user_id, delta), ...])`` of a payload; :class:`ValueError` if it is garbled."""
    crc, sep, body = payload.partition(" ")
    raw = body.encode()
    if not sep or len(crc) != 8 or int(crc, 16) != zlib.crc32(raw):
        raise ValueError("a relayed delta payload failed its checksum")
    try:
        node, entries = orjson.loads(raw)
        if not isinstance(node, str):
            raise TypeError("a relayed delta payload names no node")
        out = []
        for user_id, run_id, attempt, message_id, offset, text in entries:
            if not (
                isinstance(user_id, str)
                and isinstance(run_id, str)
                and isinstance(message_id, str)
                and isinstance(text, str)
                and type(attempt) is int
                and type(offset) is int
                and offset >= 0
            ):
                raise TypeError("a relayed delta has fields of the wrong type")
            out.append((user_id, Delta(run_id, attempt, message_id, offset, text)))
    except (TypeError, ValueError) as exc:  # orjson's JSONDecodeError is a ValueError
        raise ValueError(f"a relayed delta payload is malformed: {exc}") from None
    return node, out


HINT = "!"
"""The first character of a hint (a delta payload starts with a hex digit)."""

HINT_KINDS = ("inbox", "reply")


def is_hint(payload: str) -> bool:
    return payload.startswith(HINT)


def _hint_frame(kind: str, node: str, names: list[str]) -> str:
    body = orjson.dumps([kind, node, names])
    return f"{HINT}{zlib.crc32(body):08x} {body.decode()}"


def encode_hints(kind: str, node: str, names: Iterable[str], *, limit: int = LIMIT) -> list[str]:
    """Hints of ``kind`` from ``node`` naming ``names``, each at most ``limit`` bytes, in order.
    No names, or one too long to fit alone: one hint that says "any"."""
    if kind not in HINT_KINDS:
        raise ValueError(f"no such hint: {kind!r}")
    room = limit - len(_hint_frame(kind, node, []))
    sizes = [(name, len(orjson.dumps(name)) + 1) for name in names]  # + the comma between
    if not sizes or any(size > room for _, size in sizes):
        return [_hint_frame(kind, node, [])]
    out: list[str] = []
    batch: list[str] = []
    used = 0
    for name, size in sizes:
        if batch and used + size > room:
            out.append(_hint_frame(kind, node, batch))
            batch, used = [], 0
        batch.append(name)
        used += size
    out.append(_hint_frame(kind, node, batch))
    return out


def decode_hint(payload: str) -> tuple[str, str, list[str]]:
    """``(kind, node, names)`` of a hint; :class:`ValueError` if it is garbled."""
    crc, sep, body = payload[len(HINT) :].partition(" ")
    raw = body.encode()
    try:
        valid = payload.startswith(HINT) and bool(sep) and len(crc) == 8
        if not valid or int(crc, 16) != zlib.crc32(raw):
            raise ValueError("failed its checksum")
        kind, node, names = orjson.loads(raw)
        if kind not in HINT_KINDS or not isinstance(node, str) or not isinstance(names, list):
            raise TypeError("not a hint")
        if not all(isinstance(name, str) for name in names):
            raise TypeError("names that are not strings")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a hint was refused: {exc}") from None
    return kind, node, names
