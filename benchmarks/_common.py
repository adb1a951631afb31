"""What every scenario shares: options, timing helpers, medians, progress, machine facts, output.

A scenario measures one repeat at a time and returns rows (one dict per configuration, e.g. per
number of users). :func:`median_rows` turns the repeats into the reported rows: the median of every
numeric field, booleans only true if true in every repeat. :class:`Report` is what gets printed as a
table and, with ``--json``, as one JSON document.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import math
import os
import platform
import shlex
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import attrs

Row = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
"""The checkout the benchmarks run from (the directory that holds ``benchmarks/``)."""


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs ``python -m module args...`` in this interpreter."""
    return [sys.executable, "-m", module, *args]


def child_env() -> dict[str, str]:
    """The environment of a child process started by :func:`module_command`.

    ``benchmarks`` is not installed (it is not in the wheel): the child finds it through
    ``PYTHONPATH``, whatever its working directory.
    """
    env = dict(os.environ)
    paths = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class BenchError(Exception):
    """A benchmark did not do what it claims (lost events, count mismatch): fail loudly."""


@attrs.frozen(kw_only=True)
class Options:
    """The options every scenario gets (parsed from the command line)."""

    scenario: str
    argv: tuple[str, ...]
    """The arguments after ``bench`` exactly as given (for the reproducing command)."""
    quick: bool = False
    repeat: int = 3
    json: bool = False
    progress: bool = True
    extra: dict[str, Any] = attrs.field(factory=dict)
    """Scenario-specific options (``--users`` …), already parsed."""

    @property
    def command(self) -> str:
        """The exact command that reproduces this result."""
        return shlex.join(["python", "-m", "benchmarks", *self.argv])


@attrs.frozen(kw_only=True)
class Column:
    """One column of a result table."""

    key: str
    title: str
    fmt: str = "{:,.0f}"

    def render(self, row: Row) -> str:
        value = row.get(self.key)
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "NO"
        if isinstance(value, int | float):
            return self.fmt.format(value)
        return str(value)


@attrs.frozen(kw_only=True)
class Goal:
    """A goal from the issue and how this run compares with it."""

    text: str
    """The goal, as the issue states it."""
    measured: float | None
    target: float
    higher_is_better: bool = True
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None or math.isnan(self.measured):
            return None
        if self.higher_is_better:
            return self.measured >= self.target
        return self.measured <= self.target

    @property
    def factor(self) -> float | None:
        """measured / target (higher-is-better) or target / measured: above 1 means met."""
        if self.measured is None or self.measured == 0 or math.isnan(self.measured):
            return None
        if self.higher_is_better:
            return self.measured / self.target
        return self.target / self.measured

    def to_json(self) -> dict[str, Any]:
        return {
            "goal": self.text,
            "target": self.target,
            "measured": self.measured,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "met": self.met,
            "factor": self.factor,
        }

    def describe(self) -> str:
        if self.measured is None:
            return f"goal: {self.text} - not measured"
        verdict = {True: "MET", False: "NOT MET", None: "?"}[self.met]
        factor = self.factor
        how = f" ({factor:.2f}x of the goal)" if factor is not None else ""
        return f"goal: {self.text} - measured {_num(self.measured)}{self.unit}: {verdict}{how}"


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


