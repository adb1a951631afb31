"""The inspector's reads: every user, lease and node, for an administrator (read-only).

Unlike the runtime's reads, these cross users: they answer the admin page (``docs/inspector.md``),
never a user. Each query is bounded by a ``LIMIT``; the ones over one user or run name it. They
are SQLAlchemy Core on the store's asyncio engine (``SqlStore.engine``, the host loop), the same
text on SQLite and PostgreSQL but for the database's clock, so they never queue behind the
writer or the runtime's reader. :class:`AdminReads` is what the inspector needs of a store;
``SqlStore`` and ``testing.MemoryStore`` implement it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
from sqlalchemy import ColumnElement, Float, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .._values import Event
from ._rows import LIVE_STATE_VALUES
from ._schema import events, leases, nodes, runs
from ._sqlite import NOW as SQLITE_NOW

LAPSED_SECONDS = 300.0
"""Nodes that lapsed less than this long ago are still shown (as lapsed)."""

_WITH_NODE = leases.outerjoin(nodes, nodes.c.node == leases.c.node)
_EXPIRES = case((leases.c.expires_at <= 0, 0.0), else_=func.coalesce(nodes.c.expires_at, 0.0))
"""When a lease lapses: its node's (a lease lasts as long as its node's row; 0: released, or
its node is gone)."""


@attrs.frozen(kw_only=True)
class UserSummary:
    """One user as the inspector lists it."""

    user_id: str
    head_seq: int
    """The user's highest committed ``seq``."""
    runs: int
    live_runs: int
    last_activity: float | None
    """The latest ``updated_at`` of the user's runs (None: no run yet)."""
    node: str | None = None
    """The node holding the user's unexpired lease (None: nobody owns the session now)."""
    epoch: int | None = None
    expires_in: float | None = None
    """Seconds until that lease expires, on the database's clock."""


@attrs.frozen(kw_only=True)
class NodeSummary:
    """One node, as its leases show it."""

    node: str
    owned: int
    """Users whose lease it holds, unexpired."""
    max_epoch: int
    expires_in: float
    """Seconds until it lapses unless it renews (negative: it has lapsed)."""


@attrs.frozen(kw_only=True)
class LeaseRow:
    """One row of ``netra_leases``."""

    user_id: str
    node: str
    epoch: int
    expires_in: float | None
    """Seconds left on the database's clock (negative: expired; None: released)."""


@attrs.frozen(kw_only=True)
class ClusterView:
    """The nodes and their recent leases, read at one moment of the database's clock."""

    now: float
    nodes: tuple[NodeSummary, ...]
    leases: tuple[LeaseRow, ...]
    """The most recently renewed leases, latest first."""


@runtime_checkable
class AdminReads(Protocol):
    """The inspector's reads of a store (all from trio; every result bounded by ``limit``)."""

    async def admin_users(self, prefix: str, limit: int) -> list[UserSummary]:
        """Users whose id starts with ``prefix``: the most recently active first, then the
        owned ones without runs."""
        ...

    async def admin_cluster(self, limit: int) -> ClusterView:
        """Nodes with a lease that is live or lapsed within :data:`LAPSED_SECONDS`, and up to
        ``limit`` leases."""
        ...

    async def admin_run_events(self, user_id: str, run_id: str, limit: int) -> list[Event]:
        """The first ``limit`` events of one run of one user, in ``seq`` order."""
        ...


def _now(engine: AsyncEngine) -> ColumnElement[float]:
    """The database's clock, as the leases use it."""
    if engine.dialect.name == "sqlite":
        return literal_column(SQLITE_NOW, Float)
    from ._postgres import NOW  # (asyncpg is there: it is this engine's driver)

    return literal_column(NOW, Float)


def _remaining(expires_at: float, now: float) -> float | None:
    return None if expires_at <= 0 else round(expires_at - now, 3)


