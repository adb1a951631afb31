"""A PostgreSQL server for the benchmarks (``--db postgresql+asyncpg://…``) and its scratch
databases: each measurement creates a fresh database of its own and drops it afterwards, through
the server's maintenance database (``postgres``, else ``test``); nothing else is touched."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import attrs

from .report import BenchError


class PgUnavailable(Exception):
    """The PostgreSQL server named by ``--db`` cannot be reached (the scenario is skipped)."""


@attrs.frozen
class PgServer:
    """The server of a ``--db postgresql+asyncpg://…`` URL, and how to make scratch databases."""

    url: Any
    """The URL (``sqlalchemy.engine.URL``) with the ``postgresql+asyncpg`` driver."""
    maintenance: str
    """The database the scratch databases are created from (``postgres`` or ``test``)."""
    version: str

    @staticmethod
    def parse(text: str) -> Any:
        from sqlalchemy import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(text)
        except ArgumentError as exc:
            raise BenchError(f"--db: not a database URL: {text!r} ({exc})") from None
        if url.get_backend_name() != "postgresql":
            raise BenchError(
                f"--db takes a postgresql+asyncpg:// URL (SQLite is the default), got {text!r}"
            )
        return url.set(drivername="postgresql+asyncpg")

    def dsn(self, database: str) -> str:
        """The asyncpg DSN of ``database`` on this server."""
        return str(
            self.url.set(drivername="postgresql", database=database).render_as_string(
                hide_password=False
            )
        )

    def sa_url(self, database: str) -> str:
        """The ``postgresql+asyncpg://`` URL of ``database`` (for the store)."""
        return str(self.url.set(database=database).render_as_string(hide_password=False))

    def where(self) -> str:
        return f"{self.url.host or 'localhost'}:{self.url.port or 5432}"

    @classmethod
    def connect(cls, text: str) -> PgServer:
        """Find a maintenance database we can connect to, or raise :class:`PgUnavailable`."""
        url = cls.parse(text)
        candidates = list(dict.fromkeys(d for d in ("postgres", "test", url.database) if d))

        async def probe() -> PgServer:
            import asyncpg

            errors = []
            for name in candidates:
                probe_server = cls(url=url, maintenance=name, version="?")
                try:
                    conn = await asyncpg.connect(probe_server.dsn(name), timeout=5)
                except asyncpg.InvalidCatalogNameError as exc:
                    errors.append(f"{name}: {exc}")
                    continue
                except (
                    TimeoutError,
                    OSError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                ) as exc:
                    raise PgUnavailable(
                        f"PostgreSQL at {probe_server.where()} is unreachable "
                        f"({type(exc).__name__}: {exc})"
                    ) from None
                try:
                    version = str(await conn.fetchval("SHOW server_version"))
                finally:
                    await conn.close()
                return cls(url=url, maintenance=name, version=version)
            raise PgUnavailable(
                f"no maintenance database to create scratch databases from: {'; '.join(errors)}"
            )

        return asyncio.run(probe())

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn(self.maintenance), timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def create(self, name: str) -> None:
        asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))

    def drop(self, name: str) -> None:
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def scratch_database(server: PgServer, prefix: str) -> Iterator[str]:
    """A fresh database ``<prefix><random>`` on ``server``, dropped when the block ends."""
    name = f"{prefix}{secrets.token_hex(6)}"
    server.create(name)
    try:
        yield name
    finally:
        server.drop(name)
