"""Issue 6, item 5: hostile and slow clients against a real server process.

The latency tests alternate *baseline* and *hostile* windows (two rounds each) while four
ordinary observer users ping every 20 ms and start demo runs; their round trips (asserted) and
commit→receive event lags (reported) are filed by window, and the hostile ping p99 must stay
within 2x the baseline p99 (or within baseline + 30 ms: a starvation guard; below that, a p99 on
this shared 2-core machine is scheduler noise — see ``relkit.LATENCY_FLOOR_S``). The hostile clients run in their own processes
(``relkit.py flood|stall|halfopen``), so that their CPU does not land in the observers' process.

* a socket that stops reading for a while (closed 4409 once its mailbox overflows, then resumes
  exactly) and one that never reads again (dropped at the send timeout); the server's RSS stays
  bounded;
* an inbound flood from a separate process (``rate_limited``, then 4429; other users unaffected);
* 500 connections that never finish the HTTP handshake — silent, half a request, or a request
  trickled a byte a second — all dropped at the request timeout (10 s), legitimate clients
  served meanwhile, file descriptors back to baseline;
* clients that vanish without closing (the upgrade and hello done, then silence): dropped by
  keepalive, open sockets, subscriptions and file descriptors back to baseline;
* regression tests of the two gateway fixes this suite made: a flooder told 4429 is not parsed
  for the whole close timeout, and reconnecting does not refill a user's rate limit.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from relkit import (
    HERE,
    REQUEST_TIMEOUT,
    Observers,
    Peer,
    RelServer,
    bounded,
    compare_with_store,
    latency_ok,
    new_user,
    peer_closed,
    raw_frame,
    raw_session,
    record_figures,
    server_released,
    serving,
    store_report,
)

from netra_actors.gateway._limits import RateLimit, UserLimits

ROUNDS = 2
WINDOW = 3.0
"""Two rounds of a baseline window and a hostile window each, alternating (so that drifts of the
machine's background load fall on both)."""


async def sample_rss(srv: RelServer, obs: Observers, out: dict[str, list[int]]) -> None:
    while True:
        out.setdefault(obs.phase, []).append(srv.rss_kb())
        await asyncio.sleep(0.2)


def latency_figures(obs: Observers) -> tuple[dict[str, Any], list[str]]:
    """The observers' figures, and what is out of bounds.

    Asserted: the ping round trip (hundreds of independent samples per window). Reported only:
    the commit→receive lag of their events — its samples come in bursts (a demo run commits a
    dozen events in a few units), so its p99 over a few seconds is one stall of the shared
    machine, and swings tenfold between runs without any hostile client.
    """
    summary = obs.summary()
    base, hostile = obs.rtt.get("baseline", []), obs.rtt.get("hostile", [])
    assert len(base) >= 100, len(base)
    assert len(hostile) >= 100, len(hostile)
    bad = []
    if not latency_ok(base, hostile):
        bad.append(f"rtt: {summary['rtt:baseline']} -> {summary['rtt:hostile']}")
    return summary, bad


# -- slow readers -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_slow_and_stopped_readers(tmp_path: Path) -> None:
    send_timeout, buffer = 3.0, 256
    figures: dict[str, Any] = {"send_timeout_s": send_timeout, "subscriber_buffer": buffer}
    with serving(
        tmp_path, "--subscriber-buffer", str(buffer), "--send-timeout", str(send_timeout)
    ) as srv:

        @bounded(140)
        async def scenario() -> list[Peer]:
            user = new_user("slowpoke")
            producer = Peer(srv.ws_url, user)
            await producer.connect()
            obs = Observers(srv.ws_url)
            await obs.start()
            rss: dict[str, list[int]] = {}
            sampler = asyncio.create_task(sample_rss(srv, obs, rss))
            producing = asyncio.Event()
            producing.set()

            async def produce() -> None:
                n = 0
                while producing.is_set():
                    n += 1
                    await producer.say(f"{n} " + "z" * 2_000)
                    await asyncio.sleep(0.05)

            prod = asyncio.create_task(produce())
            closes: list[int | None] = []
            drops: list[float] = []
            catch_up: list[Peer] = []
            got: list[int] = []
            try:
                await obs.window("warmup", 1.0)
                for _ in range(ROUNDS):
                    await obs.window("baseline", WINDOW)
                    reader, code, dropped = await slow_and_stopped(srv, user, producer, obs)
                    got.append(len(reader.events))
                    catch_up.append(reader)
                    closes.append(code)
                    drops.append(dropped)
            finally:
                producing.clear()
                await prod
                sampler.cancel()
            await obs.stop()
            # the slow socket's user resumes exactly where it stopped
            for reader in catch_up:
                await reader.connect()
                await reader.wait_seq(producer.last)
                await reader.close()
            await producer.close()
            summary, bad = latency_figures(obs)
            base_rss = max(rss.get("baseline", [0]))
            figures.update(
                slow_socket_close_codes=closes,
                slow_socket_events_before_close=got,
                never_reading_socket_released_after_s=[round(d, 2) for d in drops],
                events_produced=producer.last,
                rss_kb_max={k: max(v) for k, v in rss.items()},
                rss_growth_kb=max(rss.get("hostile", [0])) - base_rss,
                observers=summary,
                observer_failures=obs.failures,
                latency_out_of_bounds=bad,
            )
            record_figures(tmp_path, "hostile_slow_readers", figures)
            assert closes == [4409] * ROUNDS, closes
            assert all(d <= send_timeout + 8 for d in drops), drops
            assert not obs.failures
            assert figures["rss_growth_kb"] < 64 * 1024
            assert not bad, bad
            return [producer, *catch_up]

        peers = scenario()
        assert srv.terminate() == 0
    report = store_report(srv.db)
    problems = list(report.problems)
    for peer in peers:
        problems += compare_with_store(peer, report, exact=peer is peers[0])
    assert not problems, problems[:20]


async def slow_and_stopped(
    srv: RelServer, user: str, producer: Peer, obs: Observers
) -> tuple[Peer, int | None, float]:
    """One hostile window: a socket that stops reading for 1.5 s (then reads: 4409), and one
    that never reads again (released by the server at the send timeout) — both from their own
    process (``relkit.py stall``), so that their work does not slow the observers' process.
    Returns a peer holding what the slow socket received, its close code, and when the server
    released the other."""
    head = producer.last
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, str(HERE / "relkit.py"), "stall", str(srv.port), user, str(head), "1.5"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert ready.strip() == b"ready", ready
        await obs.window("hostile", WINDOW)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    result = json.loads(out)
    reader = Peer(srv.ws_url, user)  # what the slow socket got, to resume from
    reader.last = reader.base = head
    for event in result["events"]:
        reader._take(event, time.time())
    return reader, result["code"], result["released_after_s"]


# -- an inbound flood ---------------------------------------------------------------------------


FLOOD_RATE = 2_000
"""Messages per second per flooding socket: 40x the sustained limit of 50, from two sockets."""


def start_flooders(srv: RelServer, user: str, seconds: float, rate: float) -> list[Any]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "relkit.py"),
                "flood",
                str(srv.port),
                user,
                str(seconds),
                str(rate),
            ],
            stdout=subprocess.PIPE,
        )
        for _ in range(2)  # two sockets of the same user share its bucket
    ]


