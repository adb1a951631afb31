"""attrs validators shared by every configuration value, and the range of a ``seq`` cursor. Pure
(standard library and attrs)."""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._exceptions import CommandError, ConfigError


def positive(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    """A finite number > 0 (not a bool)."""
    if isinstance(value, bool) or not (
        isinstance(value, int | float) and value > 0 and math.isfinite(value)
    ):
        raise ConfigError(f"{attr.name} must be a finite number > 0, got {value!r}")


def positive_int(_inst: object, attr: attrs.Attribute[Any], value: int) -> None:
    """An integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attr.name} must be an integer >= 1, got {value!r}")


def non_negative_int(_inst: object, attr: attrs.Attribute[Any], value: int) -> None:
    """An integer >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{attr.name} must be an integer >= 0, got {value!r}")


MAX_SEQ = 2**63 - 1
"""The largest ``seq`` there can be: both databases store it as a signed 64-bit integer. A
cursor beyond it (``resume_from``, ``Last-Event-ID``) is a bad request, not a store failure."""


def check_seq(name: str, value: object) -> int:
    """``value`` if it is a usable ``seq`` cursor (an integer in ``0..MAX_SEQ``); else raise
    :class:`~netra_actors.CommandError` (``bad_request``) naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise CommandError(f"{name} must be an integer in 0..{MAX_SEQ}")
    return value
