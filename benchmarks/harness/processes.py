"""Server processes of the benchmarks: started, ready, sampled and stopped.

A :class:`ServerProcess` is a child process serving WebSockets on 127.0.0.1, with its log file,
its CPU time, its ``/metrics`` and a graceful stop (a signal, then ``kill -9`` after a timeout).
It is ready when :func:`start_announced` has read its port from what it prints (``netra-actors
serve``'s banner, the e2e server's ``PORT`` line) or :func:`start_polled` has had an answer from
its health check (uvicorn). :func:`serve_with` is the child side of :func:`start_serve`: the CLI's
own ``serve`` with more agents.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from typing import IO, TYPE_CHECKING, Any

from .machine import ROOT, cpu_seconds
from .report import BenchError

if TYPE_CHECKING:
    import netra_actors as na

SERVE_BANNER = r"websocket:\s+ws://[^:]+:(\d+)/ws"
"""The line of ``netra-actors serve``'s banner that names its port."""


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A ready server process on ``127.0.0.1:port`` (WebSocket endpoint :attr:`url`)."""

    def __init__(
        self,
        proc: subprocess.Popen[str],
        log: IO[str],
        port: int,
        *,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 30.0,
    ) -> None:
        self.proc = proc
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/ws"
        self._log = log
        self._stop_signal = stop_signal
        self._stop_timeout = stop_timeout
        self._drain: threading.Thread | None = None
        if proc.stdout is not None:  # the rest of what it prints: read so that the pipe never fills
            self._drain = threading.Thread(target=proc.stdout.read, daemon=True)
            self._drain.start()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu(self) -> float:
        """Its CPU time so far, seconds."""
        return cpu_seconds(self.proc.pid)

    def metrics(self) -> dict[str, float]:
        """The server's ``/metrics`` (unlabelled samples only), by name."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, _, value = line.partition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    continue
        return out

    def log_tail(self) -> str:
        return _tail(self._log)

    def signal_stop(self) -> None:
        """Ask it to stop gracefully (its stop signal); :meth:`wait_stopped` waits."""
        if self.alive:
            self.proc.send_signal(self._stop_signal)

    def wait_stopped(self, timeout: float | None = None) -> None:
        """Wait until it exited (``kill -9`` after ``timeout``), then close its pipe."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=self._stop_timeout if timeout is None else timeout)
        self.kill()

    def stop(self) -> None:
        """Stop gracefully; ``kill -9`` if it does not exit in time."""
        self.signal_stop()
        self.wait_stopped()

    def kill(self) -> None:
        """``kill -9`` (if it still runs), and close its pipe."""
        if self.alive:
            self.proc.kill()
            self.proc.wait()
        if self._drain is not None:
            self._drain.join(timeout=5)
        if self.proc.stdout is not None and not (self._drain and self._drain.is_alive()):
            self.proc.stdout.close()


def _tail(log: IO[str]) -> str:
    try:
        log.flush()
        with open(log.name) as f:
            return f.read()[-2000:]
    except (OSError, AttributeError):
        return ""


def start_announced(
    command: Sequence[str],
    log: IO[str],
    announce: str,
    what: str,
    *,
    stop_signal: int = signal.SIGTERM,
    stop_timeout: float = 30.0,
    timeout: float = 60.0,
) -> ServerProcess:
    """Start ``command`` (stderr to ``log``) and read its stdout until a line matches the
    regular expression ``announce``, whose first group is the port; then it is ready."""
    proc = subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    port = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(announce, line)
        if found:
            port = int(found.group(1))
            break
    if not port:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        raise BenchError(f"{what} did not start: {_tail(log)}")
    return ServerProcess(proc, log, port, stop_signal=stop_signal, stop_timeout=stop_timeout)


def start_polled(
    command: Callable[[int], Sequence[str]],
    log: IO[str],
    what: str,
    *,
    env: dict[str, str],
    health: str = "/healthz",
    stop_signal: int = signal.SIGINT,
    stop_timeout: float = 20.0,
) -> ServerProcess:
    """Start ``command(port)`` on a free port (stdout and stderr to ``log``); it is ready once
    ``GET health`` answers 200. A port taken meanwhile is retried (three attempts)."""
    for _attempt in range(3):  # the port is free when picked; someone may take it meanwhile
        port = free_port()
        proc = subprocess.Popen(
            command(port),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            text=True,
            cwd=ROOT,
        )
        server = ServerProcess(proc, log, port, stop_signal=stop_signal, stop_timeout=stop_timeout)
        if _wait_healthy(proc, f"http://127.0.0.1:{port}{health}"):
            return server
        if server.alive:
            server.stop()
            break
    raise BenchError(f"{what} did not start: {_tail(log)}")


def _wait_healthy(proc: subprocess.Popen[str], url: str, timeout: float = 60.0) -> bool:
    """True once ``url`` answers 200; False if the process exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    return False


def start_serve(module: str, args: Sequence[str], log: IO[str]) -> ServerProcess:
    """``python -m module server ARGS``: ``netra-actors serve ARGS`` (see :func:`serve_with`),
    ready once its banner names the port; stopped with SIGTERM (the CLI drains)."""
    command = module_command(module, "server", *args)
    return start_announced(command, log, SERVE_BANNER, "the server")


def serve_with(agents: Sequence[type[na.types.AgentBase]], argv: Sequence[str]) -> int:
    """``netra-actors serve ARGV`` with ``agents`` registered besides the demo agents.

    The CLI's own ``serve`` (argument parsing, ``--db``, leases, SIGTERM drain): only its agent
    list is extended.
    """
    from netra_actors import _cli

    demo: Sequence[type[na.types.AgentBase]] = getattr(_cli, "DEMO_AGENTS")  # noqa: B009
    setattr(_cli, "DEMO_AGENTS", (*demo, *agents))  # noqa: B010
    return _cli.main(["serve", *argv])


def server_arguments(module: str, argv: Sequence[str] | None) -> tuple[str, bytes, int]:
    """``--db FILE --secret S [--port 0]`` of an e2e server module: (db, secret, port)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    parser.add_argument("--db", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    return args.db, args.secret.encode(), args.port


def child_main(
    module: str,
    agents: Sequence[type[na.types.AgentBase]],
    client: Callable[[], Coroutine[Any, Any, None]],
    argv: Sequence[str] | None = None,
) -> int:
    """The entry point of a scenario module run as a child process (``python -m module``):
    ``server SERVE-ARGS`` (:func:`serve_with` ``agents``) or ``client`` (``client()``, its job on
    stdin)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    parser.add_argument("role", choices=["server", "client"])
    args, rest = parser.parse_known_args(argv)
    if args.role == "server":
        return serve_with(agents, rest)
    asyncio.run(client())
    return 0
