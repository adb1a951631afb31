"""The server of the ``e2e`` scenario: the real gateway and runtime, plus a benchmark agent.

``python -m benchmarks._e2e_server --db FILE --secret S [--port 0]`` serves exactly what
``netra-actors serve`` serves (the same :class:`~netra_actors.gateway.Gateway` on a runtime with the
demo agents, on a SQLite file) and also registers ``bench_e2e``
(:class:`~benchmarks.harness.agents.BenchE2E`), an agent that emits events at a chosen pace with
its emit time in each event. It prints ``PORT <n>`` once it listens; SIGINT or
SIGTERM stop it gracefully.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import trio

import netra_actors as na
from netra_actors.demo_agents import DEMO_AGENTS, demo_metadata
from netra_actors.gateway import Gateway, GatewayConfig, RateLimit

from .harness.agents import BenchE2E
from .harness.processes import server_arguments

AGENTS: tuple[type[na.types.AgentBase], ...] = (*DEMO_AGENTS, BenchE2E)
"""The agents the e2e servers run (the gateway here, the ASGI app in :mod:`._e2e_asgi`)."""


def runtime_config(db: str) -> na.RuntimeConfig:
    """The runtime configuration of every e2e server: a SQLite file, a deep subscriber buffer."""
    return na.RuntimeConfig(database_url=na.sqlite_url(db), subscriber_buffer=100_000)


def gateway_config(secret: bytes, port: int = 0) -> GatewayConfig:
    """The gateway configuration of every e2e server (the ASGI adapter ignores host/port)."""
    return GatewayConfig(
        secret=secret,
        host="127.0.0.1",
        port=port,
        max_connections=50_000,
        rate=RateLimit(per_second=1000.0, burst=1000),
    )


async def _serve(db: str, secret: bytes, port: int) -> None:
    async with na.open_runtime(
        runtime_config(db), agents=AGENTS, metadata=[demo_metadata]
    ) as runtime:
        gateway = Gateway(runtime, gateway_config(secret, port))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            print(f"PORT {gateway.port}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM."""
    na.run(_serve, *server_arguments("benchmarks._e2e_server", argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
