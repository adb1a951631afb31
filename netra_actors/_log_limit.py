"""Repeated failures logged once per period, not once per attempt.

A store that cannot commit fails every attempt of every client, and clients retry: logging each
one (with its traceback) buries the log. :class:`LogLimiter` lets the first line of a *kind* of
failure through, counts the ones that follow within ``period`` seconds, and says how many there
were on the next line of that kind. :data:`STORE_FAILURES` is the limiter the runtime, the store
and the gateway share for store failures (kinds like ``"session"``, ``"command"``,
``"group_commit"``).

(A local helper of issue 20's hardening; a general one may replace it.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

STORE_FAILURE_PERIOD = 30.0
"""Seconds between two log lines of the same kind of store failure."""
REFUSAL_LOG_PERIOD = 10.0
"""Seconds between two log lines about connections refused to one peer address."""


class LogLimiter:
    """At most one log line per kind per ``period`` seconds. Thread-safe (the SQLite writer logs
    from its own thread)."""

    def __init__(self, period: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}
        """kind → (when its last line was logged, lines suppressed since)."""

    def log(self, logger: logging.Logger, level: int, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless a line of ``kind`` was logged within the period (then only
        count it). True if it was logged."""
        now = self._clock()
        with self._lock:
            since, suppressed = self._kinds.get(kind, (-float("inf"), 0))
            if now - since < self.period:
                self._kinds[kind] = (since, suppressed + 1)
                return False
            self._kinds[kind] = (now, 0)
        if suppressed:
            msg += " (and %d more like it since the last such line)"
            args = (*args, suppressed)
        logger.log(level, msg, *args)
        return True

    def suppressed(self, kind: str) -> int:
        """Lines of ``kind`` not logged since its last line."""
        with self._lock:
            return self._kinds.get(kind, (0.0, 0))[1]


STORE_FAILURES = LogLimiter(STORE_FAILURE_PERIOD)
