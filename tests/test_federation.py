"""Broadcasters linked across hosts: three gunicorn instances as a chain, a mesh, a star.

Each instance runs 2 workers, its own broadcaster and its own federation
port on 127.0.0.1, started from the example confs (example_confs/federation_*.py)
with keys made by ``python -m gunicorn_barrel.federation.keys``, each host
knowing the keys of its neighbours only. Every test waits until each
broadcaster's status file says that every worker is subscribed and every
link is up. The checks in tests/cross_instance.py run on every topology;
then, while instances at both ends stream to socket.io-client receivers on
every instance, the broadcaster at each position is SIGKILLed in turn (first,
middle, last; dialer and listener): every receiver gets every message once,
in order, and no worker counts a gap.
"""
from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from gunicorn_barrel.runtime import endpoints
from gunicorn_barrel.sio.emitter import Emitter
from tests import cross_instance
from tests.federation_topology import (
    Hub,
    Receivers,
    key_dirs,
    kill_broadcaster,
    kill_each_in_turn,
    kill_hub,
    make_key_pairs,
    no_gaps,
    not_ready,
    stream_through,
    wait_ready,
)
from tests.harness import REPO, Client, Gunicorn, free_port, spread_clients, wait_for
from tests.node_clients import CLIENT_PACKAGE, NODE, NODE_MISSING_REASON

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(NODE is None or not CLIENT_PACKAGE.is_dir(), reason=NODE_MISSING_REASON),
]

NODES = ("a", "b", "c")
# Three instances booting at once on a loaded 2-core machine can take more than the harness's 30 s.
START_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_key_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture
def running() -> Iterator[list[Gunicorn | Hub]]:
    """Whatever a test starts (gunicorn instances, hubs), stopped by pid at the end."""
    started: list[Gunicorn | Hub] = []
    yield started
    for thing in started:
        thing.stop()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exits:
        yield exits


def _start(servers: Sequence[Gunicorn]) -> None:
    print("logs:", *(s.log_path for s in servers))  # shown by pytest when the test fails
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda s: s.start(START_TIMEOUT), servers))


def _instances(conf: str, keys: Path, env: dict[str, str] | None = None) -> list[Gunicorn]:
    ports = {name: free_port() for name in NODES}
    hosts = ",".join(f"{name}=tcp://127.0.0.1:{ports[name]}" for name in NODES)
    return [
        Gunicorn(workers=2, conf=REPO / "example_confs" / conf, env={
            "FEDERATION_NODE": name, "FEDERATION_HOSTS": hosts, "FEDERATION_KEYS": str(keys / name),
            **(env or {})})
        for name in NODES
    ]


def _senders(stack: ExitStack, *servers: Gunicorn) -> list[Client]:
    senders = [Client(server.url) for server in servers]
    for sender in senders:
        stack.callback(sender.close)
    return senders


def _broadcaster_counters(client: Client) -> dict[str, int]:
    return dict(client.call("bus_counters")["broadcaster"])


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


def test_chain(pairs: Path, running: list[Any], stack: ExitStack, tmp_path: Path) -> None:
    """a - b - c, each host dialing the previous one: a listens only, b dials a and listens for c,
    c dials b. Senders on a and c."""
    keys = key_dirs(pairs, tmp_path / "keys", {"a": ["b"], "b": ["a", "c"], "c": ["b"]})
    # A worker SIGSTOPped below holds a's acknowledgements back for the whole phase, however slow.
    servers = _instances("federation_chain.py", keys, {"BARREL_FEDERATION_WORKER_WAIT": "120"})
    running.extend(servers)
    _start(servers)
    wait_ready(servers, queues_empty=True)
    cross_instance.check_all(servers)
    a, b, c = servers
    receivers = Receivers(servers, stack, tmp_path)
    senders = _senders(stack, a, c)
    kill_each_in_turn([("a (first, listens for b)", kill_broadcaster(a)),
                       ("b (middle, dials a, listens for c)", kill_broadcaster(b)),
                       ("c (last, dials b)", kill_broadcaster(c))], senders, receivers, servers)
    no_gaps(receivers, restarts_seen=1, servers=servers)
    # b frozen until a's side of the link times out (frames in flight are lost with the
    # connection); a resends when b answers again.
    a_before = _broadcaster_counters(senders[0])
    stream_through(_freeze_broadcaster(b, 15, a.log), senders[:1], receivers, count=1200, rate=150)
    a_after = _broadcaster_counters(senders[0])
    assert a_after["federation_frames_resent"] > a_before.get("federation_frames_resent", 0), a_after
    no_gaps(receivers, restarts_seen=1, servers=servers)
    assert "federation: peer c is up" in b.log()
    wait_ready(servers, queues_empty=True)
    _kill_broadcaster_behind_a_stopped_worker(a, senders[1], receivers)