async def users(engine: AsyncEngine, prefix: str, limit: int) -> list[UserSummary]:
    """:meth:`AdminReads.admin_users` on ``engine`` (three bounded queries)."""
    live = func.sum(case((runs.c.state.in_(LIVE_STATE_VALUES), 1), else_=0))
    last = func.max(runs.c.updated_at)
    by_runs = select(runs.c.user_id, func.count(), live, last).group_by(runs.c.user_id)
    owned = select(leases.c.user_id).select_from(_WITH_NODE).where(_now(engine) < _EXPIRES)
    if prefix:
        by_runs = by_runs.where(runs.c.user_id.startswith(prefix, autoescape=True))
        owned = owned.where(leases.c.user_id.startswith(prefix, autoescape=True))
    async with engine.connect() as conn:
        now = float((await conn.execute(select(_now(engine)))).scalar_one())
        found: dict[str, tuple[int, int, float | None]] = {
            user_id: (int(n), int(live_n or 0), last_at)
            for user_id, n, live_n, last_at in await conn.execute(
                by_runs.order_by(last.desc(), runs.c.user_id).limit(limit)
            )
        }
        for (user_id,) in await conn.execute(owned.order_by(leases.c.user_id).limit(limit)):
            if len(found) >= limit:
                break
            found.setdefault(user_id, (0, 0, None))
        ids = list(found)
        heads = dict(
            (await conn.execute(
                select(events.c.user_id, func.max(events.c.seq))
                .where(events.c.user_id.in_(ids))
                .group_by(events.c.user_id)
            )).all()
        )  # fmt: skip
        held = {
            row.user_id: row
            for row in await conn.execute(
                select(leases.c.user_id, leases.c.node, leases.c.epoch, _EXPIRES.label("expires"))
                .select_from(_WITH_NODE)
                .where(leases.c.user_id.in_(ids), now < _EXPIRES)
            )
        }
    out = []
    for user_id, (n, live_n, last_at) in found.items():
        lease = held.get(user_id)
        out.append(
            UserSummary(
                user_id=user_id,
                head_seq=int(heads.get(user_id) or 0),
                runs=n,
                live_runs=live_n,
                last_activity=last_at,
                node=None if lease is None else lease.node,
                epoch=None if lease is None else int(lease.epoch),
                expires_in=None if lease is None else _remaining(lease.expires, now),
            )
        )
    return out


async def cluster(engine: AsyncEngine, limit: int) -> ClusterView:
    """:meth:`AdminReads.admin_cluster` on ``engine`` (three bounded queries)."""
    async with engine.connect() as conn:
        now = float((await conn.execute(select(_now(engine)))).scalar_one())
        held = leases.c.expires_at > 0
        by_node = nodes.outerjoin(leases, (leases.c.node == nodes.c.node) & held)
        owned = func.sum(case(((nodes.c.expires_at > now) & held, 1), else_=0))
        found = tuple(
            NodeSummary(
                node=node, owned=int(n or 0), max_epoch=int(epoch or 0), expires_in=exp - now
            )
            for node, n, epoch, exp in await conn.execute(
                select(nodes.c.node, owned, func.max(leases.c.epoch), nodes.c.expires_at)
                .select_from(by_node)
                .where(nodes.c.expires_at > now - LAPSED_SECONDS)
                .group_by(nodes.c.node, nodes.c.expires_at)
                .order_by(nodes.c.node)
                .limit(limit)
            )
        )
        rows = tuple(
            LeaseRow(
                user_id=row.user_id,
                node=row.node,
                epoch=int(row.epoch),
                expires_in=_remaining(row.expires, now),
            )
            for row in await conn.execute(
                select(leases.c.user_id, leases.c.node, leases.c.epoch, _EXPIRES.label("expires"))
                .select_from(_WITH_NODE)
                .order_by(_EXPIRES.desc(), leases.c.expires_at.desc(), leases.c.user_id)
                .limit(limit)
            )
        )
    return ClusterView(now=now, nodes=found, leases=rows)


async def run_events(engine: AsyncEngine, user_id: str, run_id: str, limit: int) -> list[Event]:
    """:meth:`AdminReads.admin_run_events` on ``engine`` (one query, scoped by user and run)."""
    query = (
        select(events)
        .where(events.c.user_id == user_id, events.c.run_id == run_id)
        .order_by(events.c.seq)
        .limit(limit)
    )
    async with engine.connect() as conn:
        return [Event.from_row(row) for row in await conn.execute(query)]
