"""The tables of the store, their schema version, and the migrations that build them.

Migrations are a documented equivalent of Alembic, kept small on purpose: ``MIGRATIONS[n]``
upgrades a database from version ``n`` to ``n + 1`` and runs inside the opening transaction;
the version lives in ``netra_meta``. A database whose version is newer than ``SCHEMA_VERSION`` is
refused (:class:`SchemaVersionError`) rather than misread. See ``docs/store.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)

from .._core._threads import title_of
from .._exceptions import SchemaVersionError

metadata = MetaData()

meta = Table(
    "netra_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

events = Table(
    "netra_events",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("run_id", String(64), nullable=True),
    Column("event", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("data", Text, nullable=False),
    Column("thread", String(128), nullable=True),
    Index("netra_events_user_thread", "user_id", "thread", "seq"),
    Index("netra_events_run", "run_id"),
)
"""``thread`` is the event's thread (its run's); NULL only for an event that belongs to no
thread (none is written today: every event the runtime commits belongs to a run or a thread)."""

runs = Table(
    "netra_runs",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("run_id", String(64), primary_key=True),
    Column("agent", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("input", Text, nullable=True),
    Column("result", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("thread", String(128), nullable=False, server_default="main"),
    Column("start_seq", Integer, nullable=True),
    Column("history_seq", Integer, nullable=True),
    Column("wait", String(16), nullable=True),
    Column("wake_at", Float, nullable=True),
    Index("netra_runs_user_state", "user_id", "state"),
    Index("netra_runs_user_created", "user_id", "created_at"),
    Index("netra_runs_state_wait", "state", "wait"),
    Index("netra_runs_wake_at", "wake_at"),
)
"""``wait``: what a live run waits for as a row (``input``, ``timer``, ``scheduled``; NULL: it
runs, or waits for something in memory); ``wake_at``: when a timer or a scheduled start is due
(seconds since the epoch). Both indexed for the recovery scan (``state``: live runs whose owner
is gone; ``wake_at``: due timers)."""

threads = Table(
    "netra_threads",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("thread", String(128), primary_key=True),
    Column("title", Text, nullable=True),
    Column("created_ts", Float, nullable=False),
    Column("last_seq", Integer, nullable=False),
    Column("last_ts", Float, nullable=False),
    Index("netra_threads_user_last", "user_id", "last_seq"),
)
"""One summary row per thread of a user, upserted by the group commit (one row per thread per
batch): its title (the start of its first user message), first and last activity."""

message_ids = Table(
    "netra_message_ids",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("message_id", String(128), primary_key=True),
    Column("thread", String(128), nullable=False),
    Column("created_ts", Float, nullable=False),
)
"""The message ids a client chose (``say(message_id=…)``, AG-UI message ids): unique per user."""

leases = Table(
    "netra_leases",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("node", Text, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("netra_leases_node", "node"),
)
"""A user's lease: the node incarnation that holds it and its fencing epoch (only grows).
``expires_at``: 0 once released; otherwise when it was taken (the database's clock) — since
schema version 6 a held lease lasts exactly as long as its node's row in :data:`nodes` is live,
so renewing a node's leases writes one row, however many users it owns."""

nodes = Table(
    "netra_nodes",
    metadata,
    Column("node", Text, primary_key=True),
    Column("expires_at", Float, nullable=False),
)
"""One row per node incarnation (a process: ``_leases.node_name``): it is alive while
``expires_at`` (the database's clock) is in the future. Renewed in bulk by the node's writer
every ``lease_ttl / 3``; deleted when the node is proven gone (``_incarnation.py``)."""

inbox = Table(
    "netra_inbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("user_id", String(128), nullable=False),
    Column("request_id", String(128), nullable=False, unique=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("netra_inbox_user_id", "user_id", "id"),
)

replies = Table(
    "netra_replies",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

model_calls = Table(
    "netra_model_calls",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("run_id", String(64), primary_key=True),
    Column("attempt", Integer, primary_key=True, autoincrement=False),
    Column("step", Integer, primary_key=True, autoincrement=False),
    Column("name", String(128), nullable=False),
    Column("request_sha256", String(64), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("after_seq", BigInteger, nullable=True),
)
"""The journal of model calls: each completed model response, beside the events (not in the
user's stream: prompts and raw responses are not the user's events, and can be large).
``after_seq``: the user's event it committed after (where it goes in the run's journal)."""

SCHEMA_VERSION = 7


def _v0_to_v1(conn: Connection) -> None:
    # The schema exactly as version 1 shipped it, frozen here: later versions change the live
    # tables above through their own migrations, and a fresh database replays them all.
    v1 = MetaData()
    Table(
        "netra_events",
        v1,
        Column("user_id", String(128), primary_key=True),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("run_id", String(64), nullable=True),
        Column("event", String(64), nullable=False),
        Column("ts", Float, nullable=False),
        Column("data", Text, nullable=False),
    )
    Table(
        "netra_runs",
        v1,
        Column("user_id", String(128), primary_key=True),
        Column("run_id", String(64), primary_key=True),
        Column("agent", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("input", Text, nullable=True),
        Column("result", Text, nullable=True),
        Column("reason", Text, nullable=True),
        Column("created_at", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Index("netra_runs_user_state", "user_id", "state"),
        Index("netra_runs_user_created", "user_id", "created_at"),
    )
    v1.create_all(conn)


def _v1_to_v2(conn: Connection) -> None:
    # Version 2, frozen: the cluster tables (leases with fencing epochs, the command inbox and
    # its replies). Only new tables: every version-1 row stays valid as it is.
    v2 = MetaData()
    Table(
        "netra_leases",
        v2,
        Column("user_id", String(128), primary_key=True),
        Column("node", Text, nullable=False),
        Column("epoch", BigInteger, nullable=False),
        Column("expires_at", Float, nullable=False),
        Index("netra_leases_node", "node"),
    )
    Table(
        "netra_inbox",
        v2,
        Column(
            "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        Column("user_id", String(128), nullable=False),
        Column("request_id", String(128), nullable=False, unique=True),
        Column("kind", String(64), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", Float, nullable=False),
        Index("netra_inbox_user_id", "user_id", "id"),
    )
    Table(
        "netra_replies",
        v2,
        Column("request_id", String(128), primary_key=True),
        Column("user_id", String(128), nullable=False),
        Column("ok", Boolean, nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", Float, nullable=False),
    )
    v2.create_all(conn)


def _v2_to_v3(conn: Connection) -> None:
    # Version 3, frozen: the journal of model calls (issue 13). Only a new table.
    v3 = MetaData()
    Table(
        "netra_model_calls",
        v3,
        Column("user_id", String(128), primary_key=True),
        Column("run_id", String(64), primary_key=True),
        Column("attempt", Integer, primary_key=True, autoincrement=False),
        Column("step", Integer, primary_key=True, autoincrement=False),
        Column("name", String(128), nullable=False),
        Column("request_sha256", String(64), nullable=False),
        Column("response", Text, nullable=False),
        Column("created_at", Float, nullable=False),
    )
    v3.create_all(conn)


def _v3_to_v4(conn: Connection) -> None:
    # Version 4, frozen: threads (issue 19). Every existing run and event goes to thread
    # ``main``; the summary rows are built from the events, the titles from each user's first
    # user message (read once, in key order).
    conn.execute(text("ALTER TABLE netra_events ADD COLUMN thread VARCHAR(128)"))
    conn.execute(text("UPDATE netra_events SET thread = 'main'"))
    conn.execute(
        text("ALTER TABLE netra_runs ADD COLUMN thread VARCHAR(128) NOT NULL DEFAULT 'main'")
    )
    conn.execute(text("ALTER TABLE netra_runs ADD COLUMN start_seq INTEGER"))
    conn.execute(text("ALTER TABLE netra_runs ADD COLUMN history_seq INTEGER"))
    conn.execute(
        text("CREATE INDEX netra_events_user_thread ON netra_events (user_id, thread, seq)")
    )
    v4 = MetaData()
    Table(
        "netra_threads",
        v4,
        Column("user_id", String(128), primary_key=True),
        Column("thread", String(128), primary_key=True),
        Column("title", Text, nullable=True),
        Column("created_ts", Float, nullable=False),
        Column("last_seq", Integer, nullable=False),
        Column("last_ts", Float, nullable=False),
        Index("netra_threads_user_last", "user_id", "last_seq"),
    )
    Table(
        "netra_message_ids",
        v4,
        Column("user_id", String(128), primary_key=True),
        Column("message_id", String(128), primary_key=True),
        Column("thread", String(128), nullable=False),
        Column("created_ts", Float, nullable=False),
    )
    v4.create_all(conn)
    conn.execute(
        text(
            "INSERT INTO netra_threads (user_id, thread, title, created_ts, last_seq, last_ts) "
            "SELECT user_id, 'main', NULL, MIN(ts), MAX(seq), MAX(ts) FROM netra_events "
            "GROUP BY user_id"
        )
    )
    titles: dict[str, str] = {}
    rows = conn.execute(
        text("SELECT user_id, data FROM netra_events WHERE event = 'message' ORDER BY user_id, seq")
    )
    for user_id, data in rows:
        if user_id in titles or '"user"' not in data:
            continue
        value = json.loads(data)
        if isinstance(value, dict) and value.get("role") == "user":
            titles[user_id] = title_of(str(value.get("text", "")))
    if titles:
        conn.execute(
            text(
                "UPDATE netra_threads SET title = :title WHERE user_id = :user AND thread = 'main'"
            ),
            [{"user": user, "title": title} for user, title in titles.items()],
        )


def _v4_to_v5(conn: Connection) -> None:
    # Durable runs (issue 18), frozen: a run's durable wait on its row, the indexes of the
    # recovery scan, a run's events by run (its journal), a model call's place in the journal.
    # Only new nullable columns and indexes: every earlier row stays valid as it is.
    for statement in (
        "ALTER TABLE netra_runs ADD COLUMN wait VARCHAR(16)",
        "ALTER TABLE netra_runs ADD COLUMN wake_at FLOAT",
        "ALTER TABLE netra_model_calls ADD COLUMN after_seq BIGINT",
        "CREATE INDEX netra_runs_state ON netra_runs (state)",
        "CREATE INDEX netra_runs_wake_at ON netra_runs (wake_at)",
        "CREATE INDEX netra_events_run ON netra_events (run_id)",
    ):
        conn.execute(text(statement))


def _v5_to_v6(conn: Connection) -> None:
    # Node-level liveness (issue 21), frozen: one row per node incarnation; a lease row refers
    # to its node, whose row alone is renewed. Each node with unreleased leases gets a row that
    # lives as long as its latest lease did, so no lease changes hands in the upgrade.
    v6 = MetaData()
    Table(
        "netra_nodes",
        v6,
        Column("node", Text, primary_key=True),
        Column("expires_at", Float, nullable=False),
    )
    v6.create_all(conn)
    conn.execute(
        text(
            "INSERT INTO netra_nodes (node, expires_at) SELECT node, MAX(expires_at) "
            "FROM netra_leases WHERE expires_at > 0 GROUP BY node"
        )
    )


def _v6_to_v7(conn: Connection) -> None:
    # The recovery scan's live-runs read, frozen: live runs that do not wait as a row are found
    # by (state, wait) instead of reading every live run's row to skip the waiting ones (20 ms a
    # scan with 100,000 runs waiting; 0.06 ms with the index). It serves reads by state alone.
    conn.execute(text("DROP INDEX netra_runs_state"))
    conn.execute(text("CREATE INDEX netra_runs_state_wait ON netra_runs (state, wait)"))


#: ``MIGRATIONS[n]`` upgrades version ``n`` to ``n + 1``.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    0: _v0_to_v1,
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7,
}


def current_version(conn: Connection) -> int:
    """The schema version recorded in the database (0 for an empty database)."""
    meta.create(conn, checkfirst=True)
    row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
    return int(row[0]) if row else 0


def migrate(conn: Connection) -> tuple[int, int]:
    """Bring the schema to :data:`SCHEMA_VERSION`. Returns (version before, version after).

    On PostgreSQL, a transaction-scoped advisory lock serializes servers that start together on
    one database (SQLite's ``BEGIN IMMEDIATE`` already does).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7316040581)"))
    before = version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database has schema version {version}, but this netra_actors knows only up "
            f"to {SCHEMA_VERSION}: upgrade netra_actors (never downgrade a database)"
        )
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](conn)
        version += 1
    if version != before:
        if before == 0:
            conn.execute(meta.insert().values(key="schema_version", value=str(version)))
        else:
            conn.execute(
                meta.update().where(meta.c.key == "schema_version").values(value=str(version))
            )
    return before, version
