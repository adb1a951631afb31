"""Runtime configuration: one frozen value, validated when it is built."""

from __future__ import annotations

import os
import re
import types
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from sqlalchemy import make_url

from ._core import LivenessPolicy, RestartPolicy
from ._core._admission import IF_BUSY
from ._core._resilience import Dependency, dependency_map
from ._exceptions import ConfigError
from ._validate import positive, positive_int


def _url(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or "://" not in value:
        raise ConfigError(
            f"database_url must be a SQLAlchemy URL such as 'sqlite+aiosqlite:///netra.db' "
            f"or 'postgresql+asyncpg://user@host/db', got {value!r}"
        )
    scheme = value.split("://", 1)[0]
    if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigError(
            f"database_url scheme {scheme!r} is not supported: use 'sqlite+aiosqlite' "
            "(embedded default) or 'postgresql+asyncpg'"
        )


def _synchronous(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if value not in ("NORMAL", "FULL"):
        raise ConfigError(f"sqlite_synchronous must be 'NORMAL' or 'FULL', got {value!r}")


def _gc_threshold(
    _inst: object, _attr: attrs.Attribute[Any], value: tuple[int, int, int] | None
) -> None:
    if value is None:
        return
    if not (
        isinstance(value, tuple)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise ConfigError(f"gc_threshold must be None or three integers >= 0, got {value!r}")


def _tracing(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not True and value is not False and not hasattr(value, "get_tracer"):
        raise ConfigError(f"tracing must be True, False or a TracerProvider, got {value!r}")


def _if_busy(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if value not in IF_BUSY:
        raise ConfigError(f"if_busy must be one of {', '.join(IF_BUSY)}, got {value!r}")


def _retention_days(_inst: object, _attr: object, value: float | None) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
    ):
        raise ConfigError(f"retention_days must be None or a positive number, got {value!r}")


def _not_negative(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{attr.name} must be a number >= 0, got {value!r}")


def _dependencies(
    value: Mapping[str, Dependency] | Iterable[Dependency],
) -> Mapping[str, Dependency]:
    """A read-only mapping of name to :class:`Dependency`; keys must equal the names."""
    return types.MappingProxyType(dependency_map(value))


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of a SQLite file at ``path``."""
    return f"sqlite+aiosqlite:///{os.fspath(path)}"


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_ALIASES = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def database_url(value: str | os.PathLike[str]) -> str:
    """The database URL for ``value``: a SQLAlchemy URL, or the path of a SQLite file.

    ``postgresql://…``/``postgres://…`` and ``sqlite:///…`` are taken as the asyncpg and aiosqlite
    URLs they name. Anything that looks like a URL but is not one this runtime can use is a
    :class:`ConfigError` — never a file named after it.

    A SQLite file is named by its absolute path in the URL returned, resolved against the current
    directory as SQLAlchemy resolves it (``sqlite:///data/x.db``, three slashes, is
    ``./data/x.db``; ``sqlite:////data/x.db``, four, is ``/data/x.db``), so that the URL says which
    file it is. Its directory must exist (:class:`ConfigError` otherwise): it is not created.
    """
    text = os.fspath(value)
    if not _SCHEME.match(text):
        if not text:
            raise ConfigError("the database is empty: give a SQLite file path or a URL")
        return _sqlite_file(sqlite_url(text), text)
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ConfigError(
            f"{text!r} looks like a URL but has no '://': use e.g. "
            "'postgresql+asyncpg://user@host:5432/db' or a SQLite file path"
        )
    scheme = _ALIASES.get(scheme, scheme)
    url = f"{scheme}://{rest}"
    _url(None, None, url)  # type: ignore[arg-type]
    return _sqlite_file(url, text) if scheme == "sqlite+aiosqlite" else url


def _sqlite_file(url: str, given: str) -> str:
    """``url`` with its SQLite file's absolute path, refused if the file's directory is missing
    (an in-memory database or a ``file:`` URI is returned as it is)."""
    parsed = make_url(url)
    path = parsed.database or ""
    if path in ("", ":memory:") or path.startswith("file:"):
        return url
    absolute = os.path.abspath(path)
    directory = os.path.dirname(absolute)
    if not os.path.isdir(directory):
        hint = ""
        if "://" in given and not os.path.isabs(path):
            hint = (
                f" ('sqlite:///{path}', with three slashes, is relative to the current directory;"
                f" the absolute path /{path} is 'sqlite:////{path}', with four)"
            )
        raise ConfigError(
            f"the SQLite file {absolute} cannot be made: its directory {directory} does not "
            f"exist{hint}; create the directory first"
        )
    return parsed.set(database=absolute).render_as_string(hide_password=False)


@attrs.frozen(kw_only=True)
class RuntimeConfig:
    """Everything the runtime needs to know. Every buffer here is bounded."""

    database_url: str = attrs.field(default=sqlite_url("netra.db"), validator=_url)
    """``sqlite+aiosqlite:///PATH`` (embedded default, WAL) or ``postgresql+asyncpg://…``."""
    mailbox_size: int = attrs.field(default=1024, validator=positive_int)
    """Capacity of each user's supervisor mailbox (messages)."""
    agent_mailbox_size: int = attrs.field(default=64, validator=positive_int)
    """Capacity of each run's agent mailbox (messages sent to the run)."""
    subscriber_buffer: int = attrs.field(default=4096, validator=positive_int)
    """Events a socket mailbox may hold before its socket counts as a slow consumer."""
    max_staged_events: int = attrs.field(default=10_000, validator=positive_int)
    """Events one unit of work may stage before the agent must checkpoint."""
    max_event_bytes: int = attrs.field(default=256 * 1024, validator=positive_int)
    """Largest encoded ``data`` of one event, and largest run input (bytes of JSON)."""
    max_message_chars: int = attrs.field(default=64 * 1024, validator=positive_int)
    """Longest streamed message (code points): the supervisor holds open messages' text so
    that a socket that (re)connects mid-answer gets it; a longer ``write`` raises."""
    max_open_messages: int = attrs.field(default=16, validator=positive_int)
    """Messages one user may be streaming at once; past it, the oldest one stops streaming
    (its text still commits in full)."""
    max_inputs_per_run: int = attrs.field(default=1000, validator=positive_int)
    """How many ``send_input`` commands one run may receive (each is kept for restarted attempts)."""
    if_busy: str = attrs.field(default="parallel", validator=_if_busy)
    """What ``say``/``start_run`` do while the user has a live run (``parallel``, ``reject``,
    ``enqueue``, ``interrupt``), unless the command says."""
    max_live_runs_per_user: int = attrs.field(default=64, validator=positive_int)
    """Live runs one user may have at once; further starts get ``rate_limited``."""
    max_sessions: int = attrs.field(default=100_000, validator=positive_int)
    """Users with an active supervisor at once; further users get ``rate_limited``."""
    max_waiters_per_run: int = attrs.field(default=1024, validator=positive_int)
    """Callers that may wait for one run to end (``wait_run``) at once."""
    idle_timeout: float = attrs.field(default=60.0, validator=positive)
    """Seconds a user with no socket and no live run stays active before passivation."""
    liveness: LivenessPolicy = attrs.field(factory=LivenessPolicy)
    """Default heartbeat timeout and run deadline (an agent class may override)."""
    restart: RestartPolicy = attrs.field(factory=RestartPolicy)
    """Default restart policy of agent runs (an agent class may override)."""
    max_threads: int = attrs.field(default=16, validator=positive_int)
    """At most this many threaded-agent threads at once; further runs wait in ``pending``."""
    commit_batch_max: int = attrs.field(default=4096, validator=positive_int)
    """At most this many units of work in one group commit."""
    replay_page: int = attrs.field(default=500, validator=positive_int)
    """Events per page when replaying from the store."""
    busy_timeout: float = attrs.field(default=5.0, validator=positive)
    """SQLite busy timeout (seconds) for writers waiting on a lock."""
    sqlite_synchronous: str = attrs.field(default="NORMAL", validator=_synchronous)
    """SQLite ``PRAGMA synchronous``: ``NORMAL`` (WAL: survives a process crash, may lose the
    last commits on power loss) or ``FULL`` (survives power loss too, slower commits)."""
    store_retries: int = attrs.field(default=3, validator=positive_int)
    """How often a runtime-owned unit (rollback notice, state change) is retried on store error."""
    gc_threshold: tuple[int, int, int] | None = attrs.field(
        default=(50_000, 20, 100), validator=_gc_threshold
    )
    """``gc.set_threshold`` while the runtime is open (restored after), or ``None`` to leave the
    process's setting alone. Process-wide: the default trades a little memory for far fewer
    collections of the many long-lived objects a runtime holds (measured in benchmarks.md)."""
    node_id: str | None = attrs.field(default=None)
    """This process's name in a cluster (default: the host name); a per-process suffix is
    always added, so a restarted process never reuses a lease epoch."""
    lease_ttl: float = attrs.field(default=10.0, validator=positive)
    """Seconds a user's lease lasts without renewal (renewed every third of it). Another node
    takes a user over only after its owner's lease expired: a shorter TTL means a faster
    takeover after a crash, a longer one tolerates longer pauses of the owner."""
    cluster_poll: float = attrs.field(default=0.05, validator=positive)
    """Seconds between polls where no hint wakes the node: followers' polls for other nodes'
    commits on SQLite, and on SQLite in memory (no relay) the inbox and answers too. Hints wake
    the node instead, and it polls only every ``cluster_safety_poll``: PostgreSQL notifications,
    and on a SQLite file the local relay's datagrams for posted commands and their answers."""
    cluster_safety_poll: float = attrs.field(default=2.0, validator=positive)
    """The slow poll that backs up hints (PostgreSQL notifications, SQLite's local datagrams):
    a lost hint costs at most this much latency, never a command or an answer."""
    request_timeout: float = attrs.field(default=30.0, validator=positive)
    """How long a command forwarded to the user's owner on another node may wait for its answer."""
    retention_days: float | None = attrs.field(default=None, validator=_retention_days)
    """Erase the events of threads with no activity for this many days (None: keep
    everything): a background task, in bounded batches, through each user's owner."""
    retention_batch: int = attrs.field(default=1000, validator=positive_int)
    """Events one retention transaction erases at most."""
    retention_pause: float = attrs.field(default=0.05, validator=_not_negative)
    """Seconds retention waits between its batches (live traffic goes first)."""
    retention_interval: float = attrs.field(default=3600.0, validator=positive)
    """Seconds between two retention sweeps of this node."""
    recovery_scan: float = attrs.field(default=0.5, validator=positive)
    """Seconds between this node's looks for users whose runs need an owner and have none
    (their owner is gone, a timer or a scheduled start is due): it takes them without waiting
    for a client. Nodes proven gone are looked for every fourth scan."""
    recovery_batch: int = attrs.field(default=256, validator=positive_int)
    """At most this many users taken per scan (the rest are found by the next one)."""
    echo_sql: bool = False
    """Log every SQL statement (debugging)."""
    dependencies: Mapping[str, Dependency] = attrs.field(
        factory=dict, converter=_dependencies, hash=False
    )
    """Retry and circuit-breaker policy per dependency (tool or model API), keyed by its name
    (which must equal ``Dependency.name``; a list of ``Dependency`` values is accepted too). The
    one place these are configured: the runtime's ``Resilience`` applies them to every user.
    An undeclared name gets ``Dependency(name)``: one attempt, no breaker."""
    tracing: object = attrs.field(default=False, validator=_tracing)
    """OpenTelemetry spans of runs, attempts, tool and model calls and group commits: ``True``
    (the global ``TracerProvider``) or a ``TracerProvider``; needs the ``otel`` extra (without it,
    opening the runtime raises :class:`ConfigError`)."""

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite store."""
        return self.database_url.startswith("sqlite")
