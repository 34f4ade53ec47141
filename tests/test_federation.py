"""Broadcasters linked across hosts: three gunicorn instances as a chain, a mesh, a star.

Each instance runs 2 workers, its own broadcaster and its own federation
port on 127.0.0.1, started from the example confs (example_confs/federation_*.py)
with keys made by ``python -m gunicorn_barrel.bus.keys``. The checks in
tests/cross_instance.py run on every topology; then links are cut (a
broadcaster SIGKILLed while another instance streams) and healed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from gunicorn_barrel.emitter import Emitter
from tests import cross_instance
from tests.harness import REPO, Client, Gunicorn, free_port, spread_clients, wait_for
from tests.node_clients import CLIENT_PACKAGE, NODE, NODE_MISSING_REASON, STARTUP_TIMEOUT, NodeClients

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(NODE is None or not CLIENT_PACKAGE.is_dir(), reason=NODE_MISSING_REASON),
]

NODES = ("a", "b", "c")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key directory per node (a, b, c, the hub, a cron emitter, a rogue), made by the key helper.

    Every node knows every other node's public key except the rogue's."""
    base = tmp_path_factory.mktemp("keys")
    names = (*NODES, "hub", "cron", "rogue")
    for name in names:
        done = subprocess.run([sys.executable, "-m", "gunicorn_barrel.bus.keys", str(base / name), name],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        assert "copy" in done.stdout
    for name in names:
        for other in names:
            if other != name and "rogue" not in (name, other):
                shutil.copy(base / other / f"{other}.key", base / name / "peers" / f"{other}.key")
    # The rogue knows everyone (it has their public keys); nobody knows the rogue.
    for other in names[:-1]:
        shutil.copy(base / other / f"{other}.key", base / "rogue" / "peers" / f"{other}.key")
    return base


def _start(servers: Sequence[Gunicorn]) -> None:
    print("logs:", *(s.log_path for s in servers))  # shown by pytest when the test fails
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda s: s.start(), servers))


def _instances(conf: str, keys: Path, env: dict[str, str] | None = None) -> list[Gunicorn]:
    ports = {name: free_port() for name in NODES}
    hosts = ",".join(f"{name}=tcp://127.0.0.1:{ports[name]}" for name in NODES)
    return [
        Gunicorn(workers=2, conf=REPO / "example_confs" / conf, env={
            "FEDERATION_NODE": name, "FEDERATION_HOSTS": hosts, "FEDERATION_KEYS": str(keys / name),
            **(env or {}),
        })
        for name in NODES
    ]


@pytest.fixture
def running(request: pytest.FixtureRequest) -> Iterator[list[Any]]:
    """Whatever a test starts (gunicorn instances, hubs), stopped by pid at the end."""
    started: list[Any] = []
    yield started
    for thing in started:
        if isinstance(thing, Gunicorn):
            thing.stop()
        elif thing.poll() is None:
            thing.terminate()
            try:
                thing.wait(10)
            except subprocess.TimeoutExpired:
                thing.kill()
                thing.wait(5)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exits:
        yield exits


def _broadcaster_counters(client: Client) -> dict[str, int]:
    return dict(client.call("bus_counters")["broadcaster"])


class Receivers:
    """socket.io-client (node) clients on some instances, in room "stream": node delivers in
    arrival order (python-engineio's client runs each message handler in a thread of its own)."""

    def __init__(self, servers: Sequence[Gunicorn], stack: ExitStack, tmp_path: Path, per_server: int = 6):
        self.js = [stack.enter_context(NodeClients(s.url, "websocket", per_server, tmp_path / f"node{i}.err"))
                   for i, s in enumerate(servers)]
        for js, server in zip(self.js, servers, strict=True):
            clients = js.expect("ready", STARTUP_TIMEOUT + 10)["clients"]
            print("stream receivers per worker:", server.url, Counter(c["pid"] for c in clients))
            assert js.ask("join_stream", "joined")

    def streams(self, tag: str) -> list[dict[str, Any]]:
        return [s.get(tag, {}) for js in self.js for s in js.ask("streams?", "streams")["streams"]]


def _stream_through(cut: Callable[[], None], sender: Client, receivers: Receivers, count: int = 600) -> None:
    """The sender streams ``count`` numbered messages at 150/s; ``cut()`` runs a third of the way;
    every receiver gets each message once, in order."""
    tag = os.urandom(4).hex()
    assert sender.call("start_stream", {"tag": tag, "count": count, "rate": 150}) == "started"

    def progress() -> int:
        return min(s.get("count", 0) for s in receivers.streams(tag))

    wait_for(lambda: progress() >= count // 3, 30, "stream progress", interval=0.2)
    cut()
    try:
        wait_for(lambda: progress() >= count, 40, "every message at every receiver", interval=0.2)
    except AssertionError:
        raise AssertionError(f"after the cut: {receivers.streams(tag)}") from None
    complete = {"count": count, "last": count - 1, "outOfOrder": 0, "duplicates": 0}
    for stats in receivers.streams(tag):
        assert {k: stats[k] for k in complete} == complete, stats


def _kill_broadcaster(victim: Gunicorn) -> Callable[[], None]:
    def cut() -> None:
        old = victim.broadcaster_pid()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: [p for p in victim.broadcaster_pids() if p != old], 10, "the broadcaster restarted")

    return cut


