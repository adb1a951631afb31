"""Helpers for testing code built on netra_actors (and netra_actors itself).

* :class:`MemoryStore` — a store in memory, pure trio: use it with
  ``trio.testing.MockClock(autojump_threshold=0)`` to make heartbeats, deadlines and backoff
  deterministic. It keeps the real store's contract (atomic units, gapless ``seq``, scoping by
  user) and can inject failures.
* :func:`collect_until` — read a subscription until a predicate holds.
* :func:`guest_test` — run an async test in trio as a guest of asyncio, as the real store needs.
"""

from ._guest import guest_test as guest_test
from ._memory import MemoryStore as MemoryStore
from ._memory import collect_until as collect_until

__all__ = ["MemoryStore", "collect_until", "guest_test"]
