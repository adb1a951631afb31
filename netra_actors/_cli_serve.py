"""Running ``netra-actors serve``: the server until a signal, a drain on stop, and its messages.

:func:`serve` runs the gateway (and, unless in echo mode, the runtime) as a trio guest of asyncio
until SIGINT/SIGTERM; a stop is a drain (see :func:`_serve_main`). It prints the banner once the
port is bound and translates the errors a user can fix (the address is in use, the database is
unreachable) into one line on stderr and exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TypeVar

import trio

from . import __version__
from ._agent import AgentBase
from ._bridge import run
from ._config import RuntimeConfig, database_url
from ._exceptions import StoreError
from ._runtime import open_runtime
from .demo_agents import DEMO_AGENTS, demo_metadata
from .gateway import Gateway, GatewayConfig

_E = TypeVar("_E", bound=BaseException)


def _say(message: str) -> None:
    """Print a line for the operator on stderr."""
    print(message, file=sys.stderr, flush=True)


def serve(
    config: GatewayConfig,
    runtime_config: RuntimeConfig | None,
    db: str,
    agents: Sequence[type[AgentBase]],
    *,
    default_agent: str | None = None,
) -> int:
    """Serve until stopped; the exit status (1: could not serve, said why on stderr)."""
    try:
        run(_serve_main, config, runtime_config, db, agents, default_agent)
    except (OSError, StoreError, BaseExceptionGroup) as exc:
        error = _wrapped(exc, OSError)  # e.g. the address is in use
        if error is None:
            store_error = _wrapped(exc, StoreError)  # e.g. unreachable, or no driver installed
            if store_error is None:
                raise
            _say(f"netra-actors: --db {_shown_db(db)}: {store_error}")
            return 1
        _say(
            f"netra-actors: cannot serve on {config.host}:{config.port}: {error.strerror or error}"
        )
        return 1
    _say("netra-actors: stopped")
    return 0


async def _serve_main(
    config: GatewayConfig,
    runtime_config: RuntimeConfig | None,
    db: str,
    agents: Sequence[type[AgentBase]],
    default_agent: str | None,
) -> None:
    if runtime_config is None:
        gateway = Gateway(None, config)
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            _banner(gateway, None)
        return
    # SIGINT/SIGTERM cancel this task. The runtime runs shielded from that, so that a stop is a
    # drain: the gateway stops taking users and closes its sockets 1001, running attempts may
    # reach their next commit for up to --shutdown-timeout, the rest stop without committing
    # their open unit and the leases are released: the next owner resumes every run.
    stop = trio.Event()
    async with trio.open_nursery() as outer:
        outer.start_soon(_until_cancelled, stop)
        with trio.CancelScope(shield=True):
            # the demo agents' tables only where the demo agents are served
            metadata = [demo_metadata] if set(agents) & set(DEMO_AGENTS) else []
            async with open_runtime(
                runtime_config, agents=agents, default_agent=default_agent, metadata=metadata
            ) as rt:
                gateway = Gateway(rt, config)
                async with trio.open_nursery() as nursery:
                    await nursery.start(gateway.serve)
                    _banner(gateway, db, runtime_config.if_busy)
                    await stop.wait()
                    nursery.cancel_scope.cancel()  # the gateway's graceful shutdown
                live = rt.statistics().live_runs
                if live:
                    _say(f"netra-actors: draining: handing {live} live run(s) over")
                await rt.drain(config.shutdown_timeout)
        outer.cancel_scope.cancel()


async def _until_cancelled(stop: trio.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        stop.set()


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


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _shown_db(db: str | None) -> str:
    """The database as the banner shows it: a SQLite file by its absolute path, else the URL
    without its password."""
    if db is None:
        return str(db)
    from sqlalchemy import make_url

    url = make_url(database_url(db))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return f"{url.database} (SQLite)"
    return url.render_as_string(hide_password=True)


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
    ]
    runtime = gateway.runtime
    if runtime is not None:
        default = runtime.agents.default
        shown = [f"{name} (default)" if name == default else name for name in runtime.agents]
        lines.append(f"  agents:     {', '.join(shown)}")
    if config.auth is not None:
        module = getattr(config.auth, "__module__", "?")
        name = getattr(config.auth, "__qualname__", type(config.auth).__qualname__)
        lines.append(f"  sign-in:    {module}:{name} (and netra's own tokens)")
    lines.append(
        "  tokens:     netra-actors token USER [--ttl SECONDS]   (same secret as this server)"
    )
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
