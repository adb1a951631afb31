"""Conversations as the runtime commits them, loaded fast: for the ``history`` and ``retention``
scenarios, which need a store holding a million events.

Sending a million events through ``say`` would take many minutes, so the load replays *one real
turn*: :func:`capture_turn` runs :class:`ChatBenchAgent` once in a real runtime (``say`` in a
thread, the agent answers with one assistant message) and keeps the events the runtime committed
and the run row it wrote. :func:`load` then writes turn after turn into a store through the
store's own group commit (``SqlStore.commit``), in large units of work: every turn has a fresh run
id and fresh message ids, its own texts, its run row (``completed``, with ``thread``,
``start_seq`` and ``history_seq`` at the offsets the real run had) and its events' thread; the
group commit itself writes the ``netra_threads`` summary rows (titles, last seq). The same schema,
indexes and rows as the runtime's, only in fewer, larger transactions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import trio

import netra_actors as na
from netra_actors._ids import new_message_id, new_run_id
from netra_actors._uow import RunRow, UnitOfWork
from netra_actors._values import dumps, loads
from netra_actors.testing import MemoryStore

from .report import BenchError

FILLER = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco "
    "laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in "
    "voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat "
    "cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum. "
)
USER_CHARS = 120
"""The length of a user message."""
REPLY_CHARS = 600
"""The length of an assistant message (a short chat answer)."""


def user_text(n: int, thread: str) -> str:
    """The user's message of turn ``n`` in ``thread``."""
    head = f"Question {n} in {thread}: "
    return head + FILLER[: USER_CHARS - len(head)]


def reply_to(text: str) -> str:
    """The assistant's answer to ``text``."""
    head = f"About '{text[:40]}': "
    return head + (FILLER * 2)[: REPLY_CHARS - len(head)]


class ChatBenchAgent(na.Agent):
    """Answers every message with one assistant message (:func:`reply_to`)."""

    name = "bench_chat"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        await ctx.say(reply_to(str(input)))
        return None


@attrs.frozen
class Turn:
    """One turn as the runtime committed it: its events and where its run row points."""

    events: tuple[tuple[str, dict[str, Any]], ...]
    """``(event, data)`` of every event of the turn, in order."""
    agent: str
    start_offset: int
    """The run row's ``start_seq`` minus the seq of the turn's first event."""
    history_offset: int

    def __len__(self) -> int:
        return len(self.events)


async def capture_turn() -> Turn:
    """One ``say`` through a real runtime (in memory): the events and run row it committed."""
    config = na.RuntimeConfig()
    text = user_text(0, "t")
    async with na.open_runtime(config, agents=[ChatBenchAgent], store=MemoryStore()) as rt:
        run_id = await rt.say("capture", text, thread="t")
        info = await rt.wait_run("capture", run_id)
        page = await rt.history("capture", thread="t", limit=500)
    events = page.events
    if info.state is not na.RunState.COMPLETED or not events or page.more:
        raise BenchError(f"the captured turn ended {info.state.value} with {len(events)} events")
    first = loads(events[0].data_json)
    if events[0].event != "message" or not isinstance(first, dict) or first.get("text") != text:
        raise BenchError(f"the captured turn does not start with the user message: {events[0]}")
    if info.start_seq is None or info.history_seq is None:
        raise BenchError("the captured run row has no start_seq/history_seq")
    kept: list[tuple[str, dict[str, Any]]] = []
    for ev in events:
        data = loads(ev.data_json)
        if not isinstance(data, dict):
            raise BenchError(f"an event's data is not an object: {ev}")
        kept.append((ev.event, data))
    return Turn(
        events=tuple(kept),
        agent=ChatBenchAgent.name,
        start_offset=info.start_seq - events[0].seq,
        history_offset=info.history_seq - events[0].seq,
    )


@attrs.frozen
class UserPlan:
    """A user to load: the thread of each of their turns, in order."""

    user_id: str
    threads: Sequence[str]


def spread(turns: int, threads: int, prefix: str = "t") -> list[str]:
    """``turns`` turns over ``threads`` threads, each thread one block of consecutive turns."""
    width = len(str(max(threads - 1, 0)))
    return [f"{prefix}{n * threads // turns:0{width}d}" for n in range(turns)]


def interleaved(turns: int, threads: int, long: str) -> list[str]:
    """Every other turn in the thread ``long``; the rest spread over ``threads - 1`` threads."""
    short = spread(turns // 2, max(threads - 1, 1))
    out: list[str] = []
    for n in range(turns):
        out.append(long if n % 2 == 0 or n // 2 >= len(short) else short[n // 2])
    return out


def units_of(turn: Turn, plan: UserPlan, per_unit: int) -> Iterator[UnitOfWork]:
    """The units of work that commit ``plan``'s turns, ``per_unit`` turns each."""
    threads, size = plan.threads, len(turn)
    for start in range(0, len(threads), per_unit):
        now = time.time()
        unit = UnitOfWork(plan.user_id)
        run_threads: dict[str | None, str] = {}
        for n in range(start, min(start + per_unit, len(threads))):
            thread = threads[n]
            first = n * size + 1  # the seq of the turn's first event: the user starts empty
            run_id = new_run_id()
            run_threads[run_id] = thread
            text = user_text(n, thread)
            for name, data in turn.events:
                if name == "message":
                    data = {**data, "text": text if data.get("role") == "user" else reply_to(text)}
                if "message_id" in data:
                    data = {**data, "message_id": new_message_id()}
                unit.emit_encoded(run_id, name, dumps(data))
            unit.put_run(
                RunRow(
                    user_id=plan.user_id,
                    run_id=run_id,
                    agent=turn.agent,
                    state="completed",
                    attempt=1,
                    input_json=dumps(text),
                    result_json="null",
                    reason=None,
                    created_at=now,
                    updated_at=now,
                    thread=thread,
                    start_seq=first + turn.start_offset,
                    history_seq=first + turn.history_offset,
                )
            )
        unit.threads = run_threads
        yield unit


@attrs.frozen
class Loaded:
    """What :func:`load` wrote."""

    events: int
    turns: int
    seconds: float
    heads: dict[str, int]
    """The last seq of every user."""


async def load(
    store: Any,
    turn: Turn,
    plans: Sequence[UserPlan],
    *,
    per_unit: int = 50,
    concurrency: int = 64,
    tick: Callable[[int], None] = lambda _done: None,
) -> Loaded:
    """Commit ``plans`` into ``store`` (a ``SqlStore``) through its group commit; ``tick`` gets
    the number of events written so far."""
    limiter = trio.CapacityLimiter(concurrency)
    heads: dict[str, int] = {}
    done = [0]

    async def one(plan: UserPlan) -> None:
        async with limiter:
            head = 0
            for unit in units_of(turn, plan, per_unit):
                events = await store.commit(plan.user_id, head, unit)
                if events[0].seq != head + 1 or len(events) != len(unit.events):
                    raise BenchError(f"{plan.user_id}: seq {events[0].seq} after head {head}")
                head = events[-1].seq
                done[0] += len(events)
                tick(done[0])
            heads[plan.user_id] = head

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for plan in plans:
            nursery.start_soon(one, plan)
    seconds = trio.current_time() - started
    turns = sum(len(p.threads) for p in plans)
    return Loaded(events=done[0], turns=turns, seconds=seconds, heads=heads)
