"""``stream``: provisional token deltas over real WebSockets, many users streaming at once.

Per repeat, one server process (``python -m benchmarks._stream server``: exactly ``netra-actors
serve`` — the CLI's own ``serve`` on a fresh SQLite file — with one more agent, ``bench_stream``)
and, per phase, fresh client processes (``python -m benchmarks._stream client``, the
``websockets`` library) that open one socket per user, say ``hello`` with ``"features":
["deltas"]``, then — all at once — start one ``bench_stream`` run each and read every frame until
that run's terminal ``run_state``.

``bench_stream`` streams ``messages`` assistant messages of ``per_message`` tokens each with
``async with ctx.message() as m: await m.write(token)``, one token every ``1 / rate`` seconds
(after a random offset within one interval, so that many users do not write in lockstep), and
commits each message once, when its block ends. Deltas carry only text, so each token *is* its
emit time: ``"t1733000000.123456 "`` (``time.time()`` when the agent wrote it). A client parses
every token of every delta (a socket that fell behind may get several tokens merged into one
delta): delta emit→client latency = receive time - that timestamp (same machine, wall clock).

Checked per phase (the scenario fails otherwise): every delta's ``offset`` continues its message
(no gap, no overlap); each message's concatenated deltas equal its committed ``message`` text; no
delta arrives after its message committed; every committed event was delivered (counted in the
server's SQLite file); exactly one ``message`` row per streamed message (commits are per message,
never per token); every run completed.

Phases: *latency* (100 users x 50 tokens/s) and *sustained* (1,000 users x 20 tokens/s). Achieved
tokens/s counts the tokens received inside the window in which every stream was live (from the
last socket's first token to the first socket's last token), so start-up and wind-down do not
dilute it; offered = users x rate.
"""

from __future__ import annotations

import math
import os
import random
import re
import secrets
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

import netra_actors as na

from .harness import wsclient
from .harness.clients import ClientProcesses, deal, require_websockets, user_token
from .harness.inprocess import scratch_dir, sqlite_counts
from .harness.processes import ServerProcess, child_main, start_serve
from .harness.progress import Progress
from .harness.report import BenchError, Column, Goal, Options, Report, Row
from .harness.stats import latency_ms, thin

if TYPE_CHECKING:  # websockets is a dev-only package: imported where a socket is opened
    from websockets.asyncio.client import ClientConnection

TITLE = "provisional token deltas over loopback WebSockets, many users streaming at once"
BIN = 0.1
"""Seconds per bin of token receive times (achieved tokens/s is counted in whole bins)."""
_STAMP = re.compile(r"t(\d+\.\d+) ")


# -- the agent ------------------------------------------------------------------------


class BenchStream(na.Agent):
    """Streams ``messages`` messages of ``per_message`` tokens at ``rate`` tokens/s.

    Every token is its emit time, ``"t%.6f "`` of ``time.time()``. Each message is committed once,
    when its ``ctx.message()`` block ends.
    """

    name = "bench_stream"

    async def run(self, ctx: na.AgentContext, input: na.JSON) -> na.JSON:
        messages: int = input["messages"]
        per_message: int = input["per_message"]
        interval = 1.0 / float(input["rate"])
        next_at = trio.current_time() + random.uniform(0, interval)
        for _ in range(messages):
            async with ctx.message() as m:
                for _ in range(per_message):
                    await trio.sleep_until(next_at)
                    next_at += interval
                    await m.write(f"t{time.time():.6f} ")
        return {"tokens": messages * per_message}


# -- the client --------------------------------------------------------------------------------


class _Result:
    def __init__(self) -> None:
        self.events = 0
        self.deltas = 0
        self.tokens = 0
        self.messages = 0
        self.message_tokens = 0
        self.completed = 0
        self.latencies: list[float] = []
        self.bins: dict[int, int] = {}
        self.firsts: list[float] = []
        self.lasts: list[float] = []
        self.errors: list[str] = []
        self.start = 0.0
        self.end = 0.0


async def _open(url: str, token: str) -> ClientConnection:
    ws, welcome = await wsclient.say_hello(
        url, {"token": token, "features": ["deltas"]}, open_timeout=120
    )
    if "deltas" not in welcome.get("features", ()):
        raise RuntimeError(f"expected a welcome with deltas, got {welcome}")
    return ws


