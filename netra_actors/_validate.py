"""attrs validators shared by every configuration value. Pure (standard library and attrs)."""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._exceptions import ConfigError


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
