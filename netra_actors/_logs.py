"""Logs a person can act on: the text and JSON formats, crash records, rate-limited failures.

The library logs under ``netra_actors`` and adds only a ``NullHandler``: where the records go is
the application's choice. :func:`configure_logging` is that choice made simple — one handler on
the root logger, in ``text`` or ``json`` (one object a line, every ``extra=`` field a key), and
under uvicorn the same format for uvicorn's own loggers.

A crashed attempt is one record (:func:`log_crash`) with its traceback and the fields
``user_id``, ``run_id``, ``attempt``, ``agent`` and ``reason``. A failure that repeats (a store
that cannot commit) goes through :func:`log_limited`: the first occurrence of a key is logged,
repeats within the period are counted, and the next one logged after the period says how many
were left out.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson

from ._exceptions import ConfigError

#: The attributes every ``LogRecord`` has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: uvicorn's loggers (they do not propagate to the root logger): given the same format.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, every field passed with ``extra=``, and for an exception ``exc_type`` and
    ``traceback`` (the whole traceback as one string)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            out["exc_type"] = type(record.exc_info[1]).__name__
            out["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


def _formatter(format: str) -> logging.Formatter:
    if format == "json":
        return JsonFormatter()
    if format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ConfigError(f"the log format is 'text' or 'json', got {format!r}")


def configure_logging(
    format: Literal["text", "json"] = "text",
    level: int | str = "INFO",
    *,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log record of the process (netra_actors' too) to ``stream`` (default
    stderr), as ``text`` lines or ``json`` objects, from ``level`` up. Returns the handler.

    It replaces the handler an earlier call installed (call it again to change the format), sets
    the root logger's level, and gives uvicorn's loggers' handlers the same format: call it at
    the import of the application module that uvicorn serves.
    """
    formatter = _formatter(format)
    if isinstance(level, str):
        level = level.upper()
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_netra", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler._netra = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in UVICORN_LOGGERS:
        for other in logging.getLogger(name).handlers:
            if format == "json":
                other.setFormatter(formatter)
    return handler


# -------------------------------------------------------------------------- crashes


def log_crash(
    log: logging.Logger,
    *,
    user_id: str,
    run_id: str,
    attempt: int,
    agent: str,
    reason: str,
    error: BaseException,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """One record for one crashed attempt, with its traceback: ERROR for a crash, WARNING when
    the agent failed the run on purpose (``reason`` ``error``: ``RunFailedError``)."""
    fields = {
        "user_id": user_id,
        "run_id": run_id,
        "attempt": attempt,
        "agent": agent,
        "reason": reason,
        **(extra or {}),
    }
    log.log(
        logging.WARNING if reason == "error" else logging.ERROR,
        "user %r run %s attempt %d of agent %r %s: %s: %s",
        user_id,
        run_id,
        attempt,
        agent,
        "failed" if reason == "error" else "crashed",
        type(error).__name__,
        error,
        exc_info=(type(error), error, error.__traceback__),
        extra=fields,
    )


def log_store_error(
    log: logging.Logger, user_id: str, run_id: str, attempt: int, agent: str, error: str
) -> None:
    """An attempt whose commit failed: a WARNING, at most one per period for the whole process
    (a store that cannot commit fails every user's attempts alike)."""
    log_limited(
        log,
        logging.WARNING,
        "store_error",
        "user %r run %s attempt %d of agent %r: its commit failed, the attempt is rolled back: %s",
        user_id,
        run_id,
        attempt,
        agent,
        error,
        extra={
            "user_id": user_id,
            "run_id": run_id,
            "attempt": attempt,
            "agent": agent,
            "reason": "store_error",
        },
    )


# -------------------------------------------------------------------------- rate limiting


class RateLimiter:
    """At most one occurrence of a key per ``period`` seconds; it counts the ones left out.

    ``clock`` is injected (tests pass a fake one). It remembers at most ``max_keys`` keys; the
    oldest are forgotten first.
    """

    def __init__(
        self,
        period: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        self.period = period
        self._clock = clock
        self._max_keys = max_keys
        self._seen: dict[Hashable, list[float]] = {}
        """key -> [when it was last let through, how many were left out since]."""
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> tuple[int, float] | None:
        """None: leave this occurrence out. Else (how many were left out since the last one
        let through, seconds since then)."""
        with self._lock:  # the SQLite writer logs from its own thread
            return self._admit(key)

    def _admit(self, key: Hashable) -> tuple[int, float] | None:
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= self._max_keys:
                del self._seen[next(iter(self._seen))]
            self._seen[key] = [now, 0]
            return 0, 0.0
        if now - seen[0] < self.period:
            seen[1] += 1
            return None
        left_out, elapsed = int(seen[1]), now - seen[0]
        seen[0], seen[1] = now, 0
        return left_out, elapsed


FAILURES = RateLimiter()
"""The process's limiter of repeated failures (one line per key every 10 s)."""

STORE_FAILURES = RateLimiter(30.0)
"""Store failures: a store that cannot commit fails every attempt of every client, and clients
retry; the runtime, the store's writer and the servers log each kind once per 30 s."""


def log_limited(
    log: logging.Logger,
    level: int,
    key: Hashable,
    msg: str,
    *args: object,
    exc_info: Any = None,
    extra: Mapping[str, Any] | None = None,
    limiter: RateLimiter = FAILURES,
) -> bool:
    """Log ``msg % args`` unless the same failure (this logger, this ``msg``, this ``key``) was
    logged less than the limiter's period ago. The first one logged after the period ends with
    "(and N more in the last T s)" and has the field ``suppressed``. True if it was logged."""
    admitted = limiter.admit((log.name, msg, key))
    if admitted is None:
        return False
    left_out, elapsed = admitted
    fields = dict(extra or {})
    if left_out:
        msg = f"{msg} (and {left_out} more in the last {elapsed:.0f} s)"
        fields["suppressed"] = left_out
    log.log(level, msg, *args, exc_info=exc_info, extra=fields)
    return True
