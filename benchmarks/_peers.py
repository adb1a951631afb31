"""``peers``: the ``throughput`` workload built four other ways, measured in the same run.

Every design runs the same workload on its own fresh SQLite file with the netra schema: per user
one run whose agent emits ``events`` ``agent_thinking`` events in units of ``every``, plus the same
seven run-state/lifecycle events and the same run-row upserts, in the same units (start, the
checkpoints, the final unit, ``completed``). Every design delivers every event to an in-process
subscriber that checks ``seq`` and counts it, and every file is counted afterwards.

* ``netra``: this runtime (exactly the ``throughput`` scenario).
* ``pykka``: what a pykka user would build. One ``pykka.ThreadingActor`` supervisor per user runs
  the agent's loop in its thread (staging locally, like netra's agents); at each checkpoint it hands
  the unit to a group-commit writer thread (plain ``sqlite3``, WAL, one ``executemany`` per batch of
  all waiting units: the same technique as netra's store), blocks until it is committed, then
  ``tell``\\ s the events to a subscriber actor. Commit before send and per-user order hold.
  Favourable to pykka: the agent runs in the supervisor's thread (no per-agent thread or message)
  and one subscriber actor consumes for every user (not one thread per socket).
* ``pykka+store``: the same pykka supervisors committing through netra's own ``SqlStore`` (the
  "same store"): each commit is a ``trio.from_thread.run`` hand-off into the runtime's trio guest.
* ``unsafe``: the emit-then-write design. Each user's agent is a trio task (plain ``trio.run``,
  no asyncio host) that hands its events straight to the subscriber, then queues the rows for the
  same writer thread without waiting: a subscriber can see events that are later lost, and
  nothing orders the write against the delivery. The clock stops when the subscribers have every
  event *and* the writer has committed every row.
* ``minimal safe``: the minimal safe design of ``../shared/measurements/peer_baseline.py`` (the
  issue's reference, ~130k events/s there on its own simpler workload), on this workload: plain
  trio tasks (``trio.run``, no asyncio host), one per user, each handing its unit to the same
  ``sqlite3`` group-commit writer thread, which resumes every waiter of a batch with one
  ``run_sync_soon`` after the ``COMMIT``; only then does the task deliver the unit to its
  subscriber (commit before send, per-user order, gapless ``seq``). No supervisor, no mailbox,
  no crash handling: the floor of what the guarantees cost.

*netra CPU us/event*: the process's CPU time (every thread: trio's, the writer's) over netra's
timed window, per committed event. On a shared, noisy machine it moves far less than events/s, so
it is the figure to compare revisions by (run them alternately).
"""

from __future__ import annotations

import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pykka
import trio
import trio.lowlevel
from sqlalchemy import create_engine

import netra_actors as na
from netra_actors._store import SqlStore
from netra_actors._store._schema import metadata
from netra_actors._uow import RunRow as UowRunRow
from netra_actors._uow import UnitOfWork

from .harness.emitter import TEXT, Workload, count_rows, run_emitter, workloads
from .harness.inprocess import run_trio, scratch_dir
from .harness.machine import runtime_gc_threshold
from .harness.progress import Progress, measure_repeats
from .harness.report import BenchError, Column, Goal, Options, Report, Row
from .harness.stats import rate

GOAL_VS_PYKKA = 2.0
GOAL_VS_UNSAFE = 0.7
GOAL_VS_MINIMAL = 0.8

TITLE = (
    "the throughput workload: netra vs a pykka actor per user, the unsafe emit-then-write, "
    "and the minimal safe design"
)

INSERT_EVENT = (
    "INSERT INTO netra_events (user_id, seq, run_id, event, ts, data) VALUES (?, ?, ?, ?, ?, ?)"
)
UPSERT_RUN = (
    "INSERT INTO netra_runs (user_id, run_id, agent, state, attempt, input, result, reason, "
    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (user_id, run_id) DO UPDATE SET state = excluded.state, "
    "attempt = excluded.attempt, result = excluded.result, reason = excluded.reason, "
    "updated_at = excluded.updated_at"
)

EventRow = tuple[str, int, str, str, float, str]
RunRow = tuple[str, str, str, str, int, str, str | None, str | None, float, float]
Staged = tuple[str, dict[str, Any], str]
"""(event name, data, data as JSON)."""


def create_schema(db: str) -> None:
    """The netra tables (same DDL and indexes as the store creates)."""
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        metadata.create_all(conn)
    engine.dispose()


