"""``cluster``: 1 / 2 / 3 ``netra-actors serve`` processes on one PostgreSQL database.

Every repeat uses a FRESH database, ``netra_bc_<random>`` on ``127.0.0.1:5432`` (user
``postgres``, trust; created with asyncpg, dropped afterwards); an unreachable server skips the
scenario with a message. Per node count, that many servers (``python -m benchmarks._cluster
server``: the CLI's own ``serve`` with one more agent, ``bench_e2e``; same ``--secret``,
``--lease-ttl 2``, ``--node-id nodeK``) and client processes (the ``websockets`` library).

Every user has one socket on every node. Each user's node-1 socket says ``hello`` first, so node 1
activates the user and takes its lease (the *owner*); the sockets on the other nodes then make
those nodes *followers*. Every ``hello`` has ``resume_from 0`` (the users are new): each socket
must receive the user's whole stream, which is checked against ``netra_events`` — same seqs, same
events, in order (0 lost, 0 duplicated, per socket). Runs are started through node 1's socket.

Phases, per node count:

* *max load*: one ``bench_e2e`` run per user, emitting as fast as it can (``every`` events per
  unit); committed events/s = events committed / (last end - first start); socket events/s = every
  socket's events together (each event reaches one socket per node).
* *half of max load*: runs paced to half of that committed rate (random start offsets); the
  cross-node delivery lag = receive time on a non-owner node's socket - the event's ``ts``
  (stamped on the owner when its unit was handed to the group commit; same machine's clock).

Then, at the largest node count:

* *takeover*: users owned by node 1 with paced live runs; ``kill -9`` of node 1; the time from the
  kill to the first event of the new owner's recovery (the run's ``run_rolled_back``) on a
  surviving socket, per user. Checked: every killed run was resumed (one rollback, ``lost``) and
  completed, and the surviving sockets' streams equal the store.

And in-process (``netra_actors.open_runtime`` on a fresh database, same ``lease_ttl``), because
the gateway path (a WebSocket handshake per user, clients on the same 2 cores) cannot offer
20,000 users/s:

* *bulk activation*: N concurrent first commands on fresh users through one runtime —
  ``subscribe`` (what a socket's ``hello`` does: activation, lease, user load, the socket
  mailbox); users/s, every user's lease held afterwards (checked with ``free_leases``). For where
  the time goes, also N fresh users by ``get_runs`` (activation + a read of the user's runs) and N
  leases alone (``store.acquire``, no supervisor);
* *idle*: statements the store runs (``store.statement_hook``) over a few seconds with n, then
  n + N, owned idle users (each with an open subscription): statements/s must not grow with the
  number of users.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

import trio

import netra_actors as na

from .harness import wsclient
from .harness.agents import BenchE2E, paced_input
from .harness.clients import ClientProcesses, deal, require_websockets, user_token
from .harness.emitter import TEXT
from .harness.inprocess import scratch_dir
from .harness.postgres import PgServer, PgUnavailable, scratch_database
from .harness.processes import ServerProcess, child_main, start_serve
from .harness.progress import Progress
from .harness.report import BenchError, Column, Goal, Options, Report, Row
from .harness.stats import percentile, rate, thin

if TYPE_CHECKING:  # websockets is a dev-only package: imported where a socket is opened
    from websockets.asyncio.client import ClientConnection

TITLE = "1 / 2 / 3 serve processes on one PostgreSQL database: delivery, takeover, activation"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
LEASE_TTL = 2.0
STREAM_TOKENS = 2
"""Provisional tokens each run streams per unit of work at half of max load."""


# -- the client --------------------------------------------------------------------------------


async def _open(spec: dict[str, Any]) -> ClientConnection:
    hello = {"token": spec["token"], "resume_from": 0, "features": ["deltas"]}
    ws, _welcome = await wsclient.say_hello(spec["url"], hello, open_timeout=120)
    return ws


class _Deltas:
    """One socket's provisional text, checked against the contract as it arrives: each delta at
    the offset where the socket's text of that message ends (in order, never past it), none
    after its committed ``message``, and the text a prefix of the committed one. The tokens
    carry the time they were written (``bench_e2e`` with ``stream``): their lag is measured."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.attempts: dict[str, tuple[str, int]] = {}
        """message id -> (run id, attempt) of its deltas."""
        self.closed: set[str] = set()
        self.count = 0
        self.tokens = 0
        self.bad = 0
        self.lags: list[float] = []

    def delta(self, now: float, msg: dict[str, Any], errors: list[str]) -> None:
        mid, text = msg["message_id"], msg["text"]
        have = self.texts.get(mid, "")
        self.count += 1
        if mid in self.closed or msg["offset"] != len(have):
            self.bad += 1
            errors.append(f"delta of {mid} at {msg['offset']}, the socket has {len(have)}")
            return
        self.texts[mid] = have + text
        self.attempts[mid] = (msg["run_id"], msg["attempt"])
        for token in text.split(";")[:-1]:
            self.tokens += 1
            self.lags.append(now - float(token))

    def rolled_back(self, run_id: str, data: dict[str, Any]) -> None:
        """The attempt's rollback retracts its open messages: no delta of them may follow."""
        for mid, attempt in list(self.attempts.items()):
            if attempt == (run_id, data.get("attempt")):
                self.closed.add(mid)
                self.texts.pop(mid, None)
                del self.attempts[mid]

    def committed(self, data: dict[str, Any], errors: list[str]) -> None:
        mid = data.get("message_id")
        if not isinstance(mid, str):
            return
        self.closed.add(mid)
        self.attempts.pop(mid, None)
        if not str(data.get("text", "")).startswith(self.texts.pop(mid, "")):
            self.bad += 1
            errors.append(f"the deltas of {mid} are not its committed text")