def _kill_broadcaster_behind_a_stopped_worker(victim: Gunicorn, sender: Client, receivers: Receivers) -> None:
    """A worker of ``victim`` is SIGSTOPped while large frames from a peer pile up in its
    broadcaster's queue for it (more than the kernel's socket buffers hold); the broadcaster is
    SIGKILLed once every other receiver has them all, then the worker SIGCONTed. Its receivers get
    every frame too: the broadcaster acknowledged to its peer only what every worker read
    (federation.delivery), so the peer sends the rest again to the new broadcaster."""
    worker = next(pid for pid in receivers.pids if pid in victim.worker_pids())
    tag, count = f"behind-{uuid.uuid4().hex[:6]}", 300
    os.kill(worker, signal.SIGSTOP)
    try:
        # 300 frames of 8 KB: far more than the socket buffers between broadcaster and worker.
        stream = {"tag": tag, "count": count, "rate": 300, "pad": 8000}
        assert sender.call("start_stream", stream) == "started"
        wait_for(lambda: all(s.get("count", 0) >= count for s in receivers.streams_except(tag, worker)),
                 60, "the stream at every receiver the stopped worker does not hold", interval=0.2)
        kill_broadcaster(victim)()
    finally:
        os.kill(worker, signal.SIGCONT)
    try:
        wait_for(lambda: all(s.get("count", 0) >= count for s in receivers.streams(tag)), 60,
                 "the stream at the stopped worker's receivers", interval=0.2)
    except AssertionError:
        raise AssertionError(f"stopped worker {worker}: {receivers.streams(tag)}") from None
    complete = {"count": count, "last": count - 1, "outOfOrder": 0, "duplicates": 0}
    for stats in receivers.streams(tag):
        assert {k: stats[k] for k in complete} == complete, stats
    assert "bus gap:" not in victim.log(), victim.log_path


def test_mesh_and_a_refused_peer(pairs: Path, running: list[Any], stack: ExitStack, tmp_path: Path) -> None:
    """Every host linked to every other one, each dialing those after it: a dials b and c, b dials c
    and listens for a, c listens for a and b. Senders on a and c."""
    keys = key_dirs(pairs, tmp_path / "keys", {
        **{name: [other for other in NODES if other != name] for name in NODES}, "rogue": ["a"]})
    servers = _instances("federation_mesh.py", keys)
    running.extend(servers)
    _start(servers)
    wait_ready(servers, queues_empty=True)
    cross_instance.check_all(servers)
    a, b, c = servers
    receivers = Receivers(servers, stack, tmp_path)
    senders = _senders(stack, a, c)
    kill_each_in_turn([("a (dials b and c)", kill_broadcaster(a)),
                       ("b (dials c, listens for a)", kill_broadcaster(b)),
                       ("c (listens for a and b)", kill_broadcaster(c))], senders, receivers, servers)
    no_gaps(receivers, restarts_seen=1, servers=servers)
    # A hub whose key a does not know dials a: refused, logged, counted; it gets nothing.
    a_port = a.env["FEDERATION_HOSTS"].split(",")[0].rsplit(":", 1)[1]
    rogue = Hub(keys / "rogue", tmp_path / "rogue", peers=f"a=tcp://127.0.0.1:{a_port}")
    running.append(rogue.start())
    wait_for(lambda: "federation: refused a peer from 127.0.0.1" in a.log(), 15, "the refusal in a's log")
    assert "is not in" in a.log()
    wait_for(lambda: "handshake failed" in rogue.log(), 10, "the refusal in the rogue's log")
    assert "refused by the peer" in rogue.log()
    wait_for(lambda: _broadcaster_counters(senders[0]).get("federation_peers_refused", 0) >= 1, 5,
             "the refusal counted")
    groups = cross_instance.clients_everywhere(servers)
    try:
        cross_instance.check_broadcast(groups, per_sender=1)  # the mesh is unaffected
    finally:
        cross_instance.close_all(groups)


