"""A tour of the agent API, end to end on a SQLite file.

One agent, ``travel``, uses every part of the context: ``think``, a sync and an async tool call,
a custom event (``emit``), a ``checkpoint``, follow-up messages (``ctx.receive()``, fed by
``Runtime.send_to_run``), and ``stage`` with an ORM row of its own model and a Core insert. Its
first attempt crashes after staging the booking, so the tour also shows what a crash rolls back
and how the supervisor restarts the run.

Run it with ``python examples/agent_tour.py [--db PATH]``. ``docs/agents.md`` walks through it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time

import trio
from sqlalchemy import Column, Integer, String, Table, insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import netra_actors as na

USER = "tour-user"


# -- the developer's own tables: an ORM model and a Core table ------------------------------


class Base(DeclarativeBase):
    pass


class Booking(Base):
    """An ORM model of the application (not of netra_actors)."""

    __tablename__ = "tour_bookings"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int]
    city: Mapped[str] = mapped_column(String(100))
    nights: Mapped[int]


audit_log = Table(
    "tour_audit_log",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("note", String(200), nullable=False),
)


# -- tools: plain functions, sync or async --------------------------------------------------


def nightly_rate(city: str) -> int:
    """A sync tool. It runs on the event loop's thread, so it must be quick."""
    return {"Lisbon": 120, "Porto": 95}.get(city, 150)


def _availability_blocking(city: str, nights: int) -> dict[str, na.JSON]:
    time.sleep(0.05)  # stands in for a blocking SDK call
    return {"city": city, "nights": nights, "rooms_left": 3}


async def check_availability(city: str, nights: int) -> na.JSON:
    """An async tool. Blocking work goes to a worker thread, off the event loop."""
    return await trio.to_thread.run_sync(_availability_blocking, city, nights)


# -- the agent -------------------------------------------------------------------------------


class TravelAgent(na.Agent):
    """Quotes a trip, waits for the user's answer, books it."""

    name = "travel"
    restart_policy = na.policies.RestartPolicy(
        restart=na.policies.RestartType.TRANSIENT, max_restarts=2, window=60.0, backoff_initial=0.2
    )
    liveness = na.policies.LivenessPolicy(heartbeat_timeout=10.0, run_timeout=120.0)

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        city = str(input.get("city", "Lisbon"))
        nights = int(input.get("nights", 2))
        crash_attempts = int(input.get("crash_attempts", 0))

        await ctx.think(f"Attempt {ctx.attempt}: planning {nights} nights in {city}.")
        rate = await ctx.tool("nightly_rate", nightly_rate, city=city)
        rooms = await ctx.tool("check_availability", check_availability, city=city, nights=nights)
        total = rate * nights
        await ctx.emit("quote", {"city": city, "total": total, "rooms_left": rooms["rooms_left"]})
        await ctx.say(f"{nights} nights in {city} cost {total} EUR. Reply 'book' or 'cancel'.")
        await ctx.checkpoint()  # the quote is committed: the user sees it now

        answer = await ctx.receive()  # heartbeats while it waits
        if answer != "book":
            await ctx.say("Nothing booked.")
            return {"booked": False}

        await ctx.stage(
            Booking(
                user_id=ctx.user_id,
                run_id=ctx.run_id,
                attempt=ctx.attempt,
                city=city,
                nights=nights,
            )
        )
        await ctx.stage(insert(audit_log).values(user_id=ctx.user_id, note=f"booked {city}"))
        await ctx.say(f"Booked {nights} nights in {city}.")
        if ctx.attempt <= crash_attempts:  # a bug, a lost connection … after staging
            raise RuntimeError("simulated crash after staging the booking")
        return {"booked": True, "city": city, "total": total}  # commits with agent_completed


# -- running it ------------------------------------------------------------------------------


def describe(event: na.Event) -> str:
    d = event.data
    match event.event:
        case "run_state":
            reason = f" ({d['reason']})" if d.get("reason") else ""
            return f"run_state {d['previous']} -> {d['state']}{reason}"
        case "tool_executing":
            call = d["call_id"].removeprefix(event.run_id or "")
            return f"tool_executing {d['tool']} {d['args']} call_id=<run_id>{call}"
        case "tool_completed":
            return f"tool_completed {d['tool']} -> {d.get('result', d.get('error'))}"
        case "message":
            return f"message ({d['role']}) {d['text']}"
        case _:
            return f"{event.event} {dict(d)}"


async def tour(db_path: str) -> None:
    config = na.RuntimeConfig(database_url=na.sqlite_url(db_path))
    async with na.open_runtime(config, agents=[TravelAgent], metadata=[Base.metadata]) as runtime:
        async with await runtime.subscribe(USER) as events:
            run_id = await runtime.start_run(
                USER, "travel", {"city": "Lisbon", "nights": 3, "crash_attempts": 1}
            )
            print(f"started run {run_id}")
            async for event in events:
                print(f"  #{event.seq:<3} {describe(event)}")
                if event.event == "quote":  # the client answers every quote
                    await runtime.send_to_run(USER, run_id, "book")
                if event.event == "run_state" and na.RunState(event.data["state"]).is_terminal:
                    break
        info = await runtime.wait_run(USER, run_id)
        print(f"run ended {info.state.value} after {info.attempt} attempt(s): {info.result}")


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A tour of the netra_actors agent API.")
    parser.add_argument("--db", help="SQLite file (default: a fresh temporary file)")
    args = parser.parse_args(argv)
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="netra-tour-"), "tour.db")
    na.run(tour, db)
    with sqlite3.connect(db) as conn:  # the developer's rows, read after the runtime closed
        bookings = conn.execute("SELECT city, nights, attempt FROM tour_bookings").fetchall()
        notes = conn.execute("SELECT note FROM tour_audit_log").fetchall()
    print(f"tour_bookings rows (city, nights, attempt): {bookings}")
    print(f"tour_audit_log rows: {notes}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