async def _events(
    ws: ClientConnection,
    errors: list[str],
    lags: list[float],
    marks: list[list[Any]],
    digest: Any,
    counts: list[int],
    deltas: _Deltas,
) -> bool:
    """Read events until the user's run ended (True) or the socket closed (False)."""
    expect = 1
    try:
        async for now, msg, events in wsclient.frames(ws):
            done = False
            if msg["type"] == "delta":
                deltas.delta(now, msg, errors)
                continue
            for ev in events:
                seq = ev["seq"]
                counts[0] += 1
                if seq < expect:
                    errors.append(f"duplicate seq {seq}")
                    continue
                if seq > expect:
                    errors.append(f"gap: seq {seq}, expected {expect}")
                expect = seq + 1
                counts[1] += 1
                name = ev["event"]
                digest.update(f"{seq}:{name};".encode())
                if name == "bench_tick":
                    lags.append(now - ev["ts"])
                elif name == "message":
                    deltas.committed(ev["data"], errors)
                elif name == "run_rolled_back" or name == "run_state":
                    if name == "run_rolled_back":
                        deltas.rolled_back(ev["run_id"], ev["data"])
                    marks.append([seq, name, now, ev["data"].get("state")])
                    if name == "run_state" and ev["data"]["state"] in wsclient.TERMINAL:
                        done = True
            if done:
                return True
    except wsclient.ServerError as exc:
        errors.append(str(exc))
    return False


