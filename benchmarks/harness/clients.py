"""Fan-out of client processes, from the benchmark's side.

Each client process (``python -m MODULE ARGS``) gets one JSON job line on stdin, opens its sockets
and prints ``ready``; :meth:`ClientProcesses.go` tells every one to start at once; each ends by
printing one JSON line, its result. The child side is :mod:`.wsclient`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from collections.abc import Sequence
from typing import Any, Self, TypeVar

from netra_actors.gateway import mint_token

from .processes import child_env, module_command
from .report import BenchError

T = TypeVar("T")


def require_websockets(scenario: str) -> None:
    """Fail unless the ``websockets`` package (a dev extra) is installed: the clients use it."""
    if importlib.util.find_spec("websockets") is None:
        raise BenchError(
            f"{scenario} needs the websockets package (a dev extra): pip install -e '.[dev]' or ./run"
        )


def user_token(secret: str, user: str) -> str:
    """A token for ``user`` signed with the servers' ``secret``, valid for an hour."""
    return mint_token(secret.encode(), user, 3600.0, now=time.time())


def deal(items: Sequence[T], clients: int) -> list[list[T]]:
    """``items`` dealt round-robin to ``clients`` processes (no more processes than items)."""
    n = max(1, min(clients, len(items)))
    return [list(items[i::n]) for i in range(n)]


class ClientProcesses:
    """One client process per job, started at once; used as a context manager, which kills
    whatever still runs on the way out."""

    def __init__(self, command: Sequence[str], jobs: Sequence[dict[str, Any]], what: str) -> None:
        self.what = what
        """How errors name a client (``"an e2e client"``)."""
        self.procs: list[subprocess.Popen[str]] = []
        for job in jobs:
            proc = subprocess.Popen(
                command,
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()

    @classmethod
    def of(cls, module: str, *args: str, jobs: Sequence[dict[str, Any]], what: str) -> Self:
        """The clients ``python -m module args`` (see :func:`.processes.module_command`)."""
        return cls(module_command(module, *args), jobs, what)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self) -> None:
        """Wait until every client has opened its sockets (printed ``ready``)."""
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                _, err = proc.communicate(timeout=30)
                raise BenchError(f"{self.what} could not connect: {err[-2000:]}")

    def go(self) -> float:
        """Tell every client to start; the time (epoch seconds) just before."""
        t0 = time.time()
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return t0

    def results(self, timeout: float) -> list[dict[str, Any]]:
        """Every client's result (its last line), waiting up to ``timeout`` for each."""
        results = []
        for proc in self.procs:
            out, err = proc.communicate(timeout=timeout)
            if proc.returncode != 0 or not out.strip():
                raise BenchError(f"{self.what} failed ({proc.returncode}): {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results

    def close(self) -> None:
        """Kill every client that still runs."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
