"""Harness of the deployment tests: docs/deployment.md's nginx configuration and server commands,
run as the guide says, on loopback ports.

* :func:`guide_config` / :func:`guide_serve_args` read the ``nginx`` block and the ``netra-actors
  serve`` lines of docs/deployment.md; :func:`adapt` replaces the guide's example values (ports,
  names, certificate paths) with the test's, failing when one is no longer in the guide.
* :func:`self_signed` makes a certificate for ``127.0.0.1`` with the ``openssl`` command; the
  tests trust it the way a client trusts a CA (``SSL_CERT_FILE``).
* :class:`Nginx` is the Debian package's ``nginx`` binary in the foreground, every path (pid,
  logs, temporary files) in its own directory. To clients it stands where a server stands: the
  ``gwkit`` WebSocket client and the ``aguikit`` streams take it as their ``Server``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from aguikit import StreamChecker, customs, events, post, run_input
from gwkit import (
    STARTUP_TIMEOUT,
    Client,
    Server,
    assert_gapless,
    event_is,
    events_of,
    free_port,
    is_final_state,
    run_async,
    seq_is,
)

__all__ = [  # the gateway kits' helpers the deployment tests use, from one place
    "Client",
    "Server",
    "StreamChecker",
    "assert_gapless",
    "customs",
    "event_is",
    "events",
    "events_of",
    "free_port",
    "is_final_state",
    "post",
    "run_async",
    "run_input",
    "seq_is",
]

P = ParamSpec("P")
T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deployment.md"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
OPENSSL = shutil.which("openssl")

PUBLIC_NAME = "chat.example.com"
"""The public name of the guide's examples."""
GUIDE_PORTS = (8765, 8766)
"""The guide's two server ports."""


def guide_config() -> str:
    """The one ``nginx`` block of docs/deployment.md."""
    blocks = re.findall(r"^```nginx\n(.*?)^```$", GUIDE.read_text(), re.M | re.S)
    assert len(blocks) == 1, f"docs/deployment.md has {len(blocks)} nginx blocks, not one"
    return str(blocks[0])


def guide_serve_args() -> list[str]:
    """The flags of the guide's ``netra-actors serve`` lines (all alike but ``--port``), without
    ``--port`` and ``--db`` (the test server picks its own)."""
    lines = [
        shlex.split(line)
        for line in GUIDE.read_text().splitlines()
        if line.startswith("netra-actors serve ")
    ]
    assert len(lines) == len(GUIDE_PORTS), f"{len(lines)} serve lines in the guide"
    flagsets = []
    for words in lines:
        rest, args = words[2:], []
        while rest:
            word = rest.pop(0)
            if word in ("--port", "--db"):
                rest.pop(0)
            else:
                args.append(word)
        flagsets.append(args)
    assert all(f == flagsets[0] for f in flagsets), f"the servers differ: {flagsets}"
    return flagsets[0]


def adapt(text: str, changes: dict[str, str]) -> str:
    """``text`` with each key replaced by its value; every key must occur in it."""
    for old, new in changes.items():
        assert old in text, f"{old!r} is no longer in docs/deployment.md: update the test"
        text = text.replace(old, new)
    return text


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for ``127.0.0.1`` and ``localhost``."""
    assert OPENSSL is not None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


class Nginx(Server):
    """``nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`` with the guide's configuration, adapted:
    its HTTPS server on ``port``, its plain HTTP server on ``http_port``, its upstreams the given
    servers. ``changes`` replace further text of the guide's block (a timeout)."""

    def __init__(
        self,
        directory: Path,
        upstreams: tuple[Server, Server],
        *,
        cert: Path,
        key: Path,
        port: int | None = None,
        changes: dict[str, str] | None = None,
    ) -> None:
        super().__init__(directory, port=port)
        self.dir = directory
        self.http_port = free_port()
        self.log_path = directory / "error.log"
        live = f"/etc/letsencrypt/live/{PUBLIC_NAME}"
        self.site = adapt(
            guide_config(),
            {
                f"127.0.0.1:{GUIDE_PORTS[0]} ": f"127.0.0.1:{upstreams[0].port} ",
                f"127.0.0.1:{GUIDE_PORTS[1]} ": f"127.0.0.1:{upstreams[1].port} ",
                "listen 80;": f"listen 127.0.0.1:{self.http_port};",
                "listen 443 ssl;": f"listen 127.0.0.1:{self.port} ssl;",
                f"{live}/fullchain.pem": str(cert),
                f"{live}/privkey.pem": str(key),
                **(changes or {}),
            },
        )

    @property
    def origin(self) -> str:
        """The public origin: what a browser that loaded the page from here sends."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return self.origin

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ws"

    def main_config(self) -> str:
        """nginx.conf: every path inside the directory, the guide's block in ``http``."""
        d = self.dir
        user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read the tmp dir
        temp = "".join(
            f"    {kind}_temp_path {d}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n"
            "events { worker_connections 512; }\n"
            f"http {{\n    access_log {d}/access.log;\n{temp}    include {d}/site.conf;\n}}\n"
        )

    def command(self, *extra: str) -> list[str]:
        assert NGINX is not None
        d = self.dir
        return [NGINX, "-p", f"{d}/", "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log", *extra]

    def start(self) -> Nginx:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "site.conf").write_text(self.site)
        (self.dir / "nginx.conf").write_text(self.main_config())
        test = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        assert test.returncode == 0, f"nginx -t:\n{test.stderr}"
        with (self.dir / "nginx.out").open("ab") as out:
            self.proc = subprocess.Popen(
                self.command("-g", "daemon off;"), stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)  # bounded by the deadline
        raise RuntimeError(f"nginx did not listen on {self.port}:\n{self.log()}")

    def stop(self) -> None:
        """Fast shutdown (SIGTERM closes open connections too), then reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def bounded(timeout: float) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, T]]:
    """``gwkit.run_async`` with another time bound."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
        return run_async(fn, timeout=timeout)

    return decorate
