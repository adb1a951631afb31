"""Facts about the machine and its processes: cores, memory, versions, CPU time, RSS, the collector.

:func:`machine_info` is what every report names; :func:`cpu_seconds` and :func:`rss_kib` sample
processes while a scenario runs; :class:`GcTimer` and :func:`runtime_gc_threshold` account for and
align Python's garbage collector.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import platform
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
"""The checkout the benchmarks run from (the directory that holds ``benchmarks/``)."""


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
