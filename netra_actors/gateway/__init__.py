"""The WebSocket gateway: protocol v1 over one port, in front of a :class:`~netra_actors.Runtime`.

``GET /`` serves the example chat page, ``GET /healthz`` a JSON health document, ``GET /metrics``
Prometheus text, and ``/ws`` the WebSocket of ``docs/protocol.md``::

    async with netra_actors.open_runtime(config, agents=...) as runtime:
        await serve_gateway(runtime, GatewayConfig(secret=..., port=8765))
"""

from ._config import GatewayConfig as GatewayConfig
from ._limits import RateLimit as RateLimit
from ._loading import load_agents as load_agents
from ._loading import load_sign_in as load_sign_in
from ._protocol import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._protocol import FrameError as FrameError
from ._secret import resolve_secret as resolve_secret
from ._server import Gateway as Gateway
from ._server import serve_gateway as serve_gateway
from ._sign_in import SignInRefused as SignInRefused
from ._sign_in import SignInRequest as SignInRequest
from ._tokens import TokenClaims as TokenClaims
from ._tokens import TokenError as TokenError
from ._tokens import mint_token as mint_token
from ._tokens import verify_token as verify_token
from ._trust import default_origins as default_origins
from ._trust import is_loopback_host as is_loopback_host

__all__ = [
    "PROTOCOL_VERSION",
    "FrameError",
    "Gateway",
    "GatewayConfig",
    "RateLimit",
    "SignInRefused",
    "SignInRequest",
    "TokenClaims",
    "TokenError",
    "default_origins",
    "is_loopback_host",
    "load_agents",
    "load_sign_in",
    "mint_token",
    "resolve_secret",
    "serve_gateway",
    "verify_token",
]