async def _read(ws: ClientConnection, spec: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """Read one socket's stream until its user's run ended; what it got, summarized."""
    from websockets.exceptions import ConnectionClosed

    if spec["starts"]:
        await wsclient.start_run(ws, "bench_e2e", job["input"])
    digest = hashlib.sha1()
    counts = [0, 0]  # events received, distinct seqs
    errors: list[str] = []
    lags: list[float] = []
    marks: list[list[Any]] = []  # (seq, event, receive time) of rollbacks and end states
    closed = False
    deltas = _Deltas()
    try:
        done = await _events(ws, errors, lags, marks, digest, counts, deltas)
    except ConnectionClosed:
        done = False
    if done:
        await ws.close()
    else:
        closed = True
        if not job.get("tolerate_close"):
            errors.append(f"socket closed early: {ws.close_code} {ws.close_reason}")
    count, distinct = counts
    keep = max(1, wsclient.MAX_SAMPLES // max(1, job["sockets_total"]))
    lags = thin(lags, keep)
    return {
        "deltas": deltas.count,
        "tokens": deltas.tokens,
        "bad_deltas": deltas.bad,
        "delta_lags": thin(deltas.lags, keep),
        "user": spec["user"],
        "node": spec["node"],
        "count": count,
        "distinct": distinct,
        "digest": digest.hexdigest(),
        "errors": errors[:3],
        "lags": lags,
        "marks": marks,
        "closed": closed,
        "end": time.time(),
    }


async def _client_main() -> None:
    job = wsclient.read_job()
    specs = job["sockets"]
    job["sockets_total"] = len(specs)
    # The node-1 sockets first: node 1 activates the users and takes their leases.
    firsts = [s for s in specs if s["node"] == 0]
    rest = [s for s in specs if s["node"] != 0]
    sockets = await wsclient.open_all(firsts, _open)
    sockets += await wsclient.open_all(rest, _open)
    ordered = firsts + rest
    if not await wsclient.wait_for_go():
        return
    start = time.time()
    results = await asyncio.gather(
        *(_read(ws, spec, job) for ws, spec in zip(sockets, ordered, strict=True))
    )
    wsclient.print_result({"start": start, "sockets": results})


# -- the database --------------------------------------------------------------------------------


async def _db_streams(dsn: str, prefix: str) -> dict[str, tuple[int, str, list[Any]]]:
    """Per user whose id starts with ``prefix``: (events, digest of ``seq:event;``, runs)."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        rows = await conn.fetch(
            "SELECT user_id, seq, event FROM netra_events WHERE user_id LIKE $1 "
            "ORDER BY user_id, seq",
            prefix + "%",
        )
        runs = await conn.fetch(
            "SELECT user_id, state FROM netra_runs WHERE user_id LIKE $1", prefix + "%"
        )
    finally:
        await conn.close()
    out: dict[str, tuple[int, str, list[Any]]] = {}
    digests: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    for user, seq, event in rows:
        counts[user] += 1
        if seq != counts[user]:
            raise BenchError(f"the store's stream of {user} is not gapless at seq {seq}")
        digests.setdefault(user, hashlib.sha1()).update(f"{seq}:{event};".encode())
    states: dict[str, list[Any]] = {}
    for user, state in runs:
        states.setdefault(user, []).append(state)
    for user, d in digests.items():
        out[user] = (counts[user], d.hexdigest(), states.get(user, []))
    return out


# -- one cluster -------------------------------------------------------------------------------


class Cluster:
    """``nodes`` serve processes on the database ``url``."""

    def __init__(self, url: str, nodes: int, tmp: str) -> None:
        self.secret = secrets.token_urlsafe(24)
        self.servers: list[ServerProcess] = []
        self._logs: list[IO[str]] = []
        try:
            for k in range(nodes):
                log = open(os.path.join(tmp, f"node{k + 1}.log"), "w")  # noqa: SIM115
                self._logs.append(log)
                args = [
                    "--port=0",
                    f"--db={url}",
                    f"--secret={self.secret}",
                    f"--node-id=node{k + 1}",
                    f"--lease-ttl={LEASE_TTL:g}",
                    "--no-dev-tokens",
                    "--rate=1000",
                    "--burst=1000",
                    "--subscriber-buffer=100000",
                    "--shutdown-timeout=2",
                    "--log-level=warning",
                ]
                self.servers.append(start_serve("benchmarks._cluster", args, log))
        except BaseException:
            self.stop()
            raise

    def alive(self) -> list[ServerProcess]:
        return [s for s in self.servers if s.alive]

    def clients(
        self, users: list[str], run_input: dict[str, Any], clients: int, tolerate: bool
    ) -> ClientProcesses:
        """Client processes with one socket per user per node, connected (``ready``)."""
        jobs = [
            {
                "sockets": [
                    {
                        "url": server.url,
                        "token": user_token(self.secret, user),
                        "user": user,
                        "node": k,
                        "starts": k == 0,
                    }
                    for user in chunk
                    for k, server in enumerate(self.servers)
                ],
                "input": run_input,
                "tolerate_close": tolerate,
            }
            for chunk in deal(users, clients)
        ]
        fleet = ClientProcesses.of(
            "benchmarks._cluster", "client", jobs=jobs, what="a cluster client"
        )
        try:
            fleet.wait_ready()
        except BaseException:
            fleet.close()
            raise
        return fleet

    def stop(self) -> None:
        for server in self.servers:
            server.signal_stop()  # SIGTERM: drains
        for server in self.servers:
            server.wait_stopped(30)
        for log in self._logs:
            log.close()


def _verify(
    dsn: str, prefix: str, sockets: list[dict[str, Any]], skip_closed: bool
) -> tuple[dict[str, tuple[int, str, list[Any]]], int, int]:
    """Check every socket's stream against the store; (the store's streams, lost, duplicated)."""
    store = asyncio.run(_db_streams(dsn, prefix))
    lost = duplicated = 0
    problems: list[str] = []
    for s in sockets:
        if skip_closed and s["closed"]:
            continue
        count, digest, _states = store.get(s["user"], (0, "", []))
        lost += max(0, count - s["distinct"])
        duplicated += s["count"] - s["distinct"]
        if s["errors"]:
            problems.append(f"{s['user']}@node{s['node'] + 1}: {s['errors']}")
        elif s["distinct"] != count or s["digest"] != digest:
            problems.append(
                f"{s['user']}@node{s['node'] + 1}: {s['distinct']} events, store {count} "
                "(or a different stream)"
            )
    if problems:
        raise BenchError(f"cluster {prefix}: {len(problems)} socket(s) wrong: {problems[:3]}")
    return store, lost, duplicated


def _mean_ms(
    before: list[dict[str, float]], after: list[dict[str, float]], name: str
) -> float | None:
    """The mean of histogram ``name`` over a phase, summed over servers, in ms (None: empty)."""
    pairs = list(zip(before, after, strict=True))
    total = sum(a.get(name + "_sum", 0.0) - b.get(name + "_sum", 0.0) for b, a in pairs)
    count = sum(a.get(name + "_count", 0.0) - b.get(name + "_count", 0.0) for b, a in pairs)
    return total / count * 1000 if count > 0 else None


def load_phase(
    cluster: Cluster,
    dsn: str,
    prefix: str,
    users: int,
    run_input: dict[str, Any],
    clients: int,
) -> Row:
    """Max or paced load: ``users`` users, one socket per node each, one run each."""
    names = [f"{prefix}{i:05d}" for i in range(users)]
    with cluster.clients(names, run_input, clients, tolerate=False) as fleet:
        cpu0 = [s.cpu() for s in cluster.servers]
        m0 = [s.metrics() for s in cluster.servers]
        t0 = fleet.go()
        results = fleet.results(900)
        wall = time.time() - t0
        cpu = [s.cpu() - c for s, c in zip(cluster.servers, cpu0, strict=True)]
        m1 = [s.metrics() for s in cluster.servers]
    sockets = [s for r in results for s in r["sockets"]]
    store, lost, duplicated = _verify(dsn, prefix, sockets, skip_closed=False)
    committed = sum(c for c, _d, _s in store.values())
    not_completed = sum(1 for _c, _d, st in store.values() for x in st if x != "completed")
    if len(store) != users or not_completed:
        raise BenchError(f"cluster {prefix}: {len(store)} users in the store, {not_completed} bad")
    start = min(r["start"] for r in results)
    end = max(s["end"] for s in sockets)
    seconds = end - start
    cross = [x for s in sockets if s["node"] != 0 for x in s["lags"]]
    owner = [x for s in sockets if s["node"] == 0 for x in s["lags"]]
    cross_d = [x for s in sockets if s["node"] != 0 for x in s["delta_lags"]]
    owner_d = [x for s in sockets if s["node"] == 0 for x in s["delta_lags"]]
    streamed = "stream" in run_input

    def ms(values: list[float], q: float) -> float | None:
        return percentile(values, q) * 1000 if values else None

    owner_m, others_m = (m0[:1], m1[:1]), (m0[1:], m1[1:])
    return {
        # where the lag comes from (means over the phase, from the servers' /metrics)
        "owner_commit_mean_ms": _mean_ms(*owner_m, "netra_store_commit_seconds"),
        "owner_to_mailbox_mean_ms": _mean_ms(*owner_m, "netra_commit_to_mailbox_seconds"),
        "follower_handoff_mean_ms": _mean_ms(*others_m, "netra_cross_node_delivery_seconds"),
        "delta_p50_ms": ms(cross_d, 50) if streamed else None,
        "delta_p99_ms": ms(cross_d, 99) if streamed else None,
        "owner_delta_p50_ms": ms(owner_d, 50) if streamed else None,
        "owner_delta_p99_ms": ms(owner_d, 99) if streamed else None,
        "tokens_cross": sum(s["tokens"] for s in sockets if s["node"] != 0) if streamed else None,
        "tokens_owner": sum(s["tokens"] for s in sockets if s["node"] == 0) if streamed else None,
        "bad_deltas": sum(s["bad_deltas"] for s in sockets) if streamed else None,
        "nodes": len(cluster.servers),
        "users": users,
        "sockets": len(sockets),
        "committed": committed,
        "events_per_s": rate(committed, seconds),
        "socket_events_per_s": rate(sum(s["count"] for s in sockets), seconds),
        "lag_p50_ms": percentile(cross, 50) * 1000 if cross else None,
        "lag_p99_ms": percentile(cross, 99) * 1000 if cross else None,
        "owner_p50_ms": percentile(owner, 50) * 1000,
        "owner_p99_ms": percentile(owner, 99) * 1000,
        "owner_cpu": cpu[0] / wall if wall > 0 else 0.0,
        "others_cpu": sum(cpu[1:]) / wall if wall > 0 else 0.0,
        "lost": lost,
        "duplicated": duplicated,
        "verified": True,
    }


def takeover_phase(cluster: Cluster, dsn: str, prefix: str, users: int, clients: int) -> Row:
    """Users owned by node 1 with live paced runs; kill -9 of node 1; the takeover time.

    Runs are durable: the new owner resumes each killed run (one ``run_rolled_back`` ``lost``,
    then a new attempt that replays what was committed) and it completes. The runs last about
    10 s, so they are live at the kill and end after the takeover."""
    names = [f"{prefix}{i:05d}" for i in range(users)]
    run_input = {"events": 200, "every": 1, "interval": 0.05, "text": "x"}
    with cluster.clients(names, run_input, clients, tolerate=True) as fleet:
        fleet.go()
        time.sleep(1.5)  # the runs are live and streaming to every node
        owner = cluster.servers[0]
        killed_at = time.time()
        owner.kill()
        results = fleet.results(120)
    sockets = [s for r in results for s in r["sockets"]]
    survivors = [s for s in sockets if s["node"] != 0]
    store, lost, duplicated = _verify(dsn, prefix, survivors, skip_closed=False)
    times: list[float] = []
    for user in names:
        states = store.get(user, (0, "", []))[2]
        if states != ["completed"]:
            raise BenchError(f"cluster takeover: {user}'s run ended {states}, not completed")
        rollbacks = {
            (m[0], m[2])
            for s in survivors
            if s["user"] == user
            for m in s["marks"]
            if m[1] == "run_rolled_back"
        }
        seqs = {seq for seq, _t in rollbacks}
        if len(seqs) != 1:
            raise BenchError(f"cluster takeover: {user}: {len(seqs)} rollbacks, expected 1")
        times.append(min(t for _seq, t in rollbacks) - killed_at)
    metrics = [s.metrics() for s in cluster.alive()]
    fenced = sum(m.get("netra_fenced_units_total", 0.0) for m in metrics)
    taken = sum(m.get("netra_leases_taken_over_total", 0.0) for m in metrics)
    return {
        "nodes": len(cluster.servers),
        "users": users,
        "sockets": len(survivors),
        "takeover_p50_s": percentile(times, 50),
        "takeover_max_s": max(times),
        "takeover_minus_ttl_s": max(times) - LEASE_TTL,
        "leases_taken_over": int(taken),
        "fenced_units": int(fenced),
        "lost": lost,
        "duplicated": duplicated,
        "verified": True,
    }


# -- in process: bulk activation and idle statements -----------------------------------------------


async def _in_process(url: str, small: int, large: int, window: float) -> tuple[Row, Row, Any]:
    config = na.RuntimeConfig(
        database_url=url,
        lease_ttl=LEASE_TTL,
        idle_timeout=3600.0,
        max_sessions=small + 2 * large + 10,
        mailbox_size=64,
    )
    seen: Counter[str] = Counter()
    async with na.open_runtime(config) as runtime:
        store: Any = runtime.store
        await runtime.get_runs("warmup")  # connections, code paths

        async def activate(names: list[str], how: Any) -> float:
            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(how, name)
            return trio.current_time() - t0

        async def statements(users: int) -> Row:
            await trio.sleep(1.0)  # settle
            count = 0

            def hook(sql: str) -> None:
                nonlocal count
                count += 1
                seen[" ".join(sql.split())[:60]] += 1

            store.statement_hook = hook
            t0 = trio.current_time()
            await trio.sleep(window)
            elapsed = trio.current_time() - t0
            store.statement_hook = None
            return {"idle_users": users, "statements": count, "per_s": count / elapsed}

        subs: list[na.types.Subscription] = []

        async def subscribe(name: str) -> None:
            subs.append(await runtime.subscribe(name))

        await activate([f"idle-{i:06d}" for i in range(small)], subscribe)
        before = await statements(small)
        seen.clear()
        large_names = [f"bulk-{i:06d}" for i in range(large)]
        seconds = await activate(large_names, subscribe)
        # a lone node's claims do not wait for their lease writes: those ride the next group
        # transactions after activation (milliseconds); see them land before checking
        with trio.move_on_after(10):
            while len(store.held_leases()) < small + large + 1:  # noqa: ASYNC110 (polling)
                await trio.sleep(0.01)
        free = await store.free_leases(large_names)
        held = len(store.held_leases())
        active = runtime.statistics().active_sessions
        after = await statements(small + large)
        # Where the time goes: the same number of fresh users by get_runs, and leases alone.
        by_get_runs = await activate([f"cmd-{i:06d}" for i in range(large)], runtime.get_runs)
        by_lease = await activate([f"lease-{i:06d}" for i in range(large)], store.acquire)
        for sub in subs:
            sub.close()
    if free or held != small + large + 1 or active != small + large + 1:
        raise BenchError(
            f"bulk activation: {len(free)} users without a lease, {held} leases held, {active} "
            f"active, expected {small + large + 1}"
        )
    activation: Row = {
        "case": "bulk activation (in process)",
        "phase": "bulk activation",
        "nodes": 1,
        "users": large,
        "activation_s": seconds,
        "users_per_s": large / seconds,
        "get_runs_users_per_s": large / by_get_runs,
        "leases_alone_per_s": large / by_lease,
        "verified": True,
    }
    per_user = (after["per_s"] - before["per_s"]) / large
    idle: Row = {
        "case": "idle owned users (in process)",
        "phase": "idle",
        "nodes": 1,
        "users": small + large,
        "statements_small_per_s": before["per_s"],
        "small_users": small,
        "statements_per_s": after["per_s"],
        "statements_per_user_s": per_user,
        "verified": True,
    }
    return activation, idle, dict(seen)


# -- the scenario ------------------------------------------------------------------------------


def _sizes(options: Options) -> dict[str, Any]:
    users_opt: list[int] | None = options.extra.get("users")
    quick = options.quick
    return {
        "node_counts": [2] if quick else [1, 2, 3],
        "users": (users_opt or [10 if quick else 100])[0],
        "events": options.extra.get("events"),
        "every": options.extra.get("every") or 10,
        "half_seconds": 1.5 if quick else 5.0,
        "takeover_users": 5 if quick else 20,
        "small": 10,
        "large": 1_000 if quick else 10_000,
        "window": 2.0 if quick else 5.0,
    }


def run_once(
    server: PgServer, options: Options, progress: Progress, repeat: int
) -> tuple[list[Row], Any]:
    sizes = _sizes(options)
    clients = options.clients
    users: int = sizes["users"]
    every: int = sizes["every"]
    events: int = sizes["events"] or (max(50, 2_000 // users) if options.quick else 20_000 // users)
    events = max(every, events // every * every)
    rows: list[Row] = []
    with scratch_database(server, "netra_bc_") as name, scratch_dir(options.directory) as tmp:
        url, dsn = server.sa_url(name), server.dsn(name)
        counts = sizes["node_counts"]
        for n in counts:
            progress.step(f"cluster: {n} node(s), max load, {users} users, run {repeat}")
            cluster = Cluster(url, n, tmp)
            try:
                full = {"events": events, "every": every, "text": TEXT}
                row = load_phase(cluster, dsn, f"r{repeat}n{n}max-", users, full, clients)
                row.update(case=f"max load, {n} node(s)", phase="max load")
                rows.append(row)
                target = row["events_per_s"] / 2
                paced = paced_input(
                    target, users, every, sizes["half_seconds"], TEXT, stream=STREAM_TOKENS
                )
                progress.step(f"cluster: {n} node(s), half of max load ({target:,.0f} ev/s)")
                row = load_phase(cluster, dsn, f"r{repeat}n{n}half-", users, paced, clients)
                row.update(
                    case=f"half of max load, {n} node(s)",
                    phase="half of max load",
                    offered_per_s=target,
                )
                rows.append(row)
                if n == max(counts) and n >= 2:
                    progress.step(f"cluster: {n} nodes, kill -9 of node 1 (takeover)")
                    row = takeover_phase(
                        cluster, dsn, f"r{repeat}kill-", sizes["takeover_users"], clients
                    )
                    row.update(case=f"takeover after kill -9, {n} nodes", phase="takeover")
                    rows.append(row)
            finally:
                cluster.stop()
    progress.step(f"cluster: in process, bulk activation of {sizes['large']:,} users, idle")
    with scratch_database(server, "netra_bc_") as name:
        measured = na.run(
            _in_process, server.sa_url(name), sizes["small"], sizes["large"], sizes["window"]
        )
        if measured is None:
            raise BenchError("the in-process runtime returned nothing")
        activation, idle, seen = measured
    rows += [activation, idle]
    for row in rows:  # every column in every row ("-" where a phase does not measure it)
        for column in COLUMNS:
            row.setdefault(column.key, None)
    return rows, seen


COLUMNS = [
    Column(key="phase", title="phase"),
    Column(key="nodes", title="nodes"),
    Column(key="users", title="users"),
    Column(key="events_per_s", title="committed ev/s"),
    Column(key="socket_events_per_s", title="socket ev/s"),
    Column(key="lag_p50_ms", title="cross-node p50 ms", fmt="{:,.2f}"),
    Column(key="lag_p99_ms", title="p99 ms", fmt="{:,.2f}"),
    Column(key="owner_p99_ms", title="owner p99 ms", fmt="{:,.2f}"),
    Column(key="delta_p50_ms", title="delta p50 ms", fmt="{:,.2f}"),
    Column(key="delta_p99_ms", title="delta p99 ms", fmt="{:,.2f}"),
    Column(key="tokens_cross", title="tokens (non-owner)"),
    Column(key="bad_deltas", title="bad deltas"),
    Column(key="takeover_max_s", title="takeover s", fmt="{:,.2f}"),
    Column(key="users_per_s", title="users/s"),
    Column(key="statements_per_s", title="idle stmts/s", fmt="{:,.1f}"),
    Column(key="lost", title="lost"),
    Column(key="duplicated", title="dup"),
    Column(key="verified", title="verified"),
]


def _goals(rows: list[Row]) -> list[Goal]:
    half = [r for r in rows if r["phase"] == "half of max load" and r["lag_p50_ms"] is not None]
    top = max(half, key=lambda r: r["nodes"], default=None)
    at = f" ({top['nodes']} nodes)" if top else ""
    takeover = next((r for r in rows if r["phase"] == "takeover"), None)
    activation = next((r for r in rows if r["phase"] == "bulk activation"), None)
    idle = next((r for r in rows if r["phase"] == "idle"), None)
    checked = [r for r in rows if r.get("lost") is not None]
    faults = sum(r["lost"] + r["duplicated"] for r in checked) if checked else None
    return [
        Goal.at_most(
            f"cross-node delivery lag p50 <= 5 ms at half of max load{at}",
            top["lag_p50_ms"] if top else None,
            5,
            " ms",
        ),
        Goal.at_most(
            f"cross-node delivery lag p99 <= 50 ms at half of max load{at}",
            top["lag_p99_ms"] if top else None,
            50,
            " ms",
        ),
        Goal.at_most(
            f"deltas on a non-owner p99 <= 20 ms at half of max load{at}",
            top["delta_p99_ms"] if top else None,
            20,
            " ms",
        ),
        Goal.at_most(
            "0 deltas out of order, past the text or not the committed text (every socket); "
            "count <= 0",
            None if not half else sum(r["bad_deltas"] or 0 for r in half) + 0.0,
            0,
        ),
        Goal.at_most(
            f"takeover after kill -9 <= TTL + 1 s (TTL {LEASE_TTL:g} s; slowest user)",
            takeover["takeover_max_s"] if takeover else None,
            LEASE_TTL + 1,
            " s",
        ),
        Goal.at_least(
            "bulk activation with leases >= 20,000 users/s (in process, one node)",
            activation["users_per_s"] if activation else None,
            20_000,
            " users/s",
        ),
        Goal.at_most(
            "0 lost, 0 duplicated events on every socket (vs netra_events); count <= 0",
            None if faults is None else faults + 0.0,
            0,
        ),
        Goal.at_most(
            "idle owned users cost no per-user statements: extra statements/s per owned "
            "user <= 0.001 (i.e. < 1 per user per 1,000 s)",
            max(0.0, idle["statements_per_user_s"]) if idle else None,
            0.001,
            " stmts/s/user",
        ),
    ]


def run(options: Options, progress: Progress) -> Report:
    """The scenario."""
    require_websockets(options.scenario)
    try:
        server = PgServer.connect(options.extra.get("db") or PG_URL)
    except PgUnavailable as exc:
        why = f"{exc}; start PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth)"
        return Report.skip(TITLE, options, COLUMNS, _goals([]), why)
    runs: list[list[Row]] = []
    seen: Any = {}
    for i in range(options.repeat):
        rows, seen = run_once(server, options, progress, i + 1)
        runs.append(rows)
    report = Report.of(TITLE, options, COLUMNS, runs, "case")
    rows = report.rows
    report.goals = _goals(rows)
    sizes = _sizes(options)
    idle = next(r for r in rows if r["phase"] == "idle")
    activation_row = next(r for r in rows if r["phase"] == "bulk activation")
    top = ", ".join(f"{n}x {sql}" for sql, n in sorted(seen.items(), key=lambda x: -x[1])[:6])
    report.notes = [
        f"PostgreSQL {server.version} at {server.where()}; a fresh database netra_bc_<random> "
        "per repeat (and one for the in-process part), dropped afterwards",
        "servers: netra-actors serve (the CLI itself) with the bench_e2e agent, same --secret, "
        f"--lease-ttl {LEASE_TTL:g}, one process per node; clients: "
        f"{options.clients} processes (websockets), one socket per user per "
        "node; the owner (node 1) is the node whose socket said hello first",
        "the machine has 2 shared cores for every server, the clients and PostgreSQL: events/s "
        "per node count shows the overhead of more nodes (every event is read from the store "
        "by every follower node), not scaling",
        "cross-node lag = receive on a non-owner node's socket - the event's ts (owner's clock "
        "when the unit went to the group commit; same machine): includes the commit, NOTIFY, "
        "the follower's read of the store and the gateway; owner p99 = the same on node 1",
        "where the lag comes from (means over each phase, from the servers' /metrics, in the "
        "JSON): owner_commit_mean_ms = one group-commit transaction on node 1; "
        "owner_to_mailbox_mean_ms = ts -> the owner's hand-off to its socket mailboxes (queue + "
        "commit); follower_handoff_mean_ms = ts -> a follower's hand-off (+ NOTIFY, listener, "
        "the follower's read); the rest of a socket's lag is the gateway and the client",
        f"deltas (half of max load): each run streams one message, {STREAM_TOKENS} tokens per "
        "unit, each token its write time; delta lag = receive on a non-owner node's socket - "
        "that time (the owner's relay: NOTIFY netra_deltas, the listener, the follower, the "
        "gateway); every socket checks each delta's offset against the text it has and the "
        "committed message against its deltas (bad deltas)",
        "takeover = kill -9 of node 1 -> first run_rolled_back of the new owner on a surviving "
        "socket, slowest of the users (median in the JSON); the lease expires 2/3 TTL .. TTL "
        "after the kill (renewed every TTL/3), followers check expired leases every 0.5 s",
        "bulk activation and idle statements are measured in process "
        "(netra_actors.open_runtime on the PostgreSQL URL): a WebSocket handshake per user "
        "through one gateway cannot offer 20,000 users/s on this machine; first command = "
        "runtime.subscribe (a socket's hello)",
        f"bulk activation, where the time goes ({sizes['large']:,} fresh users each): "
        f"subscribe {activation_row['users_per_s']:,.0f} users/s, get_runs "
        f"{activation_row['get_runs_users_per_s']:,.0f} users/s, leases alone (store.acquire, "
        f"batched into group commits) {activation_row['leases_alone_per_s']:,.0f}/s",
        f"idle: statements counted with store.statement_hook over {sizes['window']:g} s, "
        f"{idle['statements_small_per_s']:.1f}/s with {idle['small_users']} owned idle users, "
        f"{idle['statements_per_s']:.1f}/s with {idle['users']:,}; last run's statements: "
        + (top or "none"),
        "verified: every socket's whole stream (resume_from 0) equals netra_events (seq and "
        "event, in order); every run completed (takeover: resumed after one rollback, lost)",
    ]
    return report


# -- entry points of the child processes ---------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``server SERVE-ARGS`` (netra-actors serve + bench_e2e) or ``client`` (job on stdin)."""
    return child_main("benchmarks._cluster", [BenchE2E], _client_main, argv)


if __name__ == "__main__":
    sys.exit(main())
