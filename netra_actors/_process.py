"""CPU-bound work in a worker process: :func:`run_in_process`.

CPU-bound work should not run in a thread at all: a busy Python thread holds the GIL and delays
the event loop (measured in ``docs/benchmarks.md``); a process does not. The pool of ``spawn``
workers is created on first use and shut down when the interpreter exits.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import multiprocessing
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_pool: concurrent.futures.ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _get_pool() -> concurrent.futures.ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ProcessPoolExecutor(
                mp_context=multiprocessing.get_context("spawn")
            )
            atexit.register(_pool.shutdown, wait=True, cancel_futures=True)
        return _pool


def run_in_process(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a worker process and return its result (blocking the caller).

    For CPU-bound work: a busy Python thread holds the GIL and delays the event loop (measured
    in ``docs/benchmarks.md``); a process does not. ``fn`` and its arguments must be picklable
    (a module-level function). From an async agent, call it through a thread so the event loop
    never blocks: ``await trio.to_thread.run_sync(run_in_process, fn, arg)``.
    """
    return _get_pool().submit(fn, *args).result()
