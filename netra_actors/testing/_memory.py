"""An in-memory store with the real store's contract, for trio-only tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio
from sqlalchemy import Insert

from .._core import LIVE_STATES, RunState
from .._core._threads import title_of
from .._exceptions import StoreError
from .._histogram import Histogram
from .._store import HistoryPage, StoreStatistics, ThreadInfo, ThreadsPage, UserSnapshot
from .._store._base import ModelCall
from .._store._inspect import ClusterView, UserSummary
from .._store._schema import model_calls
from .._subscription import Subscription
from .._uow import Erasure, RunRow, UnitOfWork
from .._values import Event, RunInfo, loads

FailureHook = Callable[[str, UnitOfWork], BaseException | None]


class MemoryStore:
    """A :class:`~netra_actors.types.Store` in memory.

    ``fail_when(user_id, unit)`` may return an exception: that unit then fails as a database
    error would (nothing of it is kept). ``commit_delay`` (seconds on trio's clock) simulates a
    slow disk.
    """

    def __init__(self, *, fail_when: FailureHook | None = None, commit_delay: float = 0.0) -> None:
        self.events: dict[str, list[Event]] = {}
        self.runs: dict[tuple[str, str], RunRow] = {}
        self.message_id_rows: dict[tuple[str, str], str] = {}
        """``(user_id, message_id) -> thread`` of the client-chosen message ids."""
        self.rows: list[tuple[str, object, object]] = []
        """Developer rows/statements committed, as (user_id, target, params)."""
        self.fail_when = fail_when
        self.commit_delay = commit_delay
        self.commits = 0
        self.failures = 0
        self.closed = False

    async def load_user(self, user_id: str) -> UserSnapshot:
        await trio.lowlevel.checkpoint()
        live = [
            _info(row)
            for (uid, _), row in self.runs.items()
            if uid == user_id and RunState(row.state) in LIVE_STATES
        ]
        return UserSnapshot(head_seq=self._head(user_id), live_runs=tuple(live))

    def _head(self, user_id: str) -> int:
        evs = self.events.get(user_id)
        return evs[-1].seq if evs else 0

    async def commit(self, user_id: str, base_seq: int, unit: UnitOfWork) -> list[Event]:
        if self.closed:
            raise StoreError("the store is closed")
        with trio.CancelScope(shield=True):
            if self.commit_delay:
                await trio.sleep(self.commit_delay)
            else:
                await trio.lowlevel.checkpoint()
        error = self.fail_when(user_id, unit) if self.fail_when else None
        if error is not None:
            self.failures += 1
            raise StoreError(f"injected failure: {error}") from error
        if base_seq != self._head(user_id):
            self.failures += 1
            raise StoreError(f"seq conflict: base {base_seq}, head {self._head(user_id)}")
        taken = [m for m, _ in unit.message_ids if (user_id, m) in self.message_id_rows]
        if taken:
            self.failures += 1
            raise StoreError(f"message ids already used: {taken}")
        if unit.erase is not None:
            self._erase(user_id, unit.erase)
        now = time.time()
        out = []
        seq = base_seq
        thread_of, thread = unit.threads.get, unit.thread
        for ev in unit.events:
            seq += 1
            out.append(
                Event(
                    user_id,
                    seq,
                    ev.run_id,
                    ev.event,
                    now,
                    ev.data_json,
                    thread_of(ev.run_id, thread),
                )
            )
        self.events.setdefault(user_id, []).extend(out)
        for message_id, in_thread in unit.message_ids:
            self.message_id_rows[(user_id, message_id)] = in_thread
        for row in unit.runs.values():
            self.runs[(user_id, row.run_id)] = row
        self.rows.extend((user_id, s.target, s.params) for s in unit.statements)
        self.commits += 1
        return out

    def _erase(self, user_id: str, erasure: Erasure) -> None:
        """What the SQL stores do (``_store/_erase.py``): placeholders, or the user's rows gone."""
        thread = erasure.thread
        if thread is None:
            self.events.pop(user_id, None)
            for table in (self.runs, self.message_id_rows):
                for key in [k for k in table if k[0] == user_id]:
                    del table[key]
            return
        evs = self.events.get(user_id, [])
        left = len(evs) if erasure.limit is None else erasure.limit
        for i, e in enumerate(evs):
            if left and e.thread == thread and e.seq <= erasure.up_to_seq:
                evs[i] = Event(user_id, e.seq, None, "erased", e.ts, "{}", None)
                left -= 1
        if erasure.final:
            for key, row in list(self.runs.items()):
                if key[0] == user_id and row.thread == thread:
                    self.runs[key] = attrs.evolve(row, input_json=None, result_json=None)
            for key in [
                k for k, t in self.message_id_rows.items() if k[0] == user_id and t == thread
            ]:
                del self.message_id_rows[key]

    async def replay(self, user_id: str, after_seq: int, limit: int) -> list[Event]:
        await trio.lowlevel.checkpoint()
        evs = self.events.get(user_id, [])
        return [e for e in evs if e.seq > after_seq][:limit]

    async def first_event(self, user_id: str, run_id: str) -> Event | None:
        await trio.lowlevel.checkpoint()
        return next((e for e in self.events.get(user_id, []) if e.run_id == run_id), None)

    async def get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        await trio.lowlevel.checkpoint()
        row = self.runs.get((user_id, run_id))
        return _info(row) if row else None

    async def list_runs(self, user_id: str, limit: int) -> list[RunInfo]:
        await trio.lowlevel.checkpoint()
        rows = [r for (uid, _), r in self.runs.items() if uid == user_id]
        rows.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [_info(r) for r in rows[:limit]]

    async def history(
        self,
        user_id: str,
        *,
        thread: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
    ) -> HistoryPage:
        await trio.lowlevel.checkpoint()
        found = [
            e
            for e in self.events.get(user_id, [])
            if (thread is None or e.thread == thread)
            and (before_seq is None or e.seq < before_seq)
            and (kinds is None or e.event in kinds)
        ]
        return HistoryPage(events=tuple(found[-limit:]), more=len(found) > limit)

    async def threads(
        self, user_id: str, *, before: int | None = None, limit: int = 50
    ) -> ThreadsPage:
        await trio.lowlevel.checkpoint()
        summary: dict[str, list[Any]] = {}
        for e in self.events.get(user_id, []):
            if e.thread is None:
                continue
            row = summary.setdefault(e.thread, [None, e.ts, e.seq, e.ts])
            row[2], row[3] = e.seq, e.ts
            if row[0] is None and e.event == "message" and e.data.get("role") == "user":
                row[0] = title_of(str(e.data.get("text", "")))
        live: dict[str, int] = {}
        for (uid, _), run in self.runs.items():
            if uid == user_id and RunState(run.state) in LIVE_STATES:
                live[run.thread] = live.get(run.thread, 0) + 1
        rows = sorted(
            ((t, *row) for t, row in summary.items() if before is None or row[2] < before),
            key=lambda r: -r[3],
        )
        threads = tuple(
            ThreadInfo(
                thread=t,
                title=title,
                created_ts=created,
                last_seq=last_seq,
                last_ts=last_ts,
                live_runs=live.get(t, 0),
            )
            for t, title, created, last_seq, last_ts in rows[:limit]
        )
        more = len(rows) > limit
        return ThreadsPage(threads=threads, next=threads[-1].last_seq if more else None)

    async def stale_threads(self, before_ts: float, limit: int) -> list[tuple[str, str, int]]:
        """``(user_id, thread, last_seq)`` of threads idle since before ``before_ts``."""
        await trio.lowlevel.checkpoint()
        last: dict[tuple[str, str], Event] = {}
        for user_id, evs in self.events.items():
            for e in evs:
                if e.thread is not None:
                    last[(user_id, e.thread)] = e
        found = sorted((e.ts, u, t, e.seq) for (u, t), e in last.items() if e.ts < before_ts)
        return [(u, t, seq) for _, u, t, seq in found[:limit]]

    async def message_ids(self, user_id: str, ids: Sequence[str]) -> dict[str, str]:
        await trio.lowlevel.checkpoint()
        rows = self.message_id_rows
        return {m: rows[(user_id, m)] for m in ids if (user_id, m) in rows}

    async def run_history(self, user_id: str, run_id: str) -> tuple[list[Event], list[ModelCall]]:
        await trio.lowlevel.checkpoint()
        events = [e for e in self.events.get(user_id, []) if e.run_id == run_id]
        calls = []
        for uid, target, _params in self.rows:
            if uid == user_id and isinstance(target, Insert) and target.table is model_calls:
                values = target.compile().params
                if values["run_id"] == run_id and values["after_seq"] is not None:
                    calls.append(ModelCall(*(values[c] for c in ModelCall._fields)))
        return events, calls

    async def orphans(self, limit: int, lookahead: float) -> list[str]:
        """No leases in memory: every user whose runs need an owner (the runtime skips the
        active ones)."""
        await trio.lowlevel.checkpoint()
        due = time.time() + lookahead
        users = [
            uid
            for (uid, _), row in self.runs.items()
            if (row.wait is None and RunState(row.state) in LIVE_STATES)
            or (row.wake_at is not None and row.wake_at <= due)
        ]
        return list(dict.fromkeys(users))[:limit]

    async def check(self) -> None:
        await trio.lowlevel.checkpoint()

    # -- the inspector's reads (no leases in memory: one process, no cluster) -----------------

    async def admin_users(self, prefix: str, limit: int) -> list[UserSummary]:
        await trio.lowlevel.checkpoint()
        found: dict[str, list[RunRow]] = {}
        for (user_id, _), row in self.runs.items():
            if user_id.startswith(prefix):
                found.setdefault(user_id, []).append(row)
        out = [
            UserSummary(
                user_id=user_id,
                head_seq=self._head(user_id),
                runs=len(rows),
                live_runs=sum(RunState(r.state) in LIVE_STATES for r in rows),
                last_activity=max(r.updated_at for r in rows),
            )
            for user_id, rows in found.items()
        ]
        out.sort(key=lambda u: (-(u.last_activity or 0.0), u.user_id))
        return out[:limit]

    async def admin_cluster(self, limit: int) -> ClusterView:
        await trio.lowlevel.checkpoint()
        return ClusterView(now=time.time(), nodes=(), leases=())

    async def admin_run_events(self, user_id: str, run_id: str, limit: int) -> list[Event]:
        await trio.lowlevel.checkpoint()
        return [e for e in self.events.get(user_id, []) if e.run_id == run_id][:limit]

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            batches=self.commits + self.failures,
            units_committed=self.commits,
            units_failed=self.failures,
            events_committed=sum(len(v) for v in self.events.values()),
            isolated_retries=0,
            queued=0,
            last_commit_seconds=0.0,
            commit_seconds=Histogram().snapshot(),
        )

    async def aclose(self) -> None:
        self.closed = True


def _info(row: RunRow) -> RunInfo:
    return RunInfo(
        user_id=row.user_id,
        run_id=row.run_id,
        agent=row.agent,
        state=RunState(row.state),
        attempt=row.attempt,
        created_at=row.created_at,
        updated_at=row.updated_at,
        reason=row.reason,
        input=None if row.input_json is None else loads(row.input_json),
        result=None if row.result_json is None else loads(row.result_json),
        thread=row.thread,
        start_seq=row.start_seq,
        history_seq=row.history_seq,
        wait=row.wait,
        wake_at=row.wake_at,
    )


async def collect_until(
    subscription: Subscription, done: Callable[[list[Event]], bool]
) -> list[Event]:
    """Read events until ``done(events_so_far)`` is true. Wrap it in ``trio.fail_after``."""
    events: list[Event] = []
    while not done(events):
        events.extend(await subscription.receive_batch())
    return events
