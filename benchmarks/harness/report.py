"""The options a scenario gets and the report it returns: columns, goals, the printed table.

A scenario measures its repeats, then builds a :class:`Report` with :meth:`Report.of` (the rows
are the medians of the repeats) and adds its goals and notes. :meth:`Report.render` prints the
table with the command that reproduces it; :meth:`Report.to_json` is what ``--json`` prints.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from typing import Any

import attrs

from .machine import machine_info, now_iso
from .stats import median_rows

Row = dict[str, Any]


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

    def users(self, full: list[int], quick: list[int]) -> list[int]:
        """``--users`` if given, else the scenario's defaults (``quick`` with ``--quick``)."""
        given: list[int] | None = self.extra.get("users")
        if given:
            return given
        return quick if self.quick else full

    @property
    def every(self) -> int:
        """``--every``: events per unit of work (default 10)."""
        every: int = self.extra.get("every") or 10
        return every

    @property
    def events(self) -> int | None:
        """``--events``, if given."""
        events: int | None = self.extra.get("events")
        return events

    @property
    def directory(self) -> str | None:
        """``--dir``: where the SQLite files go (None: the temp directory)."""
        directory: str | None = self.extra.get("dir")
        return directory

    @property
    def clients(self) -> int:
        """``--clients``: client processes (default 2)."""
        clients: int = self.extra.get("clients") or 2
        return clients


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

    @classmethod
    def at_least(cls, text: str, measured: float | None, target: float, unit: str = "") -> Goal:
        """A goal met when ``measured >= target``."""
        return cls(text=text, measured=measured, target=target, unit=unit)

    @classmethod
    def at_most(cls, text: str, measured: float | None, target: float, unit: str = "") -> Goal:
        """A goal met when ``measured <= target``."""
        return cls(text=text, measured=measured, target=target, higher_is_better=False, unit=unit)

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

    @classmethod
    def of(
        cls, title: str, options: Options, columns: list[Column], runs: list[list[Row]], key: str
    ) -> Report:
        """The report of ``runs`` (the rows of every repeat): its rows, their medians by ``key``.

        The scenario then adds its goals and notes (they are read from :attr:`rows`).
        """
        rows = median_rows(runs, key)
        return cls(
            scenario=options.scenario,
            title=title,
            options=options,
            columns=columns,
            rows=rows,
            runs=runs,
        )

    @classmethod
    def skip(
        cls, title: str, options: Options, columns: list[Column], goals: list[Goal], why: str
    ) -> Report:
        """The report of a scenario that cannot run here (no rows; its goals not measured)."""
        return cls(
            scenario=options.scenario,
            title=title,
            options=options,
            columns=columns,
            rows=[],
            runs=[],
            goals=goals,
            skipped=why,
        )

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