async def _session(ws: ClientConnection, run_input: dict[str, Any], result: _Result) -> None:
    await wsclient.start_run(ws, "bench_stream", run_input)
    expect = 1
    texts: dict[str, list[str]] = {}
    lengths: dict[str, int] = {}
    committed: set[str] = set()
    latencies = result.latencies
    bins = result.bins
    first = last = 0.0
    try:
        async for now, msg, events in wsclient.frames(ws):
            if msg["type"] == "delta":
                mid = msg["message_id"]
                text = msg["text"]
                if mid in committed:
                    result.errors.append(f"a delta of {mid} after its commit")
                if msg["offset"] != lengths.get(mid, 0):
                    result.errors.append(
                        f"delta offset {msg['offset']}, expected {lengths.get(mid)}"
                    )
                texts.setdefault(mid, []).append(text)
                lengths[mid] = lengths.get(mid, 0) + len(text)
                result.deltas += 1
                stamps = _STAMP.findall(text)
                result.tokens += len(stamps)
                for stamp in stamps:
                    latencies.append(now - float(stamp))
                b = int(now / BIN)
                bins[b] = bins.get(b, 0) + len(stamps)
                if not first:
                    first = now
                last = now
                continue
            if not events:
                continue
            done = False
            for ev in events:
                if ev["seq"] != expect:
                    result.errors.append(f"seq {ev['seq']}, expected {expect}")
                    expect = ev["seq"]
                expect += 1
                name = ev["event"]
                data = ev["data"]
                if name == "message" and data.get("role") == "assistant":
                    mid = data["message_id"]
                    committed.add(mid)
                    result.messages += 1
                    result.message_tokens += len(_STAMP.findall(data["text"]))
                    if "".join(texts.pop(mid, ())) != data["text"]:
                        result.errors.append(f"message {mid}: the deltas differ from the commit")
                elif name == "run_state" and data["state"] in wsclient.TERMINAL:
                    done = True
                    if data["state"] == "completed":
                        result.completed += 1
            result.events += len(events)
            if done:
                if texts:
                    result.errors.append(f"{len(texts)} streamed message(s) never committed")
                result.end = max(result.end, time.time())
                if first:
                    result.firsts.append(first)
                    result.lasts.append(last)
                await ws.close()
                return
    except wsclient.ServerError as exc:
        result.errors.append(str(exc))
        return
    result.errors.append(f"socket closed early: {ws.close_code} {ws.close_reason}")


async def _client_main() -> None:
    result = _Result()
    ran = await wsclient.run_job(_open, lambda ws, run_input: _session(ws, run_input, result))
    if ran is None:
        return
    result.start, _sockets = ran
    out = {
        k: getattr(result, k)
        for k in ("events", "deltas", "tokens", "messages", "message_tokens", "completed")
    }
    out.update(
        errors=result.errors[:5],
        error_count=len(result.errors),
        start=result.start,
        end=result.end,
        firsts=result.firsts,
        lasts=result.lasts,
        bins=result.bins,
        latencies=thin(result.latencies, wsclient.MAX_SAMPLES),
    )
    wsclient.print_result(out)


# -- the scenario ------------------------------------------------------------------------------


def _counts(db: str, prefix: str) -> tuple[int, int]:
    """(events, ``message`` events) committed for the users whose id starts with ``prefix``."""
    events, messages = sqlite_counts(
        db,
        "SELECT COUNT(*), SUM(event = 'message') FROM netra_events WHERE user_id LIKE ?",
        prefix + "%",
    )
    return events, messages


def _achieved(results: list[dict[str, Any]]) -> tuple[float, float]:
    """(tokens/s received while every stream was live, that window's seconds)."""
    firsts = [t for r in results for t in r["firsts"]]
    lasts = [t for r in results for t in r["lasts"]]
    if not firsts:
        return 0.0, 0.0
    lo = math.ceil(max(firsts) / BIN)
    hi = math.floor(min(lasts) / BIN)
    if hi <= lo:
        return 0.0, 0.0
    total = 0
    for r in results:
        for k, n in r["bins"].items():
            if lo <= int(k) < hi:
                total += n
    seconds = (hi - lo) * BIN
    return total / seconds, seconds


