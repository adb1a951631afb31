"""The ``netra-actors`` command: the example chat server and its tokens.

* ``netra-actors serve [--host 127.0.0.1] [--port 8765] [--db ./netra.db] [--secret S]
  [--if-busy parallel|reject|enqueue|interrupt] [--agents MODULE:ATTRIBUTE]... [--default-agent
  NAME] [--auth MODULE:CALLABLE]`` runs the gateway (page, ``/healthz``, ``/metrics``, ``/ws``)
  with your agents (default: the demo agents) and your sign-in (default: netra's tokens).
* ``netra-actors token USER [--ttl S] [--secret S]`` prints a token for ``USER``.
* ``netra-actors erase-user USER --db URL [--yes]`` and ``netra-actors export-user USER --db URL
  [--out FILE]``: a user's data (``_cli_data.py``).

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
from typing import NoReturn

from ._agent import AgentBase
from ._cli_data import erase_user, export_user
from ._cli_parser import build_parser
from ._cli_serve import serve
from ._config import RuntimeConfig, database_url
from ._core._resilience import Dependency
from ._exceptions import ConfigError
from ._logs import configure_logging
from .demo_agents import DEMO_AGENTS
from .gateway import (
    GatewayConfig,
    RateLimit,
    is_loopback_host,
    load_agents,
    load_sign_in,
    mint_token,
)
from .gateway._loading import check_agents
from .gateway._secret import resolve_secret
from .gateway._sign_in import Authenticate

# -- serve -------------------------------------------------------------------------------------


def gateway_config(
    args: argparse.Namespace, parser: argparse.ArgumentParser, auth: Authenticate | None = None
) -> GatewayConfig:
    """The gateway configuration of ``serve``'s arguments (refusing unsafe combinations);
    ``auth``: the sign-in function ``--auth`` named (:func:`_your_code`)."""
    loopback = is_loopback_host(args.host)
    if args.dev_tokens and not loopback:
        parser.error(
            f"--dev-tokens is refused on the non-loopback host {args.host!r}: anyone who can "
            "reach the server could sign in as anyone. Mint tokens with 'netra-actors token "
            "USER' instead."
        )
    # your own sign-in: the page's development sign-in only when asked for
    dev_tokens = (loopback and auth is None) if args.dev_tokens is None else args.dev_tokens
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
            auth=auth,
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
    own_agents, auth = _your_code(args)
    config = gateway_config(args, parser, auth)
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
                retention_days=args.retention_days,
                retention_batch=args.retention_batch,
                retention_pause=args.retention_pause,
                **extra,
            )
        except ConfigError as exc:
            parser.error(f"--db {args.db}: {exc}")
        agents = [*own_agents, *llm_agents]
        try:
            check_agents(agents, args.default_agent)
        except ConfigError as exc:
            _fail(str(exc))
    return serve(
        config,
        runtime_config,
        args.db,
        agents if not args.echo else DEMO_AGENTS,
        default_agent=args.default_agent,
    )


def _your_code(args: argparse.Namespace) -> tuple[list[type[AgentBase]], Authenticate | None]:
    """The agents of ``--agents`` (the demo agents without it) and the sign-in function of
    ``--auth``, loaded and checked before anything else: what is wrong is one line."""
    try:
        agents = load_agents(args.agents, args.default_agent) if args.agents else DEMO_AGENTS
        if not args.agents and not args.llm_base_url:
            check_agents(agents, args.default_agent)
        return list(agents), load_sign_in(args.auth) if args.auth else None
    except ConfigError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2 (what argparse does for a bad argument)."""
    print(f"netra-actors serve: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


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
    if args.command == "erase-user":
        return erase_user(args, parser)
    if args.command == "export-user":
        return export_user(args, parser)
    return _token(args, parser)


if __name__ == "__main__":
    sys.exit(main())
