"""The ``netra-actors`` command: tokens, the persisted secret, and the development sign-in rules
(on by default only on loopback; ``--dev-tokens`` refused elsewhere — checked without binding)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netra_actors._cli import gateway_config, main
from netra_actors._cli_parser import build_parser
from netra_actors.exceptions import ConfigError
from netra_actors.gateway import GatewayConfig, is_loopback_host, verify_token

SECRET = "cli-secret-0123456789abcdef"


def test_token_prints_a_verifiable_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "alice", "--secret", SECRET, "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    claims = verify_token(SECRET.encode(), token, now=time.time())
    assert claims.user == "alice"
    assert 100 < claims.expires_at - time.time() <= 120.01


def test_a_short_secret_works_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "erin", "--secret", "s3cret"]) == 0
    out = capsys.readouterr()
    assert "warning: the secret is shorter than 16 bytes" in out.err
    assert verify_token(b"s3cret", out.out.strip(), now=time.time()).user == "erin"


def test_netra_secret_environment_is_the_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETRA_SECRET", SECRET)
    assert main(["token", "bob"]) == 0
    token = capsys.readouterr().out.strip()
    assert verify_token(SECRET.encode(), token, now=time.time()).user == "bob"


def test_without_a_secret_one_is_persisted_with_mode_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NETRA_SECRET", raising=False)
    monkeypatch.setenv("NETRA_HOME", str(tmp_path / "home"))
    assert main(["token", "carol"]) == 0
    first = capsys.readouterr()
    secret_file = tmp_path / "home" / "secret"
    assert "created a new random secret" in first.err
    assert str(secret_file) in first.err
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip().encode()
    assert verify_token(secret, first.out.strip(), now=time.time()).user == "carol"
    assert main(["token", "carol"]) == 0
    second = capsys.readouterr()
    assert "using the secret in" in second.err
    assert verify_token(secret, second.out.strip(), now=time.time()).user == "carol"


def test_token_refuses_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["token", "", "--secret", SECRET])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["token", "dave", "--secret", ""])
    with pytest.raises(SystemExit):
        main(["token", "dave", "--secret", SECRET, "--ttl", "-5"])
    capsys.readouterr()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("example.com", False),
    ],
)
def test_dev_tokens_default_on_only_for_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
    parser = build_parser()
    args = parser.parse_args(["serve", "--host", host, "--secret", SECRET])
    assert gateway_config(args, parser).dev_tokens is loopback


def test_dev_tokens_flag_is_refused_on_a_public_host(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--host", "0.0.0.0", "--dev-tokens", "--secret", SECRET])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--dev-tokens is refused on the non-loopback host" in err
    # and the library refuses it too, whoever builds the config
    with pytest.raises(ConfigError):
        GatewayConfig(secret=SECRET.encode(), host="0.0.0.0", dev_tokens=True)
    GatewayConfig(secret=SECRET.encode(), host="0.0.0.0")  # off is fine


def test_serve_reports_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = dict(os.environ, NETRA_HOME=str(tmp_path))
        proc = subprocess.run(
            [sys.executable, "-m", "netra_actors._cli", "serve", "--port", str(port),
             "--db", str(tmp_path / "x.db"), "--secret", SECRET],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in proc.stderr
