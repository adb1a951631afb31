"""The chaos run: servers on one database lose their processes while runs and questions are live.

:func:`run_chaos` starts ``nodes`` servers (:class:`~.durable_cluster.Node`) on one fresh store,
gives every user two sockets on random servers, and for ``seconds`` does three things at once:

* **faults**, one at a time, every ``interval`` seconds (± half): a random server is killed
  (``kill -9``, started again ``down`` seconds later), paused past the lease TTL (SIGSTOP, SIGCONT
  after TTL + 1.5 s) or restarted (SIGTERM: the drain, then started again);
* **work**: each user sends its share of ``runs`` ``durable_steps`` runs (``steps`` tool steps,
  each appending to the side-effect log) and ``asks`` ``durable_ask`` runs, as ``say`` commands
  whose text holds a unique tag, spread evenly over the first 80% of the faults, at most ``live``
  unfinished at a time, through a random socket;
* **answers**: when a socket shows a question (``input_requested``) with no answer committed yet,
  the user answers it (``send_input``) through a random socket.

A socket that closes reconnects to a random running server with ``resume_from`` its last ``seq``
(each socket's record must stay gapless and duplicate-free). A command whose answer is lost is
sent again only if, ``2 x TTL + 3`` seconds later and with the user's sockets caught up, the
store shows it did not commit (a command forwarded by a server that died may still commit late).

Then the faults stop, every server runs, every run ends (bounded), every socket catches up, the
servers stop, and :func:`~.chaos_check.check` compares the store, the sockets and the log.
``websockets`` (a dev-only package) is imported when the run starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .chaos_check import Request, SocketRecord, Verdict, check, read_effects
from .durable_cluster import SECRET, Node, StoreReader

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

FINAL = frozenset({"completed", "failed", "timeout", "dead", "cancelled"})


@attrs.frozen(kw_only=True)
class ChaosPlan:
    """What one chaos run does."""

    nodes: int = 3
    seconds: float = 60.0
    """How long faults go on."""
    users: int = 10
    runs: int = 40
    asks: int = 10
    steps: int = 8
    pause: float = 0.2
    """Seconds each tool step takes (half before its effect, half after)."""
    live: int = 3
    """Unfinished runs per user at most."""
    ttl: float = 2.0
    interval: float = 4.0
    """Mean seconds between two faults."""
    down: float = 1.0
    """Seconds a killed server stays down."""
    faults: tuple[str, ...] = ("kill", "pause", "restart")
    settle: float = 90.0
    """Seconds the runs get to end once the faults stopped."""
    seed: int = 0


@attrs.define
class ChaosResult:
    plan: ChaosPlan
    verdict: Verdict
    faults: Counter[str]
    seconds: float
    """Wall time of the whole run (faults, settling, checking)."""
    settle_seconds: float
    """From the last fault's end to every run ended and every socket caught up."""
    resent: int
    restart_seconds: list[float]


