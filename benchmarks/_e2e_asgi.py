"""The ASGI server of the ``e2e`` scenario (``--server asgi``): the adapter inside FastAPI.

What users run with the ASGI adapter — :class:`netra_actors.asgi.NetraApp` mounted at ``/`` of a
FastAPI application (``app.mount("/", netra)``, as in ``examples/fastapi_app.py``, so the measured
path includes FastAPI's routing) — with what :mod:`._e2e_server` serves: the same agents (the
demo agents and ``bench_e2e``), the same runtime and gateway configuration, a fresh SQLite file.
Served by uvicorn in its own process::

    NETRA_BENCH_DB=FILE NETRA_BENCH_SECRET=S python -m uvicorn --factory \\
        benchmarks._e2e_asgi:create_app --host 127.0.0.1 --port N --loop uvloop \\
        --no-access-log --log-level warning

A factory, so that importing this module needs neither FastAPI nor the environment (the benchmarks
import only runtime dependencies when they load). uvicorn's SIGINT/SIGTERM stop it gracefully.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

DB_ENV = "NETRA_BENCH_DB"
"""The SQLite file (a path)."""
SECRET_ENV = "NETRA_BENCH_SECRET"
"""The token secret (the parent mints the clients' tokens with it)."""


def create_app() -> FastAPI:
    """The FastAPI application: NetraApp at ``/``, configured from the environment."""
    from fastapi import FastAPI

    from netra_actors.asgi import NetraApp
    from netra_actors.demo_agents import demo_metadata

    from ._e2e_server import AGENTS, gateway_config, runtime_config

    netra = NetraApp(
        gateway_config(os.environ[SECRET_ENV].encode()),
        runtime_config(os.environ[DB_ENV]),
        agents=AGENTS,
        metadata=[demo_metadata],
    )
    app = FastAPI(title="netra_actors e2e benchmark", lifespan=netra.lifespan)
    app.mount("/", netra)
    return app
