"""An agent that answers with an OpenAI-compatible chat model (OpenAI, vLLM, Ollama, llama.cpp…).

``make_llm_agent(LLMConfig(base_url, model), tools={...})`` returns an :class:`~netra_actors.Agent`
class to register. Each run sends ``POST {base_url}/chat/completions`` with ``stream: true``,
streams the answer's tokens as provisional deltas (``ctx.message()``), runs the tools the model
asks for through ``ctx.tool`` (committed ``tool_executing``/``tool_completed``, under each tool's
own retry/breaker policy), sends their results back and asks again, up to ``max_tool_rounds``.

**One model call** is :meth:`OpenAIChatAgent.complete`: one request body in, one
:class:`ModelResponse` out, under the runtime's retry and circuit-breaker policy of the
dependency ``"llm"`` (:func:`llm_dependency`). It is the single boundary a journal of model
responses can wrap (a :class:`ModelResponse` round-trips through :meth:`ModelResponse.to_json`).

**Which failures are retried** inside the call (backoff per the dependency's ``RetryPolicy``):
HTTP 408, 409, 429 and every 5xx; connect errors and timeouts; a connection that breaks (or a
stream that ends without ``[DONE]`` or a ``finish_reason``) *before any text of that attempt
reached the user*. Not retried: any other status (400, 401, 403, 404, 422…), a malformed stream,
an ``error`` object in the stream. Those, an exhausted retry budget and an open breaker end the run
``failed`` (:class:`~netra_actors.exceptions.RunFailedError`, whose text the run's
``run_rolled_back`` carries): a restart would repeat the same call.

**A disconnect after text was streamed** cannot be retried inside the attempt: the user already
has that text as provisional deltas, and only a rollback retracts them. So it raises
:class:`LLMStreamInterrupted`, which crashes the attempt: its ``run_rolled_back`` retracts the
partial answer and the runtime restarts the run per its restart policy; the new attempt asks the
model again from the start (tool calls before it run again, like any restarted attempt). The
user ends up with one committed answer. For the breaker that attempt counts as an answer.

**HTTP.** ``httpx.AsyncClient`` (one per run, so a run's tool rounds reuse its connection) runs in
the agent's trio task as is: sniffio reports ``trio`` inside the guest run, so httpcore uses its
trio backend (the tests run it in guest mode, against a local server). A stream is read to its
end after ``[DONE]`` (at most ``DRAIN_SECONDS``), never abandoned mid-generator.

httpx is an optional dependency: ``pip install 'netra-actors[llm]'``. This module imports without
it; :func:`make_llm_agent` (and a run) raise :class:`ImportError` saying how to install it.
"""

from ._agent import OpenAIChatAgent as OpenAIChatAgent
from ._agent import conversation as conversation
from ._agent import make_llm_agent as make_llm_agent
from ._agent import resilience_of as resilience_of
from ._config import DEFAULT_LLM_BREAKER as DEFAULT_LLM_BREAKER
from ._config import DEFAULT_LLM_RETRY as DEFAULT_LLM_RETRY
from ._config import INSTALL_HINT as INSTALL_HINT
from ._config import RETRYABLE_STATUSES as RETRYABLE_STATUSES
from ._config import LLMConfig as LLMConfig
from ._config import LLMError as LLMError
from ._config import LLMResponseError as LLMResponseError
from ._config import LLMStatusError as LLMStatusError
from ._config import LLMStreamError as LLMStreamError
from ._config import LLMStreamInterrupted as LLMStreamInterrupted
from ._config import Tool as Tool
from ._config import llm_dependency as llm_dependency
from ._stream import ModelResponse as ModelResponse
from ._stream import ToolCall as ToolCall
from ._stream import stream_chat as stream_chat

__all__ = [
    "DEFAULT_LLM_BREAKER",
    "DEFAULT_LLM_RETRY",
    "INSTALL_HINT",
    "RETRYABLE_STATUSES",
    "LLMConfig",
    "LLMError",
    "LLMResponseError",
    "LLMStatusError",
    "LLMStreamError",
    "LLMStreamInterrupted",
    "ModelResponse",
    "OpenAIChatAgent",
    "Tool",
    "ToolCall",
    "conversation",
    "llm_dependency",
    "make_llm_agent",
    "resilience_of",
    "stream_chat",
]