async def flood_window(
    srv: RelServer, obs: Observers, label: str, rate: float, cpu: dict[str, float]
) -> list[dict[str, Any]]:
    procs = start_flooders(srv, new_user("flood"), WINDOW + 1.0, rate)
    try:
        await asyncio.sleep(0.7)  # the flooders' interpreters start
        before = srv.cpu_seconds()
        await obs.window(label, WINDOW)
        cpu[label] = cpu.get(label, 0.0) + srv.cpu_seconds() - before
        out = []
        for proc in procs:
            stdout, _ = await asyncio.to_thread(proc.communicate, timeout=30)
            out.append(json.loads(stdout))
        return out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_inbound_flood(tmp_path: Path) -> None:
    figures: dict[str, Any] = {"rate_per_s": 50, "burst": 100, "flood_rate_per_socket": FLOOD_RATE}
    with serving(tmp_path, "--rate", "50", "--burst", "100") as srv:

        @bounded(110)
        async def scenario() -> None:
            obs = Observers(srv.ws_url)
            await obs.start()
            floods: list[dict[str, Any]] = []
            cpu: dict[str, float] = {}
            await obs.window("warmup", 1.0)
            for _ in range(ROUNDS):
                before = srv.cpu_seconds()
                await obs.window("baseline", WINDOW)
                cpu["baseline"] = cpu.get("baseline", 0.0) + srv.cpu_seconds() - before
                floods += await flood_window(srv, obs, "hostile", FLOOD_RATE, cpu)
            # and once at full speed (figures only: see docs/reliability.md, known limits)
            unbounded = await flood_window(srv, obs, "unbounded", 0, cpu)
            await obs.stop()
            summary, bad = latency_figures(obs)
            figures.update(
                floods=[
                    {k: v for k, v in f.items() if k != "closes"}
                    | {"closes": {str(c): f["closes"].count(c) for c in set(f["closes"])}}
                    for f in floods + unbounded
                ],
                server_cpu_share={
                    k: round(v / (WINDOW * (ROUNDS if k != "unbounded" else 1)), 2)
                    for k, v in cpu.items()
                },
                observers=summary,
                observer_failures=obs.failures,
                latency_out_of_bounds=bad,
                rate_limited_total=srv.metric("netra_command_errors_total", 'code="rate_limited"'),
                closes_4429=srv.metric("netra_socket_closes_total", 'code="4429"'),
            )
            record_figures(tmp_path, "hostile_flood", figures)
            for flood in floods + unbounded:
                assert flood["rate_limited"] > 0, flood
                assert 4429 in flood["closes"], flood
            assert not obs.failures  # observers were never refused
            assert not bad, bad

        scenario()
        assert srv.health()["status"] == "ok"