def _freeze_broadcaster(victim: Gunicorn, seconds: float, peer_log: Callable[[], str]) -> Callable[[], None]:
    """SIGSTOP the broadcaster until its peer has dropped the link (zeromq heartbeat), then SIGCONT."""
    def cut() -> None:
        pid = victim.broadcaster_pid()
        downs = peer_log().count("link down")
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: peer_log().count("link down") > downs, seconds, "the peer dropping the link")
        finally:
            os.kill(pid, signal.SIGCONT)

    return cut


def _workers_saw_restart_without_gaps(clients: list[Client]) -> None:
    for client in {c.pid: c for c in clients}.values():
        counters = client.call("bus_counters")["counters"]
        assert counters.get("gaps", 0) == 0 and counters.get("frames_lost", 0) == 0, counters
        assert counters["broadcaster_restarts_seen"] == 1, counters


def test_chain(keys: Path, running: list[Any], stack: ExitStack, tmp_path: Path) -> None:
    servers = _instances("federation_chain.py", keys)
    running.extend(servers)
    _start(servers)
    cross_instance.check_all(servers)
    # Cut the link b - c by killing c's broadcaster while a streams to everyone: c's
    # new broadcaster gets from b what it had not acknowledged; nothing is lost.
    groups = cross_instance.clients_everywhere(servers)
    try:
        receivers = Receivers(servers[1:], stack, tmp_path)
        _stream_through(_kill_broadcaster(servers[2]), groups[0][0], receivers)
        _workers_saw_restart_without_gaps(groups[2])
        b = _broadcaster_counters(groups[1][0])
        assert b["federation_peer_restarts_seen"] == 1 and b.get("federation_frames_dropped", 0) == 0, b
        wait_for(lambda: _broadcaster_counters(groups[1][0])["federation_queued"] == 0, 10,
                 "b's queues emptied (everything acknowledged)")
        # Drop b's traffic: its broadcaster frozen until a's side of the link times out
        # (frames in flight are lost with the connection); a resends when b answers again.
        a_before = _broadcaster_counters(groups[0][0])
        freeze = _freeze_broadcaster(servers[1], 15, servers[0].log)
        _stream_through(freeze, groups[0][0], receivers, count=1200)
        a_after = _broadcaster_counters(groups[0][0])
        assert a_after["federation_frames_resent"] > a_before.get("federation_frames_resent", 0), a_after
        assert a_after.get("federation_frames_dropped", 0) == 0, a_after
        for client in {c.pid: c for c in groups[1] + groups[2]}.values():
            counters = client.call("bus_counters")["counters"]
            assert counters.get("gaps", 0) == 0, counters
    finally:
        cross_instance.close_all(groups)
    assert "federation: peer c is up" in servers[1].log()


def test_mesh_and_a_refused_peer(keys: Path, running: list[Any], stack: ExitStack, tmp_path: Path) -> None:
    servers = _instances("federation_mesh.py", keys)
    running.extend(servers)
    _start(servers)
    cross_instance.check_all(servers)
    groups = cross_instance.clients_everywhere(servers)
    try:
        receivers = Receivers(servers[1:], stack, tmp_path)
        _stream_through(_kill_broadcaster(servers[1]), groups[0][0], receivers)
        _workers_saw_restart_without_gaps(groups[1])
        for group in (groups[0], groups[2]):
            counters = _broadcaster_counters(group[0])
            assert counters["federation_peer_restarts_seen"] == 1, counters
            assert counters.get("federation_frames_dropped", 0) == 0, counters
        # A hub whose key a does not know dials a: refused, logged, counted; it gets nothing.
        a_port = servers[0].env["FEDERATION_HOSTS"].split(",")[0].rsplit(":", 1)[1]
        rogue_log = servers[0].log_path.with_suffix(".rogue")
        running.append(_hub(keys / "rogue", rogue_log, peers=f"a=tcp://127.0.0.1:{a_port}"))
        wait_for(lambda: "federation: refused a peer from 127.0.0.1" in servers[0].log(), 15,
                 "the refusal in a's log")
        assert "is not in" in servers[0].log()
        wait_for(lambda: "handshake failed" in rogue_log.read_text(), 10, "the refusal in the rogue's log")
        assert "refused by the peer" in rogue_log.read_text()
        wait_for(lambda: _broadcaster_counters(groups[0][0]).get("federation_peers_refused", 0) >= 1, 5,
                 "the refusal counted")
        cross_instance.check_broadcast(groups, per_sender=1)  # the mesh is unaffected
    finally:
        cross_instance.close_all(groups)


