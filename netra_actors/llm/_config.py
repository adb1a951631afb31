"""Configuration of the LLM agent: ``LLMConfig``, ``Tool``, the model API's dependency, errors."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._core._resilience import BreakerPolicy, Dependency, RetryPolicy
from .._exceptions import AgentError, ConfigError
from .._validate import positive
from .._values import JSON, dumps

INSTALL_HINT = "the LLM agent needs httpx: pip install 'netra-actors[llm]' (or pip install httpx)"

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Besides every 5xx: the statuses the model call retries (as the OpenAI SDK does)."""

DEFAULT_LLM_RETRY = RetryPolicy(attempts=3, backoff_initial=0.5, backoff_max=8.0, jitter=0.2)
DEFAULT_LLM_BREAKER = BreakerPolicy(failure_threshold=5, window=30.0, reset_timeout=15.0)


def llm_dependency(
    name: str = "llm",
    *,
    retry: RetryPolicy = DEFAULT_LLM_RETRY,
    breaker: BreakerPolicy | None = DEFAULT_LLM_BREAKER,
) -> Dependency:
    """The model API's declaration for ``RuntimeConfig.dependencies``: 3 attempts with jittered
    backoff (0.5 s, 1 s), a breaker that opens after 5 failures within 30 s for 15 s."""
    return Dependency(name, retry=retry, breaker=breaker)


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return httpx


# -------------------------------------------------------------------------- configuration


def _api_key(value: str | None) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"api_key must be a string or None, got {type(value).__name__}")
    return value or os.environ.get("NETRA_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def _base_url(value: str) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(
            f"base_url must be an http(s) URL such as 'http://127.0.0.1:11434/v1', got {value!r}"
        )
    return value.rstrip("/")


def _model(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"model must be a non-empty string, got {value!r}")


def _rounds(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"max_tool_rounds must be an integer >= 0, got {value!r}")


def _history_chars(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_history_chars must be an integer >= 1, got {value!r}")


def _optional_str(_inst: object, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{attr.name} must be a string or None, got {value!r}")


def _extra_body(value: Mapping[str, JSON]) -> Mapping[str, JSON]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"extra_body must be a mapping, got {value!r}")
    try:
        dumps(dict(value))
    except TypeError as exc:
        raise ConfigError(f"extra_body must be JSON: {exc}") from None
    return dict(value)


@attrs.frozen(kw_only=True)
class LLMConfig:
    """Where the model is and how to ask it. Validated at construction (``ConfigError``)."""

    base_url: str = attrs.field(converter=_base_url)
    """The API root, ending before ``/chat/completions``: ``https://api.openai.com/v1``,
    ``http://127.0.0.1:11434/v1`` (Ollama), ``http://127.0.0.1:8000/v1`` (vLLM)."""
    model: str = attrs.field(validator=_model)
    api_key: str | None = attrs.field(default=None, converter=_api_key, repr=False)
    """Sent as ``Authorization: Bearer …``. Default: ``$NETRA_LLM_API_KEY``, else
    ``$OPENAI_API_KEY``, else none (local servers need none)."""
    timeout: float = attrs.field(default=60.0, validator=positive)
    """Seconds to connect, and the longest silence between two bytes of the answer."""
    system_prompt: str | None = attrs.field(default=None, validator=_optional_str)
    """Put first in the conversation (unless the input already starts with a system message)."""
    max_history_chars: int = attrs.field(default=32_000, validator=_history_chars)
    """The budget of the conversation sent to the model (the JSON of its messages, system
    prompt aside): the oldest turns are dropped first; the run's own message is always sent."""
    max_tool_rounds: int = attrs.field(default=8, validator=_rounds)
    """Tool rounds per run. After the last one the model is asked without tools."""
    temperature: float | None = attrs.field(default=None)
    include_usage: bool = True
    """Ask for token usage (``stream_options.include_usage``); turn off for servers that reject it."""
    extra_body: Mapping[str, JSON] = attrs.field(factory=dict, converter=_extra_body, hash=False)
    """More request fields (vendor options), merged into every request body."""

    def __attrs_post_init__(self) -> None:
        t = self.temperature
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or t < 0):
            raise ConfigError(f"temperature must be a number >= 0 or None, got {t!r}")


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@attrs.frozen
class Tool:
    """A function the model may call: ``fn(**arguments)``, sync or async, returning JSON."""

    fn: Callable[..., Any]
    description: str = ""
    parameters: Mapping[str, JSON] = attrs.field(
        factory=lambda: {"type": "object", "properties": {}}, hash=False
    )
    """The JSON schema of the arguments (an object)."""


def _tools(tools: Mapping[str, Tool | Callable[..., Any]]) -> dict[str, Tool]:
    checked: dict[str, Tool] = {}
    for name, tool in dict(tools).items():
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise ConfigError(f"tool names match [A-Za-z0-9_-]{{1,64}}, got {name!r}")
        if not isinstance(tool, Tool):
            if not callable(tool):
                raise ConfigError(f"tool {name!r} must be a Tool or a callable, got {tool!r}")
            tool = Tool(tool, inspect.getdoc(tool) or "")
        checked[name] = tool
    return checked


# ------------------------------------------------------------------------------- errors


class LLMError(AgentError):
    """The model API failed (raised inside the model call)."""


class LLMStatusError(LLMError):
    """The API answered with an HTTP error status. ``retryable`` for 408/409/429/5xx."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status} from the model API: {detail}"[:500])
        self.status = status
        self.retryable = status in RETRYABLE_STATUSES or status >= 500


class LLMStreamError(LLMError):
    """The connection failed, or broke before any text was streamed (retried)."""


class LLMStreamInterrupted(LLMError):
    """The connection broke after text was streamed: not retried in the attempt (see above)."""


class LLMResponseError(LLMError):
    """The API answered something unusable (malformed SSE or JSON, an ``error`` object)."""


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, LLMStatusError):
        return exc.retryable
    return isinstance(exc, LLMStreamError)