# -- connections that never finish the handshake ------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_500_connections_that_never_finish_the_handshake(tmp_path: Path) -> None:
    figures: dict[str, Any] = {"request_timeout_s": REQUEST_TIMEOUT}
    kinds = {"silent": 200, "half": 200, "trickle": 100}
    with serving(tmp_path) as srv:

        @bounded(110)
        async def scenario() -> None:
            obs = Observers(srv.ws_url)
            await obs.start()
            handshakes: list[float] = []

            async def legit(seconds: float) -> None:
                """New users connect, say hello and run a demo, in every window alike."""
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    t0 = time.monotonic()
                    peer = Peer(srv.ws_url, new_user("legit"))
                    await peer.connect()
                    handshakes.append(time.monotonic() - t0)
                    run_id = await peer.say("served despite the half-open crowd")
                    await peer.wait_runs_ended([run_id])
                    assert peer.runs[run_id] == "completed"
                    await peer.close()
                    await asyncio.sleep(0.5)

            await obs.window("warmup", 1.0)
            fds_before = srv.fds()
            await asyncio.gather(obs.window("baseline", WINDOW * 2), legit(WINDOW * 2))
            # the crowd, from its own process
            proc = await asyncio.create_subprocess_exec(
                *[sys.executable, str(HERE / "relkit.py"), "halfopen", str(srv.port)],
                *[str(kinds[k]) for k in ("silent", "half", "trickle")],
                stdout=subprocess.PIPE,
            )
            try:
                assert proc.stdout is not None
                ready = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert ready.strip() == b"ready", ready
                for _ in range(100):  # the server accepts them from its listen backlog
                    fds_during = srv.fds()
                    if fds_during >= fds_before + sum(kinds.values()):
                        break
                    await asyncio.sleep(0.05)
                health = srv.health()
                await asyncio.gather(obs.window("hostile", WINDOW * 2), legit(WINDOW * 2))
                out, _ = await asyncio.wait_for(proc.communicate(), REQUEST_TIMEOUT + 30)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            dropped: list[tuple[str, float]] = json.loads(out)
            for _ in range(50):  # the server closes its side right after the timeout
                if srv.fds() <= fds_before:
                    break
                await asyncio.sleep(0.1)
            fds_after = srv.fds()
            await obs.stop()
            summary, bad = latency_figures(obs)
            times = [t for _, t in dropped]
            figures.update(
                connections=sum(kinds.values()),
                kinds=kinds,
                dropped=len(dropped),
                dropped_after_s_min=round(min(times), 2),
                dropped_after_s_max=round(max(times), 2),
                server_fds_before_during_after=[fds_before, fds_during, fds_after],
                healthz_during=health["http_status"],
                legit_sessions=len(handshakes),
                legit_handshake_ms_max=round(max(handshakes) * 1000, 1),
                observers=summary,
                observer_failures=obs.failures,
                latency_out_of_bounds=bad,
            )
            record_figures(tmp_path, "hostile_half_open", figures)
            assert len(dropped) == sum(kinds.values())
            assert min(times) >= REQUEST_TIMEOUT - 1.0
            assert max(times) <= REQUEST_TIMEOUT + 5.0
            assert fds_during >= fds_before + 400  # they really were held open
            assert fds_after <= fds_before
            assert health["http_status"] == 200
            assert max(handshakes) < 3.0
            assert not obs.failures
            assert not bad, bad

        scenario()


