"""The token secret of a server: given, from ``$NETRA_SECRET``, or persisted on first use."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from .._exceptions import ConfigError
from ._tokens import MIN_SECRET_BYTES, RECOMMENDED_SECRET_BYTES

SECRET_FILE = "secret"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def netra_home() -> Path:
    """``$NETRA_HOME`` or ``~/.netra-actors``."""
    home = os.environ.get("NETRA_HOME")
    return Path(home) if home else Path.home() / ".netra-actors"


def _persisted_secret() -> tuple[bytes, Path, bool]:
    """The persisted secret, created (mode 0600) on first use. Returns (secret, path, created)."""
    directory = netra_home()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / SECRET_FILE
    created = False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        created = True
    secret = path.read_text().strip().encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"the secret in {path} is too short; delete the file to get a new one")
    return secret, path, created


def resolve_secret(given: str | None) -> bytes:
    """``--secret``, else ``$NETRA_SECRET``, else the persisted secret (saying which)."""
    value = given if given is not None else os.environ.get("NETRA_SECRET")
    if value is not None:
        secret = value.encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError("the secret must not be empty")
        if len(secret) < RECOMMENDED_SECRET_BYTES:
            _say(
                f"netra-actors: warning: the secret is shorter than {RECOMMENDED_SECRET_BYTES} "
                "bytes and easy to guess; use a long random one outside of tests"
            )
        return secret
    secret, path, created = _persisted_secret()
    _say(
        f"netra-actors: {'created a new random secret in' if created else 'using the secret in'} "
        f"{path} (set --secret or NETRA_SECRET to use your own)"
    )
    return secret