class SqliteWriter:
    """A group-commit writer thread on plain ``sqlite3`` (WAL, ``synchronous=NORMAL``).

    ``submit`` queues a unit's rows with a callback run after its batch committed: in the writer
    thread, or with ``token`` in trio, all callbacks of a batch in one ``run_sync_soon``.
    """

    def __init__(self, db: str, token: trio.lowlevel.TrioToken | None = None) -> None:
        self._db = db
        self._token = token
        self._queue: queue.SimpleQueue[
            tuple[list[EventRow], list[RunRow], Callable[[], None] | None] | None
        ] = queue.SimpleQueue()
        self.batches = 0
        self.events = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="bench-writer", daemon=True)
        self._thread.start()

    def submit(
        self, events: list[EventRow], runs: list[RunRow], done: Callable[[], None] | None
    ) -> None:
        self._queue.put((events, runs, done))

    def close(self) -> None:
        """Commit what is queued and stop the thread."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise BenchError(f"writer thread failed: {self.error!r}")

    def _loop(self) -> None:
        conn = sqlite3.connect(self._db, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        stop = False
        try:
            while not stop:
                items = []
                first = self._queue.get()
                if first is None:
                    stop = True
                else:
                    items.append(first)
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                    else:
                        items.append(item)
                if not items:
                    continue
                event_rows = [r for ev, _runs, _d in items for r in ev]
                run_rows = [r for _ev, runs, _d in items for r in runs]
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(INSERT_EVENT, event_rows)
                if run_rows:
                    conn.executemany(UPSERT_RUN, run_rows)
                conn.execute("COMMIT")
                self.batches += 1
                self.events += len(event_rows)
                callbacks = [done for _ev, _runs, done in items if done is not None]
                if callbacks and self._token is not None:
                    self._token.run_sync_soon(_call_all, callbacks)
                else:
                    for done in callbacks:
                        done()
        except BaseException as exc:  # reported by close()
            self.error = exc
        finally:
            conn.close()


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


class Script:
    """The workload of one user's run as a list of units: what every design commits, in order.

    Each unit is (staged events, run state after it). Identical to what the netra runtime commits
    for a ``BenchEmitter`` run: 4 events to start, the thinking units, the final unit with
    ``agent_completed`` and ``completing``, then ``completed``.
    """

    def __init__(self, user_id: str, events: int, every: int) -> None:
        self.user_id = user_id
        self.run_id = f"r_{user_id}"
        think = _staged("agent_thinking", {"text": TEXT})
        units: list[tuple[list[Staged], str]] = [
            (
                [
                    _staged("run_state", {"state": "pending", "previous": None}),
                    _staged("run_state", {"state": "starting", "previous": "pending"}),
                    _staged("agent_started", {"agent": "bench_emit", "attempt": 1}),
                    _staged("run_state", {"state": "running", "previous": "starting"}),
                ],
                "running",
            )
        ]
        current: list[Staged] = []
        for i in range(1, events + 1):
            current.append(think)
            if i % every == 0:
                units.append((current, "running"))
                current = []
        current.append(_staged("agent_completed", {"result": {"events": events}}))
        current.append(_staged("run_state", {"state": "completing", "previous": "running"}))
        units.append((current, "completing"))
        units.append(
            ([_staged("run_state", {"state": "completed", "previous": "completing"})], "completed")
        )
        self.units = units
        self.total = sum(len(u) for u, _s in units)

    def rows(self, base: int, staged: list[Staged], state: str, now: float) -> list[EventRow]:
        return [
            (self.user_id, base + i, self.run_id, name, now, data_json)
            for i, (name, _data, data_json) in enumerate(staged, start=1)
        ]

    def run_row(self, state: str, now: float, created: float) -> RunRow:
        return (self.user_id, self.run_id, "bench_emit", state, 1, "{}", None, None, created, now)

    def deliverable(self, base: int, staged: list[Staged], now: float) -> list[dict[str, Any]]:
        """The events as a subscriber gets them (one value per event, like netra's ``Event``)."""
        return [
            {
                "user_id": self.user_id,
                "seq": base + i,
                "run_id": self.run_id,
                "event": name,
                "ts": now,
                "data": data,
            }
            for i, (name, data, _json) in enumerate(staged, start=1)
        ]


def _staged(name: str, data: dict[str, Any]) -> Staged:
    return (name, data, orjson.dumps(data).decode())


# -- pykka ------------------------------------------------------------------------------------


class _Sink(pykka.ThreadingActor):
    """The subscribers of every user: checks each user's ``seq`` order and counts every event."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered = 0
        self.next_seq: dict[str, int] = {}
        self.errors: list[str] = []

    def on_receive(self, message: Any) -> Any:
        if message == "count":
            return (self.delivered, self.errors[:1])
        user_id, events = message
        expect = self.next_seq.get(user_id, 1)
        for ev in events:
            seq = ev["seq"] if isinstance(ev, dict) else ev.seq
            if seq != expect:
                self.errors.append(f"{user_id}: seq {seq}, expected {expect}")
                expect = seq
            expect += 1
        self.next_seq[user_id] = expect
        self.delivered += len(events)
        return None


def _sink_count(sink: pykka.ActorRef[_Sink]) -> tuple[int, list[str]]:
    """(events the sink consumed, its first error if any). Blocks the calling thread."""
    answer: Any = sink.ask("count")
    delivered, errors = answer
    return int(delivered), list(errors)


class _PykkaUser(pykka.ThreadingActor):
    """One user's supervisor on pykka: its thread runs the agent's units, commits each one
    (:meth:`commit`, blocking), then tells the sink its events (commit before send)."""

    def __init__(self, script: Script, sink: pykka.ActorRef[_Sink]) -> None:
        super().__init__()
        self.script = script
        self.sink = sink

    def commit(self, head: int, staged: list[Staged], state: str, created: float) -> list[Any]:
        """Commit one unit after ``head``; the events as the subscriber gets them."""
        raise NotImplementedError

    def on_receive(self, message: Any) -> Any:
        script = self.script
        created = time.time()
        head = 0
        for staged, state in script.units:
            events = self.commit(head, staged, state, created)
            self.sink.tell((script.user_id, events))
            head += len(staged)
        return head


class _UserSupervisor(_PykkaUser):
    """Commits through the group-commit writer thread (plain ``sqlite3``)."""

    def __init__(self, script: Script, writer: SqliteWriter, sink: pykka.ActorRef[_Sink]) -> None:
        super().__init__(script, sink)
        self.writer = writer

    def commit(self, head: int, staged: list[Staged], state: str, created: float) -> list[Any]:
        script = self.script
        now = time.time()
        committed = threading.Event()
        self.writer.submit(
            script.rows(head, staged, state, now),
            [script.run_row(state, now, created)],
            committed.set,
        )
        committed.wait()
        return script.deliverable(head, staged, now)


def run_pykka(w: Workload, db: str, progress: Progress) -> Row:
    """The pykka design, one measurement."""
    create_schema(db)
    writer = SqliteWriter(db)
    sink = _Sink.start()
    scripts = [Script(f"user{u:05d}", w.events, w.every) for u in range(w.users)]
    expected = sum(s.total for s in scripts)
    refs = [_UserSupervisor.start(s, writer, sink) for s in scripts]
    try:
        started = time.perf_counter()
        futures = [ref.ask("run", block=False) for ref in refs]
        for n, fut in enumerate(futures):
            fut.get(timeout=600)
            progress.bar(f"pykka {w.users} users", n + 1, len(futures))
        delivered, errors = 0, list[str]()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            delivered, errors = _sink_count(sink)
            if delivered >= expected:
                break
            time.sleep(0.001)
        seconds = time.perf_counter() - started
        progress.done()
    finally:
        for ref in refs:
            ref.stop(block=False)
        for ref in refs:
            # Not a second stop(): it races the first one (the actor may drain its inbox before
            # the second message lands in it, and nobody ever answers it).
            ref.actor_stopped.wait()
        sink.stop()
        writer.close()
    rows, _thinking = count_rows(db)
    if errors or delivered != expected or rows != expected or writer.events != expected:
        raise BenchError(
            f"pykka design with {w.users} users: expected {expected}, delivered {delivered}, "
            f"rows {rows}, errors {errors}"
        )
    return {"events": expected, "seconds": seconds, "batches": writer.batches}


# -- pykka on netra's own store --------------------------------------------------------------


class _StoreUser(_PykkaUser):
    """Commits through netra's ``SqlStore`` (a thread hand-off into the runtime's trio guest)."""

    def __init__(
        self,
        script: Script,
        store: SqlStore,
        token: trio.lowlevel.TrioToken,
        sink: pykka.ActorRef[_Sink],
    ) -> None:
        super().__init__(script, sink)
        self.store = store
        self.token = token

    def commit(self, head: int, staged: list[Staged], state: str, created: float) -> list[Any]:
        script = self.script
        unit = UnitOfWork(script.user_id)
        for name, _data, data_json in staged:
            unit.emit_encoded(script.run_id, name, data_json)
        unit.put_run(
            UowRunRow(
                user_id=script.user_id,
                run_id=script.run_id,
                agent="bench_emit",
                state=state,
                attempt=1,
                input_json="{}",
                result_json=None,
                reason=None,
                created_at=created,
                updated_at=time.time(),
            )
        )
        events: list[Any] = trio.from_thread.run(
            self.store.commit, script.user_id, head, unit, trio_token=self.token
        )
        return events


async def _pykka_store_main(w: Workload, db: str, progress: Progress) -> Row:
    store = await SqlStore.open(na.RuntimeConfig(database_url=na.sqlite_url(db)))
    token = trio.lowlevel.current_trio_token()
    scripts = [Script(f"user{u:05d}", w.events, w.every) for u in range(w.users)]
    expected = sum(s.total for s in scripts)
    sink = _Sink.start()
    refs = [_StoreUser.start(s, store, token, sink) for s in scripts]

    def wait_all(futures: list[pykka.Future[Any]]) -> None:
        for n, fut in enumerate(futures):
            fut.get(timeout=600)
            progress.bar(f"pykka+store {w.users} users", n + 1, len(futures))

    def stop_all() -> None:
        for ref in refs:
            ref.stop(block=False)
        for ref in refs:
            ref.actor_stopped.wait()  # (see run_pykka: a second stop() may never be answered)
        sink.stop()

    try:
        started = time.perf_counter()
        futures = [ref.ask("run", block=False) for ref in refs]
        await trio.to_thread.run_sync(wait_all, futures)
        delivered, errors = 0, list[str]()
        with trio.move_on_after(60):
            while True:
                delivered, errors = await trio.to_thread.run_sync(_sink_count, sink)
                if delivered >= expected:
                    break
                await trio.sleep(0.001)
        seconds = time.perf_counter() - started
        progress.done()
    finally:
        await trio.to_thread.run_sync(stop_all)
        await store.aclose()
    if errors or delivered != expected:
        raise BenchError(
            f"pykka+store design with {w.users} users: delivered {delivered} of {expected}; "
            f"errors {errors}"
        )
    return {"events": expected, "seconds": seconds}


def run_pykka_store(w: Workload, db: str, progress: Progress) -> Row:
    """pykka supervisors on netra's store, one measurement."""
    row = run_trio(_pykka_store_main, w, db, progress)
    rows, _thinking = count_rows(db)
    if rows != row["events"]:
        raise BenchError(f"pykka+store design: {rows} rows in the file of {row['events']}")
    return row


