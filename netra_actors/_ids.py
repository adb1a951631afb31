"""Identifiers the runtime makes: run ids and message ids (ULIDs: time-ordered, unique)."""

from __future__ import annotations

import random
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """A ULID: 48 bits of milliseconds and 80 random bits, 26 Crockford base-32 characters.

    Unique, not secret: a run id grants nothing (every access is checked against its user), so
    the fast PRNG (seeded from the OS at start) does; ``os.urandom`` costs ~50 µs a call here.
    """
    value = (int(time.time() * 1000) << 80) | random.getrandbits(80)
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_CROCKFORD[rem])
    return "".join(reversed(chars))


def new_run_id() -> str:
    """A new run id: ``r_`` and a ULID."""
    return "r_" + ulid()


def new_message_id() -> str:
    """A new message id: ``m_`` and a ULID (one per message of one attempt)."""
    return "m_" + ulid()
