"""The ``netra-actors`` command's arguments: the parser of ``serve``, ``token``,
``erase-user`` and ``export-user``, and its checks.

Every flag, its default and its help text are here; ``_cli.py`` turns the parsed arguments into
configurations and runs the command.
"""

from __future__ import annotations

import argparse
import os

from . import __version__
from ._core._admission import IF_BUSY

DEFAULT_TTL = 24 * 3600.0
"""How long a token from ``netra-actors token`` lasts unless ``--ttl`` says (a day)."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def installed_version() -> str:
    """The installed distribution's version (its metadata), else ``__version__`` (a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("netra-actors")
    except PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``netra-actors`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="netra-actors",
        description="netra-actors: an actor runtime per user session, and its example chat server.",
    )
    parser.add_argument(
        "--version", action="version", version=f"netra-actors {installed_version()}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the example chat server (page, health, metrics, /ws)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks one)")
    serve.add_argument(
        "--db",
        default="./netra.db",
        metavar="URL|PATH",
        help="the database: a SQLite file path, or a URL such as "
        "postgresql+asyncpg://user@host:5432/db (default ./netra.db). Servers started with the "
        "same --db and --secret form one cluster",
    )
    serve.add_argument(
        "--lease-ttl",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds a user's lease lasts without renewal: how soon another server takes over "
        "the users of one that died (default 10)",
    )
    serve.add_argument(
        "--node-id",
        default=None,
        metavar="NAME",
        help="this server's name in the cluster (default: the host name; a per-process suffix is "
        "always added)",
    )
    serve.add_argument(
        "--retention-days",
        type=_positive_float,
        default=None,
        metavar="N",
        help="erase the events of threads with no activity for N days, in bounded background "
        "batches (default: keep everything)",
    )
    serve.add_argument(
        "--retention-batch",
        type=_positive_int,
        default=1000,
        metavar="EVENTS",
        help="events one retention transaction erases at most (default 1000)",
    )
    serve.add_argument(
        "--retention-pause",
        type=float,
        default=0.05,
        metavar="S",
        help="seconds retention waits between its batches (default 0.05)",
    )
    own = serve.add_argument_group("your own agents and sign-in")
    own.add_argument(
        "--agents",
        action="append",
        metavar="MODULE:ATTRIBUTE",
        help="serve these agents instead of the demo ones: a list of agent classes, or a "
        "callable returning one, loaded like uvicorn's module:app with the current directory "
        "on sys.path (repeatable)",
    )
    own.add_argument(
        "--default-agent",
        metavar="NAME",
        help="the agent a say without 'agent' runs (default: the first one)",
    )
    own.add_argument(
        "--auth",
        metavar="MODULE:CALLABLE",
        help="your sign-in function: given a request's headers and cookies, the user id (or "
        "None, or it raises SignInRefused); netra's own tokens stay accepted where it answers "
        "None. Development sign-in is then off unless --dev-tokens",
    )
    llm = serve.add_argument_group("the LLM agent (an OpenAI-compatible chat completions API)")
    llm.add_argument(
        "--llm-base-url",
        default=os.environ.get("NETRA_LLM_BASE_URL"),
        metavar="URL",
        help="register the 'llm' agent, calling this API root, e.g. http://127.0.0.1:11434/v1 "
        "(Ollama) or http://127.0.0.1:8000/v1 (vLLM) (default $NETRA_LLM_BASE_URL)",
    )
    llm.add_argument(
        "--llm-model",
        default=os.environ.get("NETRA_LLM_MODEL"),
        metavar="NAME",
        help="the model to ask (required with --llm-base-url; default $NETRA_LLM_MODEL)",
    )
    llm.add_argument(
        "--llm-api-key",
        default=None,
        metavar="KEY",
        help="the API key (default $NETRA_LLM_API_KEY, else $OPENAI_API_KEY, else none)",
    )
    serve.add_argument("--secret", help="token secret (default $NETRA_SECRET, else persisted)")
    serve.add_argument(
        "--allowed-origin",
        action="append",
        metavar="ORIGIN",
        help="an Origin allowed to open a socket, exact match (repeatable; default: the page's "
        "own http://127.0.0.1:PORT, http://localhost:PORT, http://[::1]:PORT)",
    )
    serve.add_argument(
        "--admin-token",
        default=os.environ.get("NETRA_ADMIN_TOKEN") or None,
        metavar="TOKEN",
        help="serve the inspector at /inspector to this credential, at least 16 characters "
        "(default $NETRA_ADMIN_TOKEN; none: no inspector)",
    )
    dev = serve.add_mutually_exclusive_group()
    dev.add_argument(
        "--dev-tokens",
        dest="dev_tokens",
        action="store_true",
        default=None,
        help="development sign-in: the page may mint a token for any user name "
        "(default: on for a loopback host; refused on any other host)",
    )
    dev.add_argument("--no-dev-tokens", dest="dev_tokens", action="store_false")
    serve.add_argument("--hello-timeout", type=_positive_float, default=10.0, metavar="S")
    serve.add_argument("--ping-interval", type=_positive_float, default=20.0, metavar="S")
    serve.add_argument("--pong-timeout", type=_positive_float, default=20.0, metavar="S")
    serve.add_argument("--send-timeout", type=_positive_float, default=10.0, metavar="S")
    serve.add_argument("--shutdown-timeout", type=_positive_float, default=5.0, metavar="S")
    serve.add_argument(
        "--max-message-size",
        type=_positive_int,
        default=64 * 1024,
        metavar="N",
        help="inbound frame limit; larger frames close the socket with 1009 (default 65536)",
    )
    serve.add_argument("--max-sockets-per-user", type=_positive_int, default=16, metavar="N")
    serve.add_argument(
        "--max-connections-per-ip",
        type=_non_negative_int,
        default=64,
        metavar="N",
        help="open connections per client address (0: no cap; 127.0.0.1 and ::1 are never "
        "capped, a reverse proxy on this host connects from there) (default 64)",
    )
    serve.add_argument(
        "--rate",
        type=_positive_float,
        default=50.0,
        metavar="PER_S",
        help="commands per second per user, sustained (default 50)",
    )
    serve.add_argument(
        "--burst",
        type=_positive_int,
        default=200,
        metavar="N",
        help="commands per user in a burst (default 200)",
    )
    serve.add_argument(
        "--subscriber-buffer",
        type=_positive_int,
        default=None,
        metavar="N",
        help="events a socket may fall behind before it is closed with 4409 (default 4096)",
    )
    serve.add_argument(
        "--if-busy",
        default="parallel",
        choices=IF_BUSY,
        help="what say/start_run do while the user already has a live run, unless the command "
        "says (its if_busy): parallel starts the new run alongside, reject answers 'busy', "
        "enqueue queues it until the live runs end, interrupt cancels them first "
        "(default parallel)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info)",
    )
    serve.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log lines as text, or one JSON object each (default text)",
    )
    serve.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)

    token = sub.add_parser("token", help="print a token for USER")
    token.add_argument("user", metavar="USER")
    token.add_argument(
        "--ttl",
        type=_positive_float,
        default=DEFAULT_TTL,
        metavar="S",
        help="seconds until the token expires (default 86400)",
    )
    token.add_argument("--secret", help="token secret (default $NETRA_SECRET, else persisted)")
    for name, what in (
        ("erase-user", "delete every row of USER, across the cluster (its sockets close 4410)"),
        ("export-user", "write USER's whole log as JSON lines"),
    ):
        data = sub.add_parser(name, help=what)
        data.add_argument("user", metavar="USER")
        data.add_argument("--db", required=True, metavar="URL|PATH", help="the database")
        if name == "erase-user":
            data.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        else:
            data.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    return parser