# -- unsafe: emit, then write ----------------------------------------------------------------


async def _subscriber(
    rx: trio.MemoryReceiveChannel[list[dict[str, Any]]], delivered: list[int], errors: list[str]
) -> None:
    """One user's subscriber: checks that ``seq`` is gapless and counts every event."""
    expect = 1
    async for events in rx:
        for ev in events:
            if ev["seq"] != expect:
                errors.append(f"{ev['user_id']}: seq {ev['seq']}, expected {expect}")
                expect = ev["seq"]
            expect += 1
        delivered[0] += len(events)


TrioAgent = Callable[[Script, trio.MemorySendChannel[list[dict[str, Any]]]], Awaitable[None]]
TrioFlush = Callable[[], Awaitable[None]]


async def _trio_design(
    name: str, w: Workload, agent: TrioAgent, progress: Progress, flush: TrioFlush | None = None
) -> Row:
    """A trio task per user running ``agent`` into its subscriber task (an unbounded channel:
    neither design needs backpressure); timed until every event is delivered (and ``flush``
    returned). Checks that every subscriber got every event in order."""
    scripts = [Script(f"user{u:05d}", w.events, w.every) for u in range(w.users)]
    expected = sum(s.total for s in scripts)
    delivered = [0]
    errors: list[str] = []
    async with trio.open_nursery() as readers:
        channels = []
        for _ in scripts:
            tx, rx = trio.open_memory_channel[list[dict[str, Any]]](math.inf)
            channels.append(tx)
            readers.start_soon(_subscriber, rx, delivered, errors)
        await trio.lowlevel.checkpoint()
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for script, tx in zip(scripts, channels, strict=True):
                nursery.start_soon(agent, script, tx)
        with trio.move_on_after(60):
            while delivered[0] < expected:
                progress.bar(f"{name} {w.users} users", delivered[0], expected)
                await trio.sleep(0.001)
        if flush is not None:
            await flush()
        seconds = time.perf_counter() - started
        progress.done()
        for tx in channels:
            tx.close()
    if errors or delivered[0] != expected:
        raise BenchError(
            f"{name} design with {w.users} users: delivered {delivered[0]} of {expected}; "
            f"errors {errors[:1]}"
        )
    return {"events": expected, "seconds": seconds}


