"""The idempotency key of the tool call whose function runs now, and running a function under it.

``ctx.tool`` runs a tool's function through :func:`keyed_call` (from trio) or
:func:`keyed_call_sync` (from a threaded agent's thread): the key is set in a context variable
for the function's duration, so :func:`idempotency_key` reads it, and is passed as the keyword
``idempotency_key=`` to a function that has a parameter of that name. Both return the result's
JSON text: a result that is not JSON fails the attempt, inside the retry policy.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ._exceptions import AgentError
from ._values import JSON, dumps

_KEY: contextvars.ContextVar[str] = contextvars.ContextVar("netra_actors.idempotency_key")
"""The idempotency key of the tool call whose function runs now (in this task or thread)."""


def idempotency_key() -> str:
    """The idempotency key of the tool call whose function is running (inside ``ctx.tool``).

    For a journaled call it is ``"<run_id>:<step>:<hash of the name and arguments>"``: the same
    in every attempt of the run that makes the same call at the same step, so an external API
    that deduplicates on it (an ``Idempotency-Key`` header) performs the step once even when a
    crash inside the call makes the restarted attempt run it again. For a call that is not
    journaled (``replay=False``, or made while another call of the attempt is in flight) it is
    the call's ``call_id``. A tool function may also take it as a keyword parameter named
    ``idempotency_key``. Raises :class:`~netra_actors.AgentError` outside a tool call.
    """
    try:
        return _KEY.get()
    except LookupError:
        raise AgentError(
            "idempotency_key() is only available while a tool's function runs (in ctx.tool)"
        ) from None


_accepts_key: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def accepts_idempotency_key(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` has a parameter ``idempotency_key`` that can be passed by keyword."""
    with contextlib.suppress(KeyError, TypeError):
        return _accepts_key[fn]
    try:
        param = inspect.signature(fn).parameters.get("idempotency_key")
    except (TypeError, ValueError):
        param = None
    found = param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    with contextlib.suppress(TypeError):  # not weakly referenceable: not cached
        _accepts_key[fn] = found
    return found


def _passes_key(fn: Callable[..., Any], args: Mapping[str, JSON]) -> bool:
    return "idempotency_key" not in args and accepts_idempotency_key(fn)


def keyed_call(fn: Callable[..., Any], key: str, args: Mapping[str, JSON]) -> Callable[..., Any]:
    """``fn`` as a tool runs it from trio: under its key, returning its result's JSON text (a
    result that is not JSON is a failed attempt)."""
    pass_key = _passes_key(fn, args)

    async def call(**kwargs: Any) -> str:
        token = _KEY.set(key)
        try:
            result = fn(**kwargs, idempotency_key=key) if pass_key else fn(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        finally:
            _KEY.reset(token)
        return dumps(result)

    return call


def keyed_call_sync(
    fn: Callable[..., Any], key: str, args: Mapping[str, JSON]
) -> Callable[..., str]:
    """:func:`keyed_call` for a thread (a threaded agent's tool)."""
    pass_key = _passes_key(fn, args)

    def call(**kwargs: Any) -> str:
        token = _KEY.set(key)
        try:
            result = fn(**kwargs, idempotency_key=key) if pass_key else fn(**kwargs)
        finally:
            _KEY.reset(token)
        return dumps(result)

    return call