def test_star_around_a_hub_with_an_emitter(pairs: Path, running: list[Any], stack: ExitStack,
                                           tmp_path: Path) -> None:
    """a, b and c dial a standalone hub (which listens); a cron job emits through the hub with a
    key in its emitters/. Senders on a and c; the hub, a, b and c killed in turn."""
    keys = key_dirs(pairs, tmp_path / "keys", {
        **{name: ["hub"] for name in NODES}, "hub": NODES, "cron": ["hub"], "rogue": ["hub"]},
        emitters={"hub": ["cron"]})
    hub_endpoint = f"tcp://127.0.0.1:{free_port()}"
    hub = Hub(keys / "hub", tmp_path / "hub", listen=hub_endpoint)
    running.append(hub.start())
    servers = [
        Gunicorn(workers=2, conf=REPO / "example_confs" / "federation_star.py", env={
            "FEDERATION_HUB": hub_endpoint, "FEDERATION_KEYS": str(keys / name)})
        for name in NODES
    ]
    running.extend(servers)
    _start(servers)
    wait_ready([*servers, hub], queues_empty=True)
    cross_instance.check_all(servers)
    groups = cross_instance.clients_everywhere(servers)
    try:
        for group in groups:  # a room with one client of each instance
            group[0].call("put_in_room", {"sid": group[0].sid, "room": "ops"})
        cross_instance.markers_everywhere(cross_instance._flat(groups), [g[0] for g in groups])
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
        wait_for(lambda: "federation: refused a peer" in hub.log(), 10, "the refusal in the hub's log")
        cross_instance.markers_everywhere(everyone, [groups[0][0]])
        assert not any(cross_instance._count(c, "news", "token", "rogue") for c in everyone)
    finally:
        cross_instance.close_all(groups)
    a, b, c = servers
    receivers = Receivers(servers, stack, tmp_path)
    senders = _senders(stack, a, c)
    kill_each_in_turn([("the hub (middle, listens for a, b, c)", kill_hub(hub)),
                       ("a (dials the hub, sends)", kill_broadcaster(a)),
                       ("b (dials the hub, receives only)", kill_broadcaster(b)),
                       ("c (dials the hub, sends)", kill_broadcaster(c))],
                      senders, receivers, [*servers, hub])
    no_gaps(receivers, restarts_seen=1, servers=servers)