async def _unsafe_main(w: Workload, writer: SqliteWriter, progress: Progress) -> Row:
    async def agent(script: Script, tx: trio.MemorySendChannel[list[dict[str, Any]]]) -> None:
        created = time.time()
        head = 0
        for staged, state in script.units:
            now = time.time()
            tx.send_nowait(script.deliverable(head, staged, now))  # the socket first …
            writer.submit(  # … the database afterwards, without waiting
                script.rows(head, staged, state, now), [script.run_row(state, now, created)], None
            )
            head += len(staged)
            await trio.lowlevel.checkpoint()  # an agent yields between units, as netra's do

    async def flush() -> None:
        flushed = threading.Event()
        writer.submit([], [], flushed.set)
        await trio.to_thread.run_sync(flushed.wait)  # every row written

    return await _trio_design("unsafe", w, agent, progress, flush)


def run_unsafe(w: Workload, db: str, progress: Progress) -> Row:
    """The unsafe design, one measurement."""
    create_schema(db)
    writer = SqliteWriter(db)
    try:
        row: Row = trio.run(_unsafe_main, w, writer, progress)
    finally:
        writer.close()
    rows, _thinking = count_rows(db)
    if rows != row["events"] or writer.events != row["events"]:
        raise BenchError(
            f"unsafe design with {w.users} users: {rows} rows in the file of {row['events']}"
        )
    row["batches"] = writer.batches
    return row


