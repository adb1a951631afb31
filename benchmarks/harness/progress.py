"""Progress on stderr, and the loop that measures every configuration ``--repeat`` times."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

if TYPE_CHECKING:
    from .report import Options

T = TypeVar("T")


class Progress:
    """Progress on stderr: a bar redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._label = ""
        self._last = 0.0
        self._drawn = False
        self._last_line = 0.0

    def step(self, text: str) -> None:
        """A line saying what runs now."""
        if not self.enabled:
            return
        self._clear()
        print(f"[bench] {text}", file=self.stream, flush=True)

    def bar(self, label: str, done: float, total: float) -> None:
        """Progress of a long measurement (rate-limited: cheap to call often)."""
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._last < 0.2 and done < total:
                return
            self._last = now
            frac = max(0.0, min(1.0, done / total))
            width = 30
            filled = int(frac * width)
            text = f"\r[bench] {label} [{'#' * filled}{'.' * (width - filled)}] {frac:4.0%}"
            self.stream.write(text)
            self.stream.flush()
            self._drawn = True
        elif now - self._last_line >= 5.0:
            self._last_line = now
            print(f"[bench] {label}: {done / total:.0%}", file=self.stream, flush=True)

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def done(self) -> None:
        """End the current bar."""
        if self.enabled:
            self._clear()


def measure_repeats(
    options: Options,
    progress: Progress,
    configs: Iterable[T],
    one: Callable[[T], Any],
    *,
    label: Callable[[T], str] = str,
) -> list[list[Any]]:
    """Run ``one(config)`` for every repeat and config, repeats outermost.

    Interleaving (repeat 1 of every config, then repeat 2 …) spreads slow phases of a noisy
    machine over all configurations instead of one.
    """
    configs = list(configs)
    runs: list[list[Any]] = []
    for i in range(options.repeat):
        rows = []
        for config in configs:
            progress.step(f"{options.scenario} {label(config)}: run {i + 1}/{options.repeat}")
            rows.append(one(config))
        runs.append(rows)
    return runs


def alternate(variants: Sequence[T], repeat: int) -> Sequence[T]:
    """The order in which side-by-side variants run in repeat ``repeat`` (0-based): who goes
    first alternates, so that neither always gets the cooler (or warmer) machine."""
    return variants if repeat % 2 == 0 else variants[::-1]