def run_phase(
    server: ServerProcess,
    db: str,
    secret: str,
    prefix: str,
    users: int,
    run_input: dict[str, Any],
    clients: int,
) -> Row:
    """One phase: ``users`` users, one socket and one streaming run each."""
    tokens = [user_token(secret, f"{prefix}{i:05d}") for i in range(users)]
    jobs = [
        {"url": server.url, "tokens": chunk, "input": run_input} for chunk in deal(tokens, clients)
    ]
    with ClientProcesses.of(
        "benchmarks._stream", "client", jobs=jobs, what="a stream client"
    ) as fleet:
        fleet.wait_ready()
        before = server.metrics()
        fleet.go()
        results = fleet.results(900)
        after = server.metrics()
    total = {k: sum(r[k] for r in results) for k in ("events", "deltas", "tokens", "messages")}
    errors = [e for r in results for e in r["errors"]]
    completed = sum(r["completed"] for r in results)
    committed, message_rows = _counts(db, prefix)
    streamed = users * run_input["messages"]
    emitted = streamed * run_input["per_message"]
    message_tokens = sum(r["message_tokens"] for r in results)
    problems = []
    if errors:
        problems.append(f"{sum(r['error_count'] for r in results)} errors: {errors[:3]}")
    if completed != users:
        problems.append(f"{completed} of {users} runs completed")
    if total["events"] != committed:
        problems.append(f"delivered {total['events']} events, committed {committed}")
    if message_rows != streamed or total["messages"] != streamed:
        problems.append(
            f"{message_rows} message rows / {total['messages']} messages received for {streamed}"
            " streamed messages"
        )
    if total["tokens"] != emitted or message_tokens != emitted:
        problems.append(
            f"tokens: {emitted} written, {total['tokens']} in deltas, {message_tokens} committed"
        )
    if problems:
        raise BenchError(f"stream {prefix}: " + "; ".join(problems) + server.log_tail()[-500:])
    latencies = [x for r in results for x in r["latencies"]]
    achieved, window = _achieved(results)
    offered = users * float(run_input["rate"])
    units = after.get("netra_store_units_committed_total", math.nan) - before.get(
        "netra_store_units_committed_total", math.nan
    )
    return {
        "users": users,
        "rate": run_input["rate"],
        "clients": len(jobs),
        "tokens": total["tokens"],
        "deltas": total["deltas"],
        "tokens_per_delta": total["tokens"] / total["deltas"] if total["deltas"] else 0.0,
        "messages": streamed,
        "message_rows": message_rows,
        "commits_per_message": message_rows / streamed,
        "units_per_message": units / streamed,
        "offered_per_s": offered,
        "achieved_per_s": achieved,
        "achieved_ratio": achieved / offered if offered else 0.0,
        "window_s": window,
        **latency_ms(latencies),
        "max_ms": max(latencies, default=math.nan) * 1000,
        "verified": True,
    }


PHASES = {
    # phase: (users, tokens/s per user, seconds, quick users, quick seconds)
    "latency": (100, 50, 10.0, 10, 1.5),
    "sustained": (1000, 20, 15.0, 50, 1.5),
}
PER_MESSAGE_SECONDS = 1.0
"""Each message streams for about this long (then it commits and the next one starts)."""


def phase_plan(options: Options) -> list[tuple[str, int, int, int, int]]:
    """(phase, users, rate, messages, tokens per message) of each phase."""
    users_opt: list[int] | None = options.extra.get("users")
    plan = []
    for i, (phase, (users, rate, seconds, q_users, q_seconds)) in enumerate(PHASES.items()):
        if options.quick:
            users, seconds = q_users, q_seconds
        if users_opt:
            users = users_opt[min(i, len(users_opt) - 1)]
        per_message = max(1, round(rate * PER_MESSAGE_SECONDS))
        messages = max(1, round(seconds / PER_MESSAGE_SECONDS))
        plan.append((phase, users, rate, messages, per_message))
    return plan


def run_once(options: Options, progress: Progress, repeat: int) -> list[Row]:
    rows: list[Row] = []
    with (
        scratch_dir(options.directory) as tmp,
        open(os.path.join(tmp, "server.log"), "w") as log,
    ):
        db = os.path.join(tmp, "stream.db")
        secret = secrets.token_urlsafe(24)
        args = [
            "--port=0",
            f"--db={db}",
            f"--secret={secret}",
            "--no-dev-tokens",
            "--rate=1000",
            "--burst=1000",
            "--subscriber-buffer=100000",
            "--log-level=warning",
        ]
        server = start_serve("benchmarks._stream", args, log)
        try:
            for phase, users, rate, messages, per_message in phase_plan(options):
                progress.step(
                    f"stream {phase}: {users} users x {rate} tokens/s, {messages} message(s) of "
                    f"{per_message} tokens, run {repeat}"
                )
                row = run_phase(
                    server,
                    db,
                    secret,
                    f"{phase}{repeat}-",
                    users,
                    {"messages": messages, "per_message": per_message, "rate": rate},
                    options.clients,
                )
                row["phase"] = phase
                row["case"] = f"{phase}: {users} users x {rate} tokens/s"
                rows.append(row)
        finally:
            server.stop()
    return rows