# -- minimal safe: commit, then send (peer_baseline.py) ---------------------------------------


async def _minimal_main(w: Workload, db: str, progress: Progress) -> Row:
    writer = SqliteWriter(db, trio.lowlevel.current_trio_token())
    try:

        async def agent(script: Script, tx: trio.MemorySendChannel[list[dict[str, Any]]]) -> None:
            created = time.time()
            head = 0
            for staged, state in script.units:
                now = time.time()
                committed = trio.Event()
                writer.submit(
                    script.rows(head, staged, state, now),
                    [script.run_row(state, now, created)],
                    committed.set,
                )
                await committed.wait()  # commit before send
                # Never full: every unit is committed before it is sent, one unit in flight.
                tx.send_nowait(script.deliverable(head, staged, now))
                head += len(staged)
                await trio.lowlevel.checkpoint()  # as peer_baseline.py's tasks do

        row = await _trio_design("minimal safe", w, agent, progress)
    finally:
        writer.close()  # nothing is queued any more: every unit was committed before its send
    if writer.events != row["events"]:
        raise BenchError(
            f"minimal safe design with {w.users} users: committed {writer.events} of "
            f"{row['events']}"
        )
    row["batches"] = writer.batches
    return row


def run_minimal(w: Workload, db: str, progress: Progress) -> Row:
    """The minimal safe design, one measurement."""
    create_schema(db)
    row: Row = trio.run(_minimal_main, w, db, progress)
    rows, _thinking = count_rows(db)
    if rows != row["events"]:
        raise BenchError(
            f"minimal safe design with {w.users} users: {rows} rows in the file of {row['events']}"
        )
    return row


# -- the scenario -----------------------------------------------------------------------------