def _hub(keydir: Path, log: Path, listen: str = "", peers: str = "", *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "gunicorn_barrel.hub", "--keys", str(keydir), *extra]
    cmd += ["--listen", listen] if listen else []
    cmd += ["--peers", peers] if peers else []
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)})


def test_star_around_a_hub_with_an_emitter(keys: Path, running: list[Any], tmp_path: Path) -> None:
    hub_endpoint = f"tcp://127.0.0.1:{free_port()}"
    hub_log = tmp_path / "hub.log"
    running.append(_hub(keys / "hub", hub_log, listen=hub_endpoint))
    wait_for(lambda: "federation: listening" in hub_log.read_text(), 10, "the hub listening")
    servers = [
        Gunicorn(workers=2, conf=REPO / "example_confs" / "federation_star.py", env={
            "FEDERATION_HUB": hub_endpoint, "FEDERATION_KEYS": str(keys / name)})
        for name in NODES
    ]
    running.extend(servers)
    _start(servers)
    cross_instance.check_all(servers)
    groups = cross_instance.clients_everywhere(servers)
    try:
        for group in groups:  # a room with one client of each instance
            group[0].call("put_in_room", {"sid": group[0].sid, "room": "ops"})
        cross_instance._markers_everywhere(cross_instance._flat(groups), [g[0] for g in groups])
        # A cron job emits through the hub: a broadcast and a room emit, each once everywhere.
        with Emitter(hub_endpoint, keys=str(keys / "cron"), peer="hub") as emitter:
            emitter.emit("news", {"token": "from-cron"})
            emitter.emit("room_news", {"token": "cron-ops"}, room="ops")
            emitter.emit("news", {"marker": "cron-done"})
            assert emitter.flush(10)
        everyone = cross_instance._flat(groups)
        for client in everyone:
            wait_for(lambda c=client: cross_instance._count(c, "news", "marker", "cron-done"), 20,
                     "the emitter's marker")
            assert cross_instance._count(client, "news", "token", "from-cron") == 1
            in_room = client in [g[0] for g in groups]
            assert cross_instance._count(client, "room_news", "token", "cron-ops") == int(in_room)
        # An emitter with a key the hub does not know: refused and logged, nothing delivered.
        refused = Emitter(hub_endpoint, keys=str(keys / "rogue"), peer="hub")
        refused.emit("news", {"token": "rogue"})
        assert refused.close(timeout=2) is False
        wait_for(lambda: "federation: refused a peer" in hub_log.read_text(), 10,
                 "the refusal in the hub's log")
        cross_instance._markers_everywhere(everyone, [groups[0][0]])
        assert not any(cross_instance._count(c, "news", "token", "rogue") for c in everyone)
    finally:
        cross_instance.close_all(groups)


def test_a_link_down_queues_up_to_the_bound_and_resends_when_it_heals(keys: Path, running: list[Any],
                                                                       tmp_path: Path) -> None:
    """emitter -> hub1 -> hub2 -> instance a. hub2 is down while the emitter sends 150
    events: hub1 keeps the last 100 (--queue-limit 100) and counts 50 dropped; when hub2
    comes up it gets the 100, and a's workers get them once, in order."""
    a_endpoint, hub1_endpoint, hub2_endpoint = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    a = Gunicorn(workers=2, env={
        "BARREL_FEDERATION_LISTEN": a_endpoint, "BARREL_FEDERATION_KEYS": str(keys / "a")})
    running.append(a)
    a.start()
    clients = spread_clients(a.url, 2, per_worker=1)
    try:
        one = list({c.pid: c for c in clients}.values())
        for client in one:
            assert client.call("ev_subscribe", "numbers")["pid"] == client.pid
        hub1_log, hub2_log = tmp_path / "hub1.log", tmp_path / "hub2.log"
        hub1 = _hub(keys / "b", hub1_log, hub1_endpoint, f"hub={hub2_endpoint}", "--queue-limit", "100")
        running.append(hub1)
        wait_for(lambda: "federation: listening" in hub1_log.read_text(), 10, "hub1 listening")
        with Emitter(hub1_endpoint, keys=str(keys / "cron"), peer="b") as emitter:
            for n in range(150):
                emitter.event("numbers", {"n": n})
            assert emitter.flush(10)
        running.append(_hub(keys / "hub", hub2_log, hub2_endpoint, f"a={a_endpoint}"))
        for client in one:
            seen = wait_for(lambda c=client: (r := c.call("ev_seen", "numbers")["seen"]) and r[-1]["n"] == 149
                            and r, 20, "the queued events")
            assert [e["n"] for e in seen] == list(range(50, 150)), client.pid
    finally:
        for c in clients:
            c.close()
    hub1.send_signal(signal.SIGTERM)
    hub1.wait(10)
    stopped = hub1_log.read_text()
    assert "'federation_frames_dropped': 50" in stopped, stopped[-2000:]
    assert "resending 100 unacknowledged frame(s)" in stopped
