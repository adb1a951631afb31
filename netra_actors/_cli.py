"""The ``netra-actors`` command: the example chat server and its tokens.

* ``netra-actors serve [--host 127.0.0.1] [--port 8765] [--db ./netra.db] [--secret S]
  [--if-busy parallel|reject|enqueue|interrupt]`` runs the gateway (page, ``/healthz``,
  ``/metrics``, ``/ws``) with the demo agents on a SQLite file.
* ``netra-actors token USER [--ttl S] [--secret S]`` prints a token for ``USER``.

The secret is ``--secret``, else ``$NETRA_SECRET``, else a random one kept in
``~/.netra-actors/secret`` (``$NETRA_HOME/secret`` if ``NETRA_HOME`` is set), created with mode
0600 on first use — so ``serve`` and ``token`` agree without any setup.

This module turns the parsed arguments (``_cli_parser.py``) into the gateway's and the runtime's
configurations and runs the command; ``_cli_serve.py`` runs the server.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence

from ._agent import AgentBase
from ._cli_parser import build_parser
from ._cli_serve import serve
from ._config import RuntimeConfig, database_url
from ._core._resilience import Dependency
from ._exceptions import ConfigError
from ._logs import configure_logging
from .demo_agents import DEMO_AGENTS
from .gateway import GatewayConfig, RateLimit, is_loopback_host, mint_token
from .gateway._secret import resolve_secret

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
            max_connections_per_ip=args.max_connections_per_ip,
            admin_token=None if args.echo else args.admin_token,
            hello_timeout=args.hello_timeout,
            ping_interval=args.ping_interval,
            pong_timeout=args.pong_timeout,
            send_timeout=args.send_timeout,
            shutdown_timeout=args.shutdown_timeout,
            max_message_size=args.max_message_size,
            max_sockets_per_user=args.max_sockets_per_user,
            rate=RateLimit(per_second=args.rate, burst=args.burst),
            echo=args.echo,
        )
    except ConfigError as exc:
        parser.error(str(exc))


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
    configure_logging(args.log_format, args.log_level.upper())
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
    return serve(config, runtime_config, args.db, agents if not args.echo else DEMO_AGENTS)


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