class Sock:
    """One socket of a user: reconnects to a random running server, resuming from its last seq."""

    def __init__(self, name: str, user: str, token: str) -> None:
        self.name = name
        self.user = user
        self.token = token
        self.last = 0
        self.events: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.ws: ClientConnection | None = None
        self.connects = 0
        self.head_at_connect = 0
        self.answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.changed = asyncio.Event()
        self._ids = 0

    @property
    def open(self) -> bool:
        return self.ws is not None

    async def keep_connected(
        self, nodes: list[Node], rng: random.Random, stop: asyncio.Event
    ) -> None:
        """Connect, read until closed, reconnect; until ``stop``."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, WebSocketException

        while not stop.is_set():
            up = [n for n in nodes if n.up]
            if not up:
                await asyncio.sleep(0.1)
                continue
            node = rng.choice(up)
            try:
                ws = await connect(node.url, open_timeout=5, close_timeout=1, max_queue=None)
            except (OSError, WebSocketException, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            try:
                hello = {"type": "hello", "protocol": 1, "token": self.token}
                await ws.send(json.dumps({**hello, "resume_from": self.last}))
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if welcome.get("type") != "welcome":
                    raise ConnectionError(str(welcome))
                self.ws = ws
                self.connects += 1
                self.head_at_connect = int(welcome["head_seq"])
                async for raw in ws:
                    self._take(json.loads(raw))
            except (OSError, WebSocketException, ConnectionClosed, TimeoutError, ConnectionError):
                pass
            finally:
                self.ws = None
                ws.transport.abort()
                for fut in self.answers.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("closed"))
                        fut.exception()
                self.answers.clear()
                self._wake()
            await asyncio.sleep(0.05)

    def _take(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("event", "batch"):
            for e in [frame] if kind == "event" else frame["events"]:
                if e["seq"] != self.last + 1:
                    self.violations.append(f"seq {e['seq']} after {self.last}")
                    continue
                self.last = e["seq"]
                self.events.append({k: e[k] for k in ("seq", "run_id", "event", "ts", "data")})
            self._wake()
            return
        fut = self.answers.pop(frame.get("id", ""), None)
        if fut is not None and not fut.done():
            fut.set_result(frame)

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def command(self, frame: dict[str, Any], within: float = 10.0) -> dict[str, Any]:
        ws = self.ws
        if ws is None:
            raise ConnectionError("not connected")
        self._ids += 1
        cid = f"{self.name}-{self._ids}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.answers[cid] = fut
        try:
            await ws.send(json.dumps({**frame, "id": cid}))
            async with asyncio.timeout(within):
                return await fut
        except Exception as exc:
            self.answers.pop(cid, None)
            raise ConnectionError(str(exc)) from exc

    def record(self) -> SocketRecord:
        return SocketRecord(
            name=self.name, user=self.user, base=0, events=self.events, violations=self.violations
        )


class User:
    """One user: two sockets, its requests, and what its sockets show of its runs."""

    def __init__(self, name: str, socks: list[Sock], requests: list[Request]) -> None:
        self.name = name
        self.socks = socks
        self.requests = requests
        self.resent = 0

    def best(self) -> Sock:
        """The socket that holds the most."""
        return max(self.socks, key=lambda s: s.last)

    def run_of(self, tag: str) -> str | None:
        for e in self.best().events:
            if e["event"] == "message" and e["data"].get("role") == "user":
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    if json.loads(e["data"]["text"]).get("tag") == tag:
                        return str(e["run_id"])
        return None

    def states(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in self.best().events:
            if e["event"] == "run_state":
                out[e["run_id"]] = e["data"]["state"]
        return out

    def unanswered(self) -> list[str]:
        """Runs with a committed question and no committed answer."""
        asked, answered = set(), set()
        for e in self.best().events:
            if e["event"] == "input_requested":
                asked.add(e["run_id"])
            elif e["event"] == "run_input":
                answered.add(e["run_id"])
        states = self.states()
        return [r for r in asked - answered if states.get(r) not in FINAL]

    async def send(self, rng: random.Random, frame: dict[str, Any], done: Any, ttl: float) -> None:
        """Send ``frame`` through a random open socket until ``done()`` says it committed."""
        while not done():
            open_socks = [s for s in self.socks if s.open]
            if not open_socks:
                await asyncio.sleep(0.1)
                continue
            try:
                answer = await rng.choice(open_socks).command(frame)
            except ConnectionError:
                answer = None
            if answer is not None and answer.get("type") == "ack":
                return
            if answer is not None and answer.get("code") == "illegal_state":
                return  # the run already ended
            # lost or refused: wait until a late commit would show, then look again
            await asyncio.sleep(2 * ttl + 3)
            await self.caught_up(within=30)
            if not done():
                self.resent += 1

    async def caught_up(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            socks = [s for s in self.socks if s.open]
            if socks and all(s.last >= s.head_at_connect for s in socks):
                return
            await asyncio.sleep(0.1)

    async def work(self, rng: random.Random, plan: ChaosPlan) -> None:
        """Send every request, at most ``plan.live`` unfinished at once."""
        pending = list(self.requests)
        sent: list[str] = []
        gap = plan.seconds * 0.8 / max(1, len(pending))  # spread over the faults
        next_at = time.monotonic() + rng.uniform(0, gap)
        while pending:
            if time.monotonic() < next_at:
                await asyncio.sleep(next_at - time.monotonic())
            states = self.states()
            unfinished = [t for t in sent if states.get(self.run_of(t) or "") not in FINAL]
            if len(unfinished) >= plan.live:
                await asyncio.sleep(0.2)
                continue
            req = pending.pop(0)
            text = json.dumps({"tag": req.tag, "steps": plan.steps, "pause": plan.pause})
            frame = {"type": "say", "text": text, "agent": req.agent}
            await self.send(rng, frame, lambda t=req.tag: self.run_of(t) is not None, plan.ttl)
            sent.append(req.tag)
            next_at += gap

    async def answer(self, rng: random.Random, plan: ChaosPlan, stop: asyncio.Event) -> None:
        """Answer each question once it shows."""
        while not stop.is_set():
            for run_id in self.unanswered():
                frame = {"type": "send_input", "run_id": run_id, "input": {"text": f"a-{run_id}"}}
                await self.send(rng, frame, lambda r=run_id: r not in self.unanswered(), plan.ttl)
            await asyncio.sleep(0.2)

    def all_ended(self) -> bool:
        states = self.states()
        for req in self.requests:
            run_id = self.run_of(req.tag)
            if run_id is None or states.get(run_id) not in FINAL:
                return False
        return True


async def _faults(
    nodes: list[Node], plan: ChaosPlan, rng: random.Random, until: float, counts: Counter[str]
) -> None:
    """One fault at a time until ``until`` (monotonic); every node runs again at the end."""
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(plan.interval / 2, plan.interval * 1.5))
        if time.monotonic() >= until:
            break
        node = rng.choice(nodes)
        kind = rng.choice(plan.faults)
        counts[kind] += 1
        if kind == "kill":
            await asyncio.to_thread(node.kill)
            await asyncio.sleep(plan.down)
            await asyncio.to_thread(node.start)
        elif kind == "pause":
            node.pause()
            await asyncio.sleep(plan.ttl + 1.5)
            node.resume()
        else:
            await asyncio.to_thread(node.terminate)
            await asyncio.to_thread(node.start)


async def run_chaos(
    plan: ChaosPlan, store: StoreReader, directory: Path, progress: Any = None
) -> ChaosResult:
    """One chaos run on ``store`` (fresh), its files in ``directory``; checked."""
    from netra_actors.gateway import mint_token

    started = time.monotonic()
    rng = random.Random(plan.seed)
    effects = directory / "effects.log"
    effects.touch()
    nodes = [
        Node(directory, store, "abcdefgh"[i], ttl=plan.ttl, effects=effects)
        for i in range(plan.nodes)
    ]
    names = [f"chaos-{uuid.uuid4().hex[:8]}" for _ in range(plan.users)]
    requests = [
        Request(user=names[i % plan.users], tag=f"s{i}", agent="durable_steps", steps=plan.steps)
        for i in range(plan.runs)
    ] + [
        Request(user=names[i % plan.users], tag=f"a{i}", agent="durable_ask", steps=1, asks=1)
        for i in range(plan.asks)
    ]
    rng.shuffle(requests)
    users = []
    for name in names:
        tok = mint_token(SECRET.encode(), name, 24 * 3600.0, now=time.time())
        socks = [Sock(f"{name}/{k}", name, tok) for k in range(2)]
        users.append(User(name, socks, [r for r in requests if r.user == name]))
    counts: Counter[str] = Counter()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        nodes[0].start()  # the first one creates the schema
        await asyncio.gather(*(asyncio.to_thread(n.start) for n in nodes[1:]))
        for user in users:
            for sock in user.socks:
                tasks.append(asyncio.create_task(sock.keep_connected(nodes, rng, stop)))
            tasks.append(asyncio.create_task(user.answer(rng, plan, stop)))
        workers = [asyncio.create_task(u.work(rng, plan)) for u in users]
        await _faults(nodes, plan, rng, time.monotonic() + plan.seconds, counts)
        faults_over = time.monotonic()
        for node in nodes:  # every node runs again
            if node.paused:
                node.resume()
            if node.proc is None or node.proc.poll() is not None:
                await asyncio.to_thread(node.start)
        deadline = faults_over + plan.settle
        while time.monotonic() < deadline and not (
            all(w.done() for w in workers) and all(u.all_ended() for u in users)
        ):
            if progress is not None:
                progress.step(f"settling: {sum(u.all_ended() for u in users)}/{len(users)} users")
            await asyncio.sleep(1.0)
        for w in workers:
            w.cancel()
        heads = await store.heads()
        for sock in (s for u in users for s in u.socks):  # every socket catches up
            while sock.last < heads.get(sock.user, 0) and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sock.changed.wait(), 0.5)
        settled = time.monotonic() - faults_over
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(n.stop) for n in nodes))
    stored = await store.events()
    runs = await store.runs()
    verdict = check(
        stored,
        runs,
        [s.record() for u in users for s in u.socks],
        read_effects(effects.read_text().splitlines()),
        requests,
    )
    return ChaosResult(
        plan=plan,
        verdict=verdict,
        faults=counts,
        seconds=time.monotonic() - started,
        settle_seconds=settled,
        resent=sum(u.resent for u in users),
        restart_seconds=[t for n in nodes for t in n.starts],
    )