@attrs.define(kw_only=True)
class Report:
    """The result of one scenario: printed as a table, or as JSON."""

    scenario: str
    title: str
    options: Options
    columns: list[Column]
    rows: list[Row]
    runs: list[list[Row]]
    """The rows of every repeat (the reported rows are their medians)."""
    goals: list[Goal] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)
    skipped: str | None = None
    """Why the scenario did not run here (e.g. no PostgreSQL server); then there are no rows."""
    machine: dict[str, Any] = attrs.field(factory=lambda: machine_info())
    started: str = attrs.field(factory=lambda: now_iso())
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "command": self.options.command,
            "date": self.started,
            "machine": self.machine,
            "quick": self.options.quick,
            "repeat": self.options.repeat,
            "statistic": "median of the repeats",
            "seconds": round(self.seconds, 3),
            "columns": [{"key": c.key, "title": c.title} for c in self.columns],
            "rows": self.rows,
            "runs": self.runs,
            "goals": [g.to_json() for g in self.goals],
            "notes": self.notes,
            "skipped": self.skipped,
        }

    def render(self) -> str:
        m = self.machine
        lines = [
            f"## {self.scenario}: {self.title}",
            f"date: {self.started}   machine: {m['cores']} cores ({m['cpu']}), "
            f"{m['memory_gib']:.1f} GiB, Python {m['python']}, SQLite {m['sqlite']}, "
            f"load avg at start {m['load_avg'][0]:.2f}, revision {m.get('revision', '-')}",
            f"SQLite files in {m.get('db_dir', '?')} ({m.get('db_filesystem', '?')})",
            f"command: {self.options.command}",
            f"median of {self.options.repeat} run(s)"
            + (" (--quick: small sizes, figures are not comparable)" if self.options.quick else ""),
            "",
            f"SKIPPED: {self.skipped}" if self.skipped else table(self.columns, self.rows),
        ]
        if self.goals:
            lines.append("")
            lines.extend(g.describe() for g in self.goals)
        if self.notes:
            lines.append("")
            lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def table(columns: Sequence[Column], rows: Sequence[Row]) -> str:
    """A plain-text table (Markdown-compatible)."""
    cells = [[c.title for c in columns]] + [[c.render(r) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    out = []
    for n, row in enumerate(cells):
        out.append("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(out)


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    k = (len(data) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (k - lo))


def median_rows(runs: Sequence[Sequence[Row]], key: str) -> list[Row]:
    """Merge the rows of several repeats by ``key``: numbers become their median.

    Booleans are true only if true in every repeat (a check must hold every time); other values
    are taken from the first repeat.
    """
    order: list[Any] = []
    groups: dict[Any, list[Row]] = {}
    for rows in runs:
        for row in rows:
            k = row[key]
            if k not in groups:
                order.append(k)
                groups[k] = []
            groups[k].append(row)
    merged = []
    for k in order:
        group = groups[k]
        out: Row = {}
        for field in group[0]:
            values = [r[field] for r in group if field in r]
            first = values[0]
            if isinstance(first, bool):
                out[field] = all(values)
            elif field == key:
                out[field] = first
            elif isinstance(first, int | float) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            ):
                med = statistics.median(values)
                out[field] = int(med) if all(isinstance(v, int) for v in values) else med
            else:
                out[field] = first
        merged.append(out)
    return merged


def rate(count: float, seconds: float) -> float:
    """``count / seconds`` (0 when no time passed)."""
    return count / seconds if seconds > 0 else 0.0


# -- the machine ------------------------------------------------------------------------------


def _meminfo_kib(field: str) -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def source_revision() -> str:
    """``git describe``-style revision of the checkout this package runs from ("-" if unknown)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=10"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "-"
    return out.stdout.strip() or "-"


def machine_info() -> dict[str, Any]:
    """Cores, memory (``/proc/meminfo``), CPU, Python, SQLite, library versions, load average."""
    mem_kib = _meminfo_kib("MemTotal")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return {
        "cores": os.cpu_count() or 0,
        "cores_usable": usable,
        "cpu": _cpu_model(),
        "memory_kib": mem_kib,
        "memory_gib": mem_kib / 1024 / 1024,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "packages": {
            p: _version(p)
            for p in ("netra-actors", "trio", "sqlalchemy", "aiosqlite", "pykka", "websockets")
        },
        "load_avg": list(os.getloadavg()),
        "revision": source_revision(),
    }


def now_iso() -> str:
    """The current local date and time, ISO 8601 with offset, to the second."""
    return datetime.datetime.now().astimezone().replace(microsecond=0).isoformat()


def rss_kib() -> int:
    """This process's resident set size (``VmRSS`` in ``/proc/self/status``), KiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- progress ---------------------------------------------------------------------------------


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
    configs: Iterable[Any],
    one: Callable[[Any, int], Row],
    *,
    label: Callable[[Any], str] = str,
) -> list[list[Row]]:
    """Run ``one(config, repeat_index)`` for every repeat and config, repeats outermost.

    Interleaving (repeat 1 of every config, then repeat 2 …) spreads slow phases of a noisy
    machine over all configurations instead of one.
    """
    configs = list(configs)
    runs: list[list[Row]] = []
    for i in range(options.repeat):
        rows = []
        for config in configs:
            progress.step(f"{options.scenario} {label(config)}: run {i + 1}/{options.repeat}")
            rows.append(one(config, i))
        runs.append(rows)
    return runs


def filesystem_of(path: str) -> str:
    """The filesystem type holding ``path`` (from ``/proc/mounts``), e.g. ``ext4`` or ``tmpfs``."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1]
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
                    best
                ):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


class GcTimer:
    """Time spent in the garbage collector while active (``gc.callbacks``), by generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._started
            self.collections[generation] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    @property
    def total(self) -> float:
        return sum(self.seconds)


@contextlib.contextmanager
def runtime_gc_threshold() -> Iterator[tuple[int, int, int] | None]:
    """Apply the runtime's default collector thresholds (``RuntimeConfig().gc_threshold``).

    The runtime sets them while it is open; code measured against it or without it (the store
    alone, the peer designs) gets the same setting, so that no ratio is a collector setting.
    """
    from netra_actors import RuntimeConfig

    threshold: tuple[int, int, int] | None = getattr(RuntimeConfig(), "gc_threshold", None)
    if threshold is None:
        yield None
        return
    before = gc.get_threshold()
    gc.set_threshold(*threshold)
    try:
        yield threshold
    finally:
        gc.set_threshold(*before)