def run_once(w: Workload, progress: Progress, directory: str | None) -> Row:
    """Every design back to back on fresh files; ratios within this repeat."""
    netra = run_emitter(w, progress, directory)
    with runtime_gc_threshold(), scratch_dir(directory) as tmp:
        pyk = run_pykka(w, os.path.join(tmp, "pykka.db"), progress)
        pyk_store = run_pykka_store(w, os.path.join(tmp, "pykka_store.db"), progress)
        unsafe = run_unsafe(w, os.path.join(tmp, "unsafe.db"), progress)
        minimal = run_minimal(w, os.path.join(tmp, "minimal.db"), progress)
    done = (pyk["events"], pyk_store["events"], unsafe["events"], minimal["events"])
    if any(n != netra["committed"] for n in done):
        raise BenchError(
            f"the designs did not do the same work: netra {netra['committed']}, pykka "
            f"{pyk['events']}, pykka+store {pyk_store['events']}, unsafe {unsafe['events']}, "
            f"minimal safe {minimal['events']} events"
        )
    ours = netra["events_per_s"]
    pyk_rate = rate(pyk["events"], pyk["seconds"])
    pyk_store_rate = rate(pyk_store["events"], pyk_store["seconds"])
    unsafe_rate = rate(unsafe["events"], unsafe["seconds"])
    minimal_rate = rate(minimal["events"], minimal["seconds"])
    return {
        "users": w.users,
        "events_per_user": w.events,
        "events": netra["committed"],
        "netra_events_per_s": ours,
        "netra_cpu_us_per_event": netra["cpu_us_per_event"],
        "pykka_events_per_s": pyk_rate,
        "pykka_store_events_per_s": pyk_store_rate,
        "unsafe_events_per_s": unsafe_rate,
        "minimal_events_per_s": minimal_rate,
        "vs_pykka": ours / pyk_rate if pyk_rate else 0.0,
        "vs_pykka_store": ours / pyk_store_rate if pyk_store_rate else 0.0,
        "vs_unsafe": ours / unsafe_rate if unsafe_rate else 0.0,
        "vs_minimal": ours / minimal_rate if minimal_rate else 0.0,
        "verified": True,
    }


COLUMNS = [
    Column(key="users", title="users"),
    Column(key="events", title="events"),
    Column(key="netra_events_per_s", title="netra events/s"),
    Column(key="netra_cpu_us_per_event", title="netra CPU us/event", fmt="{:,.1f}"),
    Column(key="pykka_events_per_s", title="pykka events/s"),
    Column(key="pykka_store_events_per_s", title="pykka+netra store events/s"),
    Column(key="unsafe_events_per_s", title="unsafe events/s"),
    Column(key="minimal_events_per_s", title="minimal safe events/s"),
    Column(key="vs_pykka", title="netra / pykka", fmt="{:.2f}"),
    Column(key="vs_pykka_store", title="netra / pykka+store", fmt="{:.2f}"),
    Column(key="vs_unsafe", title="netra / unsafe", fmt="{:.2f}"),
    Column(key="vs_minimal", title="netra / minimal safe", fmt="{:.2f}"),
    Column(key="verified", title="verified"),
]


def run(options: Options, progress: Progress) -> Report:
    """The scenario for every N in ``--users`` (default 100 and 1,000)."""
    runs = measure_repeats(
        options,
        progress,
        workloads(options, [100, 1000], [100]),
        lambda w: run_once(w, progress, options.directory),
        label=lambda w: f"{w.users} users x {w.events} events",
    )
    report = Report.of(TITLE, options, COLUMNS, runs, "users")
    at_1000 = next((r for r in report.rows if r["users"] == 1000), None)
    report.goals = [
        Goal.at_least(
            f">= {target:g}x the {design} design at 1,000 users",
            at_1000[key] if at_1000 else None,
            target,
            "x",
        )
        for design, key, target in (
            ("pykka", "vs_pykka", GOAL_VS_PYKKA),
            ("unsafe", "vs_unsafe", GOAL_VS_UNSAFE),
            ("minimal safe", "vs_minimal", GOAL_VS_MINIMAL),
        )
    ]
    report.notes = [
        "ratios: median over the repeats of the ratio measured within each repeat",
        "pykka: one ThreadingActor per user, agent loop in its thread, group-commit writer "
        "thread (sqlite3 executemany), one subscriber actor for all users",
        "unsafe: trio tasks deliver first and queue the write without waiting; timed until "
        "every event is delivered and every row committed",
        "minimal safe: peer_baseline.py's design on this workload: a trio task per user, "
        "the same group-commit writer thread waking a batch's tasks with one run_sync_soon, "
        "commit before send, a subscriber task per user",
        "the peers run with the collector thresholds the runtime sets "
        "(RuntimeConfig.gc_threshold), so that no ratio is a collector setting",
    ]
    return report
