"""Helpers for the store tests that open one SQLite store and wait for it to know it is alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import netra_actors as na
from netra_actors._store import SqlStore


@asynccontextmanager
async def sqlite_store(tmp_path: Path, **config: Any) -> AsyncIterator[SqlStore]:
    """A :class:`SqlStore` on ``tmp_path/store.db``, closed on the way out."""
    store = await SqlStore.open(
        na.RuntimeConfig(database_url=na.sqlite_url(tmp_path / "store.db"), **config)
    )
    try:
        yield store
    finally:
        await store.aclose()


async def settled(store: SqlStore) -> None:
    """Until this node knows it is alone (the first lease renewal found no other node)."""
    with trio.fail_after(10):
        while store._leases.others is not False:  # noqa: ASYNC110 (a store attribute)
            await trio.sleep(0.01)