COLUMNS = [
    Column(key="phase", title="phase"),
    Column(key="users", title="users"),
    Column(key="rate", title="tokens/s/user"),
    Column(key="offered_per_s", title="offered tokens/s"),
    Column(key="achieved_per_s", title="achieved tokens/s"),
    Column(key="tokens_per_delta", title="tokens/delta", fmt="{:.2f}"),
    Column(key="p50_ms", title="delta p50 ms", fmt="{:,.2f}"),
    Column(key="p99_ms", title="p99 ms", fmt="{:,.2f}"),
    Column(key="commits_per_message", title="message rows/msg", fmt="{:.2f}"),
    Column(key="units_per_message", title="units/msg", fmt="{:.2f}"),
    Column(key="verified", title="verified"),
]


def run(options: Options, progress: Progress) -> Report:
    """The scenario."""
    require_websockets(options.scenario)
    runs = [run_once(options, progress, i + 1) for i in range(options.repeat)]
    report = Report.of(TITLE, options, COLUMNS, runs, "case")
    rows = report.rows
    latency = next((r for r in rows if r["phase"] == "latency"), None)
    sustained = next((r for r in rows if r["phase"] == "sustained"), None)
    lat_size = f"{latency['users']:,} users x {latency['rate']} tokens/s" if latency else "?"
    sus_size = f"{sustained['users']:,} users x {sustained['rate']} tokens/s" if sustained else "?"
    worst_commits = max((r["commits_per_message"] for r in rows), default=None)
    report.goals = [
        Goal.at_most(
            f"delta emit->client p50 <= 2 ms at {lat_size}",
            latency["p50_ms"] if latency else None,
            2,
            " ms",
        ),
        Goal.at_most(
            f"delta emit->client p99 <= 10 ms at {lat_size}",
            latency["p99_ms"] if latency else None,
            10,
            " ms",
        ),
        Goal.at_most(
            "commits <= 1 per message, not per token (message rows per streamed message)",
            worst_commits,
            1,
        ),
        Goal.at_least(
            f"sustained {sus_size}: achieved >= 0.95 x offered tokens/s"
            + (f" (its delta p99: {sustained['p99_ms']:,.1f} ms)" if sustained else ""),
            sustained["achieved_ratio"] if sustained else None,
            0.95,
        ),
    ]
    report.notes = [
        "server: netra-actors serve (the CLI itself, on a fresh SQLite file) in its own "
        "process with one more agent, bench_stream; clients: "
        f"{options.clients} processes with the websockets library, one "
        "socket (hello features [deltas]) and one run per user; clients and server share the "
        "machine's cores",
        "each token is its emit time ('t<time.time()> '), parsed by the client from the "
        "delta text: latency = receive - emit, per token, including merged deltas "
        "(tokens/delta > 1 means sockets fell behind and got deltas merged)",
        f"each message streams ~{PER_MESSAGE_SECONDS:g} s of tokens, then commits once; "
        "message rows/msg counts message rows in the store per streamed message (1 = one "
        "commit per message); units/msg = store units committed (/metrics, including each "
        "run's start and completion) per message",
        "achieved tokens/s: tokens received inside the window in which every stream was live "
        "(last first token .. first last token), whole 0.1 s bins; offered = users x rate",
        "verified per phase: delta offsets gapless, concatenated deltas == committed text, no "
        "delta after its commit, delivered events == committed events (SQLite file), every "
        "token written arrived in a delta and in the committed text",
    ]
    return report


# -- entry points of the child processes ---------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``server SERVE-ARGS`` (netra-actors serve + bench_stream) or ``client`` (job on stdin)."""
    return child_main("benchmarks._stream", [BenchStream], _client_main, argv)


if __name__ == "__main__":
    sys.exit(main())
