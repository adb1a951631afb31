"""The ``netra-actors`` command: the example chat server and its tokens.

* ``netra-actors serve [--host 127.0.0.1] [--port 8765] [--db ./netra.db] [--secret S]
  [--if-busy parallel|reject|enqueue|interrupt]`` runs the gateway (page, ``/healthz``,
  ``/metrics``, ``/ws``) with the demo agents on a SQLite file.
* ``netra-actors token USER [--ttl S] [--secret S]`` prints a token for ``USER``.

The secret is ``--secret``, else ``$NETRA_SECRET``, else a random one kept in
``~/.netra-actors/secret`` (``$NETRA_HOME/secret`` if ``NETRA_HOME`` is set), created with mode
0600 on first use — so ``serve`` and ``token`` agree without any setup.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from typing import TypeVar

import trio

from . import __version__
from ._agent import AgentBase
from ._bridge import run
from ._config import IF_BUSY, RuntimeConfig, database_url
from ._core._resilience import Dependency
from ._exceptions import ConfigError, StoreError
from ._runtime import open_runtime
from .demo_agents import DEMO_AGENTS, demo_metadata
from .gateway import Gateway, GatewayConfig, RateLimit, is_loopback_host, mint_token
from .gateway._secret import resolve_secret

_E = TypeVar("_E", bound=BaseException)

DEFAULT_TTL = 24 * 3600.0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the secret --------------------------------------------------------------------------------


# -- the parser --------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
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
    return parser


# -- serve -------------------------------------------------------------------------------------


def gateway_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> GatewayConfig:
    """The gateway configuration of ``serve``'s arguments (refusing unsafe combinations)."""
    loopback = is_loopback_host(args.host)
    if args.dev_tokens and not loopback:
        parser.error(
            f"--dev-tokens is refused on the non-loopback host {args.host!r}: anyone who can "
            "reach the server could sign in as anyone. Mint tokens with 'netra-actors token "
            "USER' instead."
        )
    dev_tokens = loopback if args.dev_tokens is None else args.dev_tokens
    try:
        secret = secrets.token_bytes(32) if args.echo else resolve_secret(args.secret)
        return GatewayConfig(
            secret=secret,
            host=args.host,
            port=args.port,
            allowed_origins=frozenset(args.allowed_origin) if args.allowed_origin else None,
            dev_tokens=dev_tokens and not args.echo,
            hello_timeout=args.hello_timeout,
            ping_interval=args.ping_interval,
            pong_timeout=args.pong_timeout,
            send_timeout=args.send_timeout,
            shutdown_timeout=args.shutdown_timeout,
            max_message_size=args.max_message_size,
            max_sockets_per_user=args.max_sockets_per_user,
            rate=RateLimit(per_second=args.rate, burst=args.burst),
            echo=args.echo,
            admin_token=None if args.echo else args.admin_token,
        )
    except ConfigError as exc:
        parser.error(str(exc))


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _shown_db(db: str | None) -> str:
    """The database as the banner shows it (a URL without its password)."""
    if db is None or "://" not in db:
        return str(db)
    from sqlalchemy import make_url

    return make_url(database_url(db)).render_as_string(hide_password=True)


def _banner(gateway: Gateway, db: str | None, if_busy: str | None = None) -> None:
    config = gateway.config
    base = f"http://{_url_host(config.host)}:{gateway.port}"
    if config.echo:
        print(
            f"netra-actors echo mode (WebSocket conformance testing): ws{base[4:]}/ws", flush=True
        )
        return
    lines = [
        f"netra-actors {__version__} chat server",
        f"  page:       {base}/",
        f"  websocket:  ws{base[4:]}/ws",
        f"  AG-UI:      POST {base}/agui    GET {base}/agui/events (Server-Sent Events)",
        f"  health:     {base}/healthz    metrics: {base}/metrics",
        f"  database:   {_shown_db(db)}",
        f"  if busy:    {if_busy} (what a say does while a run is live; --if-busy)",
        "  tokens:     netra-actors token USER [--ttl SECONDS]   (same secret as this server)",
    ]
    if config.dev_tokens:
        lines.append(
            "  development sign-in enabled: the page can sign in any user name "
            "(loopback only; --no-dev-tokens to disable)"
        )
    else:
        lines.append("  development sign-in disabled: paste a token into the page")
    if config.admin_token is not None:
        lines.append(f"  inspector:  {base}/inspector   (admin token: --admin-token)")
    lines.append("Open the page and chat. Ctrl+C stops the server.")
    print("\n".join(lines), flush=True)


