"""Run async test functions under the real process model: asyncio host, trio guest."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import trio

from .._bridge import run

P = ParamSpec("P")
T = TypeVar("T")


def guest_test(
    timeout: float = 60.0,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, T]]:
    """Decorate an ``async def`` test so it runs in trio as a guest of a fresh asyncio loop.

    That is how the real store runs (SQLAlchemy's asyncio engine on the host loop), so tests
    through a real SQLite file need it. The test fails after ``timeout`` seconds::

        @guest_test()
        async def test_something(tmp_path: Path) -> None:
            async with open_runtime(config) as runtime: ...
    """

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            async def main() -> T:
                with trio.fail_after(timeout):
                    return await fn(*args, **kwargs)

            result = run(main, handle_signals=False)
            return result  # type: ignore[return-value]

        return wrapper

    return decorate
