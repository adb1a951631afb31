"""The ASGI adapter: what ``netra-actors serve`` serves, from any ASGI server (uvicorn …).

::

    netra = NetraApp(GatewayConfig(secret=...), runtime_config, agents=[...])
    app = FastAPI(lifespan=netra.lifespan)      # the runtime starts and stops with the app
    app.mount("/", netra)                        # the page, /ws, /agui, /healthz, /metrics

The implementation lives in the gateway package, next to the trio gateway it shares its state,
rules and protocol code with (``netra_actors/gateway/_asgi_*.py``); this module re-exports it.
"""

from .gateway._asgi_app import NetraApp as NetraApp

__all__ = ["NetraApp"]
