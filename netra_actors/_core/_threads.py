"""The rules of threads, history pages and client-chosen message ids (pure).

A user's log is one gapless ``seq`` stream; a **thread** is a view of it: every run belongs to
one thread (``main`` unless ``say``/``start_run`` named another), and every event of a run
carries its run's thread. This module says what a thread name and a client-chosen message id
may be, how long a thread's title is, and the bounds of the ``threads`` and ``history`` pages.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import re

from .._exceptions import CommandError

DEFAULT_THREAD = "main"
"""The thread of a run that names none (and of everything written before threads existed)."""
MAX_THREAD_CHARS = 128
MAX_MESSAGE_ID_CHARS = 128
TITLE_CHARS = 80
"""A thread's title: the start of its first user message, at most this many characters."""

MAX_THREADS_LIMIT = 100
DEFAULT_THREADS_LIMIT = 50
MAX_HISTORY_LIMIT = 500
DEFAULT_HISTORY_LIMIT = 100

_NAME = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def is_thread_name(value: object) -> bool:
    """True for 1-128 characters of ``A-Z a-z 0-9 . _ : -``."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_thread(value: object) -> str:
    """The thread a command names (None: :data:`DEFAULT_THREAD`); CommandError if unusable."""
    if value is None:
        return DEFAULT_THREAD
    if not is_thread_name(value):
        raise CommandError(
            "thread must be 1-128 characters of A-Z a-z 0-9 . _ : - (default 'main')"
        )
    assert isinstance(value, str)
    return value


def check_message_id(value: object) -> str | None:
    """A client-chosen message id (None: the runtime makes one); CommandError if unusable.

    The same alphabet as thread names (AG-UI ids are UUIDs or similar), 1-128 characters.
    """
    if value is None:
        return None
    if not is_thread_name(value):
        raise CommandError("message_id must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    assert isinstance(value, str)
    return value


def check_limit(value: object, *, default: int, most: int) -> int:
    """A page size: an integer from 1 to ``most`` (None: ``default``)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise CommandError(f"limit must be an integer from 1 to {most}")
    return value


def check_cursor(value: object, name: str) -> int | None:
    """A paging cursor (a seq): an integer >= 1, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CommandError(f"{name} must be an integer >= 1")
    return value


def title_of(text: str) -> str:
    """A thread's title from its first user message: the first line's start, trimmed."""
    line = text.strip().split("\n", 1)[0].strip()
    if len(line) <= TITLE_CHARS:
        return line
    return line[: TITLE_CHARS - 1].rstrip() + "…"