# -- clients that vanish without closing ----------------------------------------------------------


@pytest.mark.timeout(90)
def test_vanished_clients_are_dropped_by_keepalive(tmp_path: Path) -> None:
    ping, pong = 1.0, 1.0
    figures: dict[str, Any] = {"ping_interval_s": ping, "pong_timeout_s": pong}
    with serving(tmp_path, "--ping-interval", str(ping), "--pong-timeout", str(pong)) as srv:

        @bounded(80)
        async def scenario() -> None:
            keeper = Peer(srv.ws_url, new_user("keeper"))  # answers pings: stays
            await keeper.connect()
            # warm up: as many users at once as the ghosts will be (the store's reader pool
            # grows to its size then and keeps its connections)
            warm = [Peer(srv.ws_url, new_user("warm")) for _ in range(20)]
            await asyncio.gather(*(p.connect() for p in warm))
            await asyncio.gather(*(p.close() for p in warm))
            await asyncio.sleep(0.5)
            fds_before = srv.fds()  # (before any /healthz request: that is a socket too)
            kinds_before = srv.fd_kinds()
            before = srv.health()
            ghosts = [raw_session(srv.port, new_user("ghost")) for _ in range(20)]
            for sock in ghosts:
                data = b""
                while b"welcome" not in data:
                    data += await asyncio.to_thread(sock.recv, 4096)
            t0 = time.monotonic()
            during = srv.health()
            # silence: no reads, no pongs, no FIN (as if the network had vanished)
            async with asyncio.timeout(ping + pong + 10):
                while srv.health()["open_sockets"] > before["open_sockets"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)  # polling the server's /healthz
            freed_after = time.monotonic() - t0
            # the server closes each dropped socket after its session ends (a loaded machine
            # may take seconds): wait for the descriptors and the TCP states, boundedly
            for _ in range(200):
                kinds = srv.fd_kinds()
                if (
                    srv.fds() <= fds_before
                    and kinds["sockets"] <= kinds_before["sockets"]
                    and all(peer_closed(sock) for sock in ghosts)
                ):
                    break
                await asyncio.sleep(0.1)
            fds_after = srv.fds()
            kinds_after = srv.fd_kinds()
            after = srv.health()
            for sock in ghosts:
                assert peer_closed(sock)
                sock.close()
            await asyncio.sleep(2 * ping)  # the keeper, which answers pings, is still served
            assert (await keeper.command({"type": "ping"}))["type"] == "pong"
            await keeper.close()
            figures.update(
                ghosts=len(ghosts),
                open_sockets_before_during_after=[
                    before["open_sockets"],
                    during["open_sockets"],
                    after["open_sockets"],
                ],
                subscriptions_before_during_after=[
                    before["subscriptions"],
                    during["subscriptions"],
                    after["subscriptions"],
                ],
                server_fds_before_after=[fds_before, fds_after],
                server_fd_kinds_before_after=[kinds_before, kinds_after],
                freed_after_s=round(freed_after, 2),
            )
            record_figures(tmp_path, "hostile_vanished", figures)
            assert during["open_sockets"] == before["open_sockets"] + len(ghosts)
            assert after["open_sockets"] == before["open_sockets"]
            assert after["subscriptions"] == before["subscriptions"]
            assert kinds_after["sockets"] <= kinds_before["sockets"]
            assert fds_after <= fds_before
            assert freed_after <= 2 * (ping + pong) + 2.0

        scenario()