async def _serve_main(
    config: GatewayConfig,
    runtime_config: RuntimeConfig | None,
    db: str,
    agents: Sequence[type[AgentBase]] = DEMO_AGENTS,
) -> None:
    if runtime_config is None:
        gateway = Gateway(None, config)
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            _banner(gateway, None)
        return
    # SIGINT/SIGTERM cancel this task. The runtime runs shielded from that, so that a stop is a
    # drain: the gateway stops taking users and closes its sockets 1001, live runs may finish
    # for up to --shutdown-timeout, then the rest end dead and the leases are released.
    stop = trio.Event()
    async with trio.open_nursery() as outer:
        outer.start_soon(_until_cancelled, stop)
        with trio.CancelScope(shield=True):
            async with open_runtime(runtime_config, agents=agents, metadata=[demo_metadata]) as rt:
                gateway = Gateway(rt, config)
                async with trio.open_nursery() as nursery:
                    await nursery.start(gateway.serve)
                    _banner(gateway, db, runtime_config.if_busy)
                    await stop.wait()
                    nursery.cancel_scope.cancel()  # the gateway's graceful shutdown
                live = rt.statistics().live_runs
                if live:
                    _say(f"netra-actors: draining: {live} live run(s) may finish")
                await rt.drain(config.shutdown_timeout)
        outer.cancel_scope.cancel()


async def _until_cancelled(stop: trio.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        stop.set()


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError (e.g. address in use) an exception is or wraps, if any."""
    return _wrapped(exc, OSError)


def _wrapped(exc: BaseException, kind: type[_E]) -> _E | None:
    """The ``kind`` exception that ``exc`` is or (in exception groups) wraps, if any."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _wrapped(inner, kind)
            if found is not None:
                return found
    return None


def _llm_setup(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[list[type[AgentBase]], list[Dependency]]:
    """The agents and dependencies that --llm-* add (none without --llm-base-url)."""
    if not args.llm_base_url:
        return [], []
    if not args.llm_model:
        parser.error("--llm-model is required with --llm-base-url")
    from .llm import LLMConfig, llm_dependency, make_llm_agent  # httpx is an optional extra

    try:
        config = LLMConfig(
            base_url=args.llm_base_url, model=args.llm_model, api_key=args.llm_api_key
        )
        agent = make_llm_agent(config)
    except (ConfigError, ImportError) as exc:
        parser.error(str(exc))
    return [agent], [llm_dependency()]


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = gateway_config(args, parser)
    runtime_config = None
    if not args.echo:
        extra = (
            {} if args.subscriber_buffer is None else {"subscriber_buffer": args.subscriber_buffer}
        )
        llm_agents, llm_deps = _llm_setup(args, parser)
        try:
            runtime_config = RuntimeConfig(
                database_url=database_url(args.db),
                if_busy=args.if_busy,
                lease_ttl=args.lease_ttl,
                node_id=args.node_id,
                dependencies=llm_deps,
                **extra,
            )
        except ConfigError as exc:
            parser.error(f"--db {args.db}: {exc}")
        agents = [*DEMO_AGENTS, *llm_agents]
    try:
        run(_serve_main, config, runtime_config, args.db, agents if not args.echo else DEMO_AGENTS)
    except (OSError, StoreError, BaseExceptionGroup) as exc:
        error = _os_error(exc)
        if error is None:
            store_error = _wrapped(exc, StoreError)  # e.g. unreachable, or no driver installed
            if store_error is None:
                raise
            _say(f"netra-actors: --db {_shown_db(args.db)}: {store_error}")
            return 1
        _say(f"netra-actors: cannot serve on {args.host}:{args.port}: {error.strerror or error}")
        return 1
    _say("netra-actors: stopped")
    return 0


# -- token -------------------------------------------------------------------------------------


def _token(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import time

    try:
        secret = resolve_secret(args.secret)
        token = mint_token(secret, args.user, args.ttl, now=time.time())
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    print(token, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``netra-actors`` console script."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve":
        return _serve(args, parser)
    return _token(args, parser)


if __name__ == "__main__":
    sys.exit(main())
