"""The example chat server as a subprocess, for the browser tests (a helper module, not a test).

The server is started exactly as a newcomer would start it (``netra-actors serve``), on a free
loopback port with a throwaway SQLite file, and can be stopped with SIGTERM and started again on
the same port and database to exercise the page's reconnect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from gwkit import free_port as free_port

CHROMIUM = Path("/usr/bin/chromium")
"""The browser the tests drive (Debian's package)."""
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
SECRET = "browser-test-secret-0123456789"


class ChatServer:
    """``netra-actors serve`` in a subprocess; ``stop`` + ``start`` keep the port and database."""

    def __init__(self, *, port: int, db: Path, log: Path) -> None:
        self.port = port
        self.db = db
        self.log = log
        self.url = f"http://127.0.0.1:{port}/"
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> list[str]:
        """``python -m netra_actors._cli ARGS`` with the test's secret."""
        return [sys.executable, "-m", "netra_actors._cli", *args]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ensure_running(self) -> None:
        """Start the server again if an earlier test left it stopped or it died."""
        if not self.running:
            self.kill()
            self.start()

    def start(self) -> None:
        assert self._proc is None, "already running"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NETRA_SECRET", None)
        with self.log.open("ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(
                    "serve",
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                    *("--db", str(self.db), "--secret", SECRET),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: object = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise AssertionError(
                    f"the server exited with {self._proc.returncode} while starting:\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}healthz", timeout=1.0) as resp:
                    if resp.status == 200:
                        json.loads(resp.read())
                        return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last = exc
            time.sleep(0.1)
        self.kill()
        raise AssertionError(
            f"GET /healthz did not answer within {START_TIMEOUT}s ({last!r}):\n{self.output()}"
        )

    def stop(self) -> int:
        """SIGTERM (graceful shutdown), then wait; SIGKILL if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
            raise AssertionError(
                f"the server did not exit within {STOP_TIMEOUT}s of SIGTERM:\n{self.output()}"
            ) from None

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def token(self, user: str) -> str:
        """A token minted by the CLI (``netra-actors token USER --secret S``)."""
        out = subprocess.run(
            self.command("token", user, "--secret", SECRET),
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1].strip()

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


ROOT = Path(__file__).resolve().parents[2]


class UvicornChatServer(ChatServer):
    """``uvicorn examples.fastapi_app:app`` (the ASGI adapter in FastAPI) as the chat server."""

    def start(self) -> None:
        assert self._proc is None, "already running"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NETRA_SECRET": SECRET}
        env["NETRA_DB"] = str(self.db)
        with self.log.open("ab") as log:
            log.write(f"--- start uvicorn {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "examples.fastapi_app:app"),
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
            )
        self._wait_healthy()