# -- a closed flooder is not parsed further (the gateway fix of this suite) --------------------


@pytest.mark.timeout(60)
def test_a_flooder_told_4429_is_not_parsed_for_the_close_timeout(tmp_path: Path) -> None:
    """After the server closes a flooding socket with 4429 it waits (up to 3 s) for the client's
    close frame. A flooder that keeps sending buries that frame under megabytes of commands; the
    server must not spend the whole close timeout parsing them (it used to: a full core for 3 s
    per flooding connection)."""
    with serving(tmp_path, "--rate", "50", "--burst", "100") as srv:
        sock = raw_session(srv.port, new_user("blaster"))
        try:
            data = b""
            while b"welcome" not in data:
                data += sock.recv(4096)
            ping = raw_frame(0x1, b'{"type":"ping"}', mask=b"\x01\x02\x03\x04")
            blob = ping * 5_000
            cpu_before = srv.cpu_seconds()
            started = time.monotonic()
            sock.setblocking(False)
            sent = 0
            while not server_released(sock, srv.port) and time.monotonic() - started < 6:
                try:
                    sent += sock.send(blob)
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:
                    break  # reset by the server
            released = time.monotonic() - started
            cpu = srv.cpu_seconds() - cpu_before
        finally:
            sock.close()
        assert srv.health()["status"] == "ok"
    record_figures(
        tmp_path,
        "hostile_flood_close",
        {"bytes_sent": sent, "released_after_s": round(released, 3), "server_cpu_s": cpu},
    )
    assert released < 1.5, released
    assert cpu < 0.5, cpu


# -- reconnecting does not refill the rate limit (the gateway fix of this suite) ----------------


def test_reconnecting_does_not_refill_the_rate_limit(tmp_path: Path) -> None:
    """The bucket is per user, not per connection: a client that closes and reconnects at once
    finds it as empty as it left it (it used to get a full burst on every new connection)."""
    rate, burst = 2.0, 4
    with serving(tmp_path, "--rate", str(rate), "--burst", str(burst)) as srv:

        @bounded(30)
        async def scenario() -> list[list[str]]:
            user = new_user("reconnector")
            rounds = []
            for _ in range(4):
                peer = Peer(srv.ws_url, user)
                await peer.connect()
                answers = [await peer.command({"type": "ping"}) for _ in range(burst + 2)]
                rounds.append([a.get("code", a["type"]) for a in answers])
                await peer.close()
            await asyncio.sleep(burst / rate + 0.3)  # refilled: served again
            peer = Peer(srv.ws_url, user)
            await peer.connect()
            answers = [await peer.command({"type": "ping"}) for _ in range(burst)]
            rounds.append([a.get("code", a["type"]) for a in answers])
            await peer.close()
            return rounds

        rounds = scenario()
    record_figures(tmp_path, "hostile_reconnect_rate", {"answers_per_connection": rounds})
    accepted = sum(r.count("pong") for r in rounds[:4])
    assert accepted <= burst + 2, rounds  # the burst, and what refilled meanwhile
    assert rounds[4] == ["pong"] * burst


def test_rate_limit_entries_are_forgotten_once_refilled() -> None:
    """The memory the fix keeps is bounded: a user's entry goes once its bucket is full again."""
    limits = UserLimits(RateLimit(per_second=10, burst=20), max_sockets_per_user=4)
    for i in range(1_000):
        assert limits.open_socket(f"u{i}", now=i * 0.01)
        limits.close_socket(f"u{i}", now=i * 0.01 + 0.001)
    # users that left within the last burst / per_second = 2 s are remembered, no others
    assert limits.users == 0
    assert len(limits._users) <= 2 / 0.01 + 1
    limits.open_socket("late", now=100.0)
    assert len(limits._users) == 1