def test_frames_made_before_a_peer_first_dials_reach_it(pairs: Path, running: list[Any], stack: ExitStack,
                                                        tmp_path: Path) -> None:
    """b dials a. b's broadcaster is frozen (SIGSTOP) before a even starts, so b has never said
    hello to a while a's worker streams: a keeps the stream for b (b's key is in a's peers/) and
    sends it when b's link comes up; b's receivers get all of it, once, in order."""
    keys = key_dirs(pairs, tmp_path / "keys", {"a": ["b"], "b": ["a"]})
    a_endpoint = f"tcp://127.0.0.1:{free_port()}"
    b = Gunicorn(workers=2, env={"BARREL_FEDERATION_PEERS": f"a={a_endpoint}",
                                 "BARREL_FEDERATION_KEYS": str(keys / "b")})
    running.append(b)
    b.start(START_TIMEOUT)
    wait_for(lambda: not_ready(b, queues_empty=False) == "links down: ['a']", 30,
             "b's workers subscribed (its link to a cannot be up: a is not started)")
    receivers = Receivers([b], stack, tmp_path)
    frozen = b.broadcaster_pid()
    os.kill(frozen, signal.SIGSTOP)
    stack.callback(os.kill, frozen, signal.SIGCONT)
    a = Gunicorn(workers=2, env={"BARREL_FEDERATION_LISTEN": a_endpoint,
                                 "BARREL_FEDERATION_KEYS": str(keys / "a")})
    running.append(a)
    a.start(START_TIMEOUT)
    on_a = spread_clients(a.url, 2, per_worker=1)  # one per worker of a
    for client in on_a:
        stack.callback(client.close)
    sender = on_a[0]
    count = 200

    def queued_for_b() -> int:
        links = wait_for(lambda: a.broadcaster_pids() and _links(a), 10, "a's status")
        assert [(link["name"], link["up"]) for link in links] == [("b", False)], links
        return int(links[0]["queued"])

    def stream_frames_queued_for_b() -> int:
        # Beside the stream, a's workers' cluster presence frames (gunicorn_barrel.sio.peers)
        # wait for b too; read before and after the queue, so that a heartbeat in between shows.
        before = sum(c.call("bus_counters")["counters"].get("cluster_frames_sent", 0) for c in on_a)
        queued = queued_for_b()
        after = sum(c.call("bus_counters")["counters"].get("cluster_frames_sent", 0) for c in on_a)
        return queued - after if before == after else -1

    tag = "before-b"
    assert sender.call("start_stream", {"tag": tag, "count": count, "rate": 200}) == "started"
    wait_for(lambda: stream_frames_queued_for_b() == count, 20, "the whole stream queued for b at a")
    os.kill(frozen, signal.SIGCONT)
    wait_for(lambda: all(s.get("count", 0) >= count for s in receivers.streams(tag)), 30,
             "the stream at b's receivers")
    complete = {"count": count, "last": count - 1, "outOfOrder": 0, "duplicates": 0}
    for stats in receivers.streams(tag):
        assert {k: stats[k] for k in complete} == complete, stats
    wait_ready([a, b], queues_empty=True)
    no_gaps(receivers, restarts_seen=0, servers=[a, b])


def _links(server: Gunicorn) -> list[dict[str, Any]] | None:
    status = endpoints.read_status(server.runtime_dir())
    return None if status is None else list(status["links"])


def test_a_link_down_queues_up_to_the_bound_and_resends_when_it_heals(pairs: Path, running: list[Any],
                                                                       tmp_path: Path) -> None:
    """emitter -> hub1 -> hub2 -> instance a. hub2 is down while the emitter sends 150
    events: hub1 keeps the last 100 (--queue-limit 100) and counts 50 dropped; when hub2
    comes up it gets the 100, and a's workers get them once, in order."""
    # hub1 uses the key pair "b", hub2 the pair "hub".
    keys = key_dirs(pairs, tmp_path / "keys", {"a": ["hub"], "hub": ["a", "b"], "b": ["hub"], "cron": ["b"]},
                    emitters={"b": ["cron"]})
    a_endpoint, hub1_endpoint, hub2_endpoint = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    a = Gunicorn(workers=2, env={
        "BARREL_FEDERATION_LISTEN": a_endpoint, "BARREL_FEDERATION_KEYS": str(keys / "a")})
    running.append(a)
    a.start(START_TIMEOUT)
    clients = spread_clients(a.url, 2, per_worker=1)
    try:
        one = list({c.pid: c for c in clients}.values())
        for client in one:
            assert client.call("ev_subscribe", "numbers")["pid"] == client.pid
        hub1 = Hub(keys / "b", tmp_path / "hub1", hub1_endpoint, f"hub={hub2_endpoint}",
                   ("--queue-limit", "100"))
        running.append(hub1.start())
        with Emitter(hub1_endpoint, keys=str(keys / "cron"), peer="b") as emitter:
            for n in range(150):
                emitter.event("numbers", {"n": n})
            assert emitter.flush(10)
        running.append(Hub(keys / "hub", tmp_path / "hub2", hub2_endpoint, f"a={a_endpoint}").start())
        for client in one:
            seen = wait_for(lambda c=client: (r := c.call("ev_seen", "numbers")["seen"]) and r[-1]["n"] == 149
                            and r, 20, "the queued events")
            assert [e["n"] for e in seen] == list(range(50, 150)), client.pid
    finally:
        for c in clients:
            c.close()
    hub1.stop()
    stopped = hub1.log()
    assert "'federation_frames_dropped': 50" in stopped, stopped[-2000:]
    assert "resending 100 unacknowledged frame(s)" in stopped
