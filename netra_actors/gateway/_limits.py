"""Per-user limits: a token bucket for inbound messages and a cap on open sockets. Pure.

Time is an argument (``now``, seconds on any monotonic clock). One :class:`UserLimits` is shared
by every socket of the gateway; a user's entry exists while the user has an open socket, and for
``burst / per_second`` seconds after its last socket closed — until its bucket would be full
again (forgetting it sooner would let a client refill its bucket just by reconnecting). So the
table is bounded by the open sockets plus the users who left within that time.
"""

from __future__ import annotations

import collections

import attrs

from .._exceptions import ConfigError
from .._validate import positive, positive_int


@attrs.frozen(kw_only=True)
class RateLimit:
    """A token bucket's shape: ``burst`` messages at once, refilled at ``per_second``."""

    per_second: float = attrs.field(default=50.0, validator=positive)
    burst: int = attrs.field(default=200, validator=positive_int)


@attrs.define
class TokenBucket:
    """A token bucket. :meth:`take` spends one token if there is one."""

    limit: RateLimit
    tokens: float
    updated: float

    @classmethod
    def full(cls, limit: RateLimit, now: float) -> TokenBucket:
        """A bucket holding ``burst`` tokens at ``now``."""
        return cls(limit, float(limit.burst), now)

    def take(self, now: float) -> bool:
        """Spend one token at ``now``; False (and nothing spent) when the bucket is empty."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.limit.burst), self.tokens + elapsed * self.limit.per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@attrs.define
class _UserEntry:
    sockets: int
    bucket: TokenBucket


class UserLimits:
    """Open sockets and the message bucket of every user with a socket."""

    def __init__(self, rate: RateLimit, max_sockets_per_user: int) -> None:
        if isinstance(max_sockets_per_user, bool) or max_sockets_per_user < 1:
            raise ConfigError("max_sockets_per_user must be an integer >= 1")
        self.rate = rate
        self.max_sockets_per_user = max_sockets_per_user
        self._users: dict[str, _UserEntry] = {}
        self._idle: collections.OrderedDict[str, float] = collections.OrderedDict()
        """Users without a socket whose entry is kept, oldest first: user → when it left."""

    def _forget_refilled(self, now: float) -> None:
        """Drop the idle users whose bucket is full again by now."""
        refill = self.rate.burst / self.rate.per_second
        while self._idle:
            user, since = next(iter(self._idle.items()))
            if now - since < refill:
                break
            del self._idle[user]
            del self._users[user]

    def open_socket(self, user: str, now: float) -> bool:
        """Count a new socket of ``user``; False (nothing counted) if the user is at the cap."""
        self._forget_refilled(now)
        entry = self._users.get(user)
        if entry is None:
            self._users[user] = _UserEntry(1, TokenBucket.full(self.rate, now))
            return True
        if entry.sockets >= self.max_sockets_per_user:
            return False
        entry.sockets += 1
        self._idle.pop(user, None)
        return True

    def close_socket(self, user: str, now: float | None = None) -> None:
        """Forget one socket of ``user``. With ``now``, the entry stays until its bucket would
        be full again; without, it goes with the last socket."""
        entry = self._users.get(user)
        if entry is None:
            return
        entry.sockets -= 1
        if entry.sockets > 0:
            return
        if now is None:
            del self._users[user]
            self._idle.pop(user, None)
            return
        entry.sockets = 0
        self._idle[user] = now
        self._idle.move_to_end(user)
        self._forget_refilled(now)

    def allow_message(self, user: str, now: float) -> bool:
        """Spend one message of ``user``'s bucket (shared by all of the user's sockets)."""
        entry = self._users.get(user)
        return entry is None or entry.bucket.take(now)

    def sockets(self, user: str) -> int:
        """Open sockets of ``user``."""
        entry = self._users.get(user)
        return 0 if entry is None else entry.sockets

    @property
    def users(self) -> int:
        """Users with at least one open socket."""
        return len(self._users) - len(self._idle)
