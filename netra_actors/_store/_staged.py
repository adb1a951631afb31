"""The developers' own writes in a unit of work: SQLAlchemy Core statements and ORM instances.

Agents stage them (``_uow.check_stageable`` refuses anything else); the writer runs them in the
unit's transaction, after the store's own rows, through a SQLAlchemy ``Connection``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from .._uow import UnitOfWork, is_orm_instance
from ._waiting import Pending


def apply_statements(conn: Connection, unit: UnitOfWork) -> None:
    """Run a unit's staged statements and ORM instances on ``conn``, in order."""
    orm: list[object] = []

    def flush_orm() -> None:
        if orm:
            with Session(
                bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
            ) as session:
                session.add_all(orm)
                session.commit()
            orm.clear()

    for s in unit.statements:
        if is_orm_instance(s.target):
            orm.append(s.target)
            continue
        flush_orm()
        if s.params is None:
            conn.execute(s.target)
        else:
            conn.execute(s.target, s.params)
    flush_orm()


def make_orm_transient(batch: Sequence[Pending]) -> None:
    """Before a retry: staged ORM objects of a rolled-back flush can be inserted again."""
    from sqlalchemy.orm import make_transient

    for p in batch:
        for s in p.unit.statements:
            if is_orm_instance(s.target):
                make_transient(s.target)
