"""The bus on Redis (``bus`` = a redis:// URL) under real gunicorn, real clients, real redis-server.

Each module run starts its own redis-server on a free loopback port (see
tests/redis_server.py). Covered: every cross-worker operation of
test_cross_worker.py on -w 4; three gunicorn instances sharing one Redis;
Redis SIGKILLed and restarted, SIGSTOPped, and its subscribers cut off while
a stream is sent (received by node socket.io-client, which records order:
python-socketio's client runs each event handler in a thread of its own).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import cross_instance, test_cross_worker
from tests.harness import Client, Gunicorn, gunicorn, spread_clients, wait_for
from tests.node_clients import NodeClients, all_workers_serving
from tests.redis_server import RedisServer

# The cross-worker checks run here too, with this module's server (a Redis bus).
from tests.test_cross_worker import (  # noqa: F401 - collected by pytest with this module's fixtures
    test_a_burst_of_emits_arrives_whole_and_once,
    test_broadcast_reaches_every_client_exactly_once,
    test_broadcast_with_skip_sid,
    test_clients_spread_over_all_workers,
    test_emit_argument_shapes_reach_every_worker_unchanged,
    test_emit_callback_from_another_worker,
    test_emit_to_a_sid_on_another_worker_keeps_binary,
    test_frames_for_one_sid_reach_only_its_worker,
    test_leave_room_and_close_room_from_another_worker,
    test_remote_call_gets_the_answer,
    test_remote_disconnect,
    test_room_emit_reaches_members_only_including_remote_enter,
)
from tests.test_events import (  # noqa: F401 - the same, on conftest's per_worker fixture
    test_events_reach_every_worker_once_in_each_senders_order,
    test_store_changes_forwarded_to_a_room_reach_each_member_once,
)

pytestmark = pytest.mark.integration

WORKERS = 4
clients = test_cross_worker.clients  # the fixture, on this module's server


def redis_bus_env(rds: RedisServer, namespace: str) -> dict[str, str]:
    return {"BARREL_BUS": rds.url, "BARREL_BUS_NAMESPACE": namespace}


def failover_bus_env(url: str, namespace: str) -> dict[str, str]:
    """A bus at ``url`` with a generous gap_timeout: on this shared machine a failover
    (or an outage) and its replays may take a while."""
    return {"BARREL_BUS": url, "BARREL_BUS_NAMESPACE": namespace, "BARREL_GAP_TIMEOUT": "20"}


@pytest.fixture(scope="module", params=[(), ("--preload",)], ids=["fork-load", "preload"])
def server(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Gunicorn]:
    env = redis_bus_env(redis_server, "w4")
    with gunicorn(workers=WORKERS, extra_args=request.param, env=env) as srv:
        yield srv


def counters_of(client: Client) -> dict[str, int]:
    """The bus counters of the worker holding ``client``."""
    answer = client.call("bus_counters")
    assert answer["pid"] == client.pid
    return dict(answer["counters"])


@pytest.mark.parametrize(("env", "expected"), [
    ({"BARREL_BUS": "redis://127.0.0.1:notaport/0"},
     "invalid barrel setting bus (BARREL_BUS): unparsable Redis URL"),
    ({"BARREL_BUS": "redis://:pw@127.0.0.1:6379/0", "BARREL_STORE": "embedded"},
     "store='embedded' with bus='redis://:***@127.0.0.1:6379/0'"),
])
def test_bad_bus_settings_stop_gunicorn_at_start(env: dict[str, str], expected: str) -> None:
    srv = Gunicorn(workers=1, env=env)
    proc = subprocess.run(srv.cmd, capture_output=True, text=True, timeout=30, env=srv.env)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr


def test_no_broadcaster_and_the_store_follows_the_bus(
    server: Gunicorn, clients: list[Client], redis_server: RedisServer
) -> None:
    assert server.broadcaster_pids() == []
    assert server.store_pids() == []
    key = "k:" + uuid.uuid4().hex
    a, b = clients[0], next(c for c in clients if c.pid != clients[0].pid)
    a.call("store_op", {"op": "set", "args": [key, {"n": 1}]})
    assert b.call("store_op", {"op": "get", "args": [key]})["result"] == {"n": 1}
    assert redis_server.client.get("barrel:kv:" + key) == b'{"n":1}'


def test_frames_travel_on_the_namespaced_redis_channel(
    clients: list[Client], redis_server: RedisServer
) -> None:
    pubsub = redis_server.client.pubsub()
    try:
        pubsub.psubscribe("barrel:bus:w4:*")
        wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, 10, "psubscribe confirmation")
        token = uuid.uuid4().hex
        clients[0].call("broadcast", {"token": token})

        def seen() -> Any:
            message = pubsub.get_message(timeout=0.1)
            return message if message and token.encode() in message["data"] else None

        message = wait_for(seen, 10, "the broadcast frame on Redis")
        assert message["channel"] == b"barrel:bus:w4:sio:socketio"
        assert message["data"][:3] == b"BRL"  # the wire format of the zmq bus, header included
    finally:
        pubsub.close()
    for c in clients:
        counters = counters_of(c)
        assert counters.get("gaps", 0) == counters.get("frames_lost", 0) == 0, counters
        assert counters.get("frames_refused", 0) == 0


# --------------------------------------------------------------------------- three instances


def test_the_cross_instance_suite_on_three_instances_sharing_one_redis(redis_server: RedisServer) -> None:
    """tests/cross_instance.py, as run on federated broadcasters: the same checks, a Redis bus."""
    cross_instance.check_all_on_new_instances(3, redis_bus_env(redis_server, "x3"))


# --------------------------------------------------------------------------- Redis outages

STREAM_A, RATE_A = 400, 100
STREAM_B, RATE_B = 200, 200
RECEIVERS = 8  # node socket.io-client receivers per instance (they record order as received)

Deltas = dict[int, dict[str, int]]


def _complete(count: int) -> dict[str, int]:
    return {"count": count, "last": count - 1, "outOfOrder": 0, "duplicates": 0}


@contextmanager
def streaming_instances(env: dict[str, str], tmp_path: Path,
                        instances: int = 1) -> Iterator[tuple[list[Client], list[NodeClients]]]:
    """Two workers on the bus ``env`` names: of one instance (-w 2), or of two instances (-w 1
    each); yields a python client on each worker and node receivers on each instance."""
    servers: list[Gunicorn] = []
    group: list[Client] = []
    receivers: list[NodeClients] = []
    try:
        servers = [Gunicorn(workers=2 // instances, env=env) for _ in range(instances)]
        for n, srv in enumerate(servers):
            srv.start()
            all_workers_serving(srv)
            group += spread_clients(srv.url, srv.workers, per_worker=1)
            receivers.append(NodeClients(srv.url, "websocket", RECEIVERS, tmp_path / f"node{n}.stderr"))
        yield group, receivers
    finally:
        for js in receivers:
            js.stop()
        for c in group:
            c.close()
        for srv in servers:
            srv.stop()


def _streamed_through(outage: Callable[[RedisServer], None], tmp_path: Path,
                      instances: int = 1) -> tuple[Deltas, int, list[int]]:
    """Stream from one worker to receivers on two while ``outage()`` hits Redis; check the counts.

    Returns each worker's counter changes, the sending worker's pid and the others'.
    """
    rds = RedisServer()
    try:
        rds.start()
        env = failover_bus_env(rds.url, "outage")
        with streaming_instances(env, tmp_path, instances) as (group, receivers):
            return _check_stream_through(group, receivers, lambda _sender: outage(rds))
    finally:
        rds.stop()


def _check_stream_through(group: list[Client], receivers: list[NodeClients],
                          outage: Callable[[Client], None]) -> tuple[Deltas, int, list[int]]:
    """Stream from one worker (the sender) to node receivers on both while ``outage(sender)``
    hits Redis; check what every receiver got. Returns the workers' counter changes, the
    sender's pid and the other's."""
    where = [c["pid"] for js in receivers for c in js.expect("ready", 70)["clients"]]
    for js in receivers:
        assert js.ask("join_stream", "joined")
    probe_of = {c.pid: c for c in group}  # one python client per worker: sender, counters
    assert len(probe_of) == 2, probe_of
    # The sender: the worker holding fewer receivers (idle accepts are uneven).
    sender = min(probe_of.values(), key=lambda c: where.count(c.pid))
    (other,) = [pid for pid in probe_of if pid != sender.pid]
    assert where.count(other) > 0
    before = {pid: counters_of(c) for pid, c in probe_of.items()}

    def streams(tag: str) -> list[dict[str, int]]:
        every = [s for js in receivers for s in js.ask("streams?", "streams")["streams"]]
        return [{k: v for k, v in s.get(tag, {"count": 0}).items() if k in _complete(1)} for s in every]

    assert sender.call("start_stream", {"tag": "A", "count": STREAM_A, "rate": RATE_A}) == "started"
    wait_for(lambda: min(s["count"] for s in streams("A")) >= 50, 20, "stream A flowing", interval=0.1)
    outage(sender)
    wait_for(lambda: counters_of(sender)["frames_pushed"] >= before[sender.pid].get("frames_pushed", 0)
             + STREAM_A, 30, "stream A emitted", interval=0.1)
    probes: list[str] = []

    def news() -> list[list[Any]]:
        return [n for js in receivers for n in js.ask("news?", "news")["news"]]

    def everyone_hears_the_sender() -> bool:
        probes.append(uuid.uuid4().hex)
        sender.call("broadcast", {"token": probes[-1]})
        return all(any({"token": p} in got for p in probes) for got in news())

    wait_for(everyone_hears_the_sender, 30, "the bus back at every worker", interval=0.3)
    # Everything sent after recovery arrives, once, in order.
    assert sender.call("start_stream", {"tag": "B", "count": STREAM_B, "rate": RATE_B}) == "started"
    wait_for(lambda: min(s["count"] for s in streams("B")) >= STREAM_B, 30, "stream B everywhere",
             interval=0.1)
    assert all(s == _complete(STREAM_B) for s in streams("B")), streams("B")
    after = {pid: counters_of(c) for pid, c in probe_of.items()}
    delta = {pid: {k: after[pid].get(k, 0) - before[pid].get(k, 0) for k in after[pid]} for pid in after}
    stream_a, got_news = streams("A"), news()
    assert all(s["duplicates"] == 0 for s in stream_a), stream_a
    for pid, s in zip(where, stream_a, strict=True):
        if pid == sender.pid:  # the sender's worker delivers to its own clients at once
            assert s == _complete(STREAM_A), s
    # What a worker never delivered is lost for all its clients alike, and counted:
    # it equals the worker's frames_lost (0 when every gap was recovered).
    missing = {STREAM_A - s["count"] for pid, s in zip(where, stream_a, strict=True) if pid == other}
    lost_probes = {sum(1 for p in probes if {"token": p} not in got)
                   for pid, got in zip(where, got_news, strict=True) if pid == other}
    assert len(missing) == 1 and len(lost_probes) == 1, (missing, lost_probes)
    lost = missing.pop() + lost_probes.pop()
    assert delta[other].get("frames_lost", 0) == lost, (lost, delta)
    assert (delta[other].get("gaps", 0) > 0) == (lost > 0), delta
    delta[other]["lost_at_clients"] = lost
    if lost == 0:
        assert all(s == _complete(STREAM_A) for s in stream_a), stream_a
    return delta, sender.pid, [other]


def _kill_and_restart(rds: RedisServer) -> None:
    rds.kill()
    time.sleep(1.0)  # an outage of a second, not a synchronization
    rds.start()


@pytest.mark.parametrize("instances", [1, 2], ids=["one-instance-w2", "two-instances-w1"])
def test_redis_sigkilled_and_restarted_while_streaming(instances: int, tmp_path: Path) -> None:
    delta, sender, (other,) = _streamed_through(_kill_and_restart, tmp_path, instances)
    assert delta[other]["lost_at_clients"] == 0, delta  # nothing lost: recovered
    # The sender saw the outage and published again what Redis never answered.
    assert delta[sender]["bus_publish_failures"] > 0, delta
    assert delta[sender]["frames_resent"] > 0, delta
    # Every worker lost its subscription and counted getting it back.
    assert all(d["bus_reconnects"] >= 1 for d in delta.values()), delta


def _cut_subscribers(rds: RedisServer) -> None:
    # Redis stays up and keeps publishing; the subscribers are cut again and
    # again (as Redis does to one over its pub/sub output buffer limit), so
    # frames are published while they are away.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        rds.client.client_kill_filter(_type="pubsub")
        time.sleep(0.01)


def test_subscribers_cut_off_get_what_they_missed_replayed(tmp_path: Path) -> None:
    delta, sender, (other,) = _streamed_through(_cut_subscribers, tmp_path)
    # Frames were published while the other worker was away; it asked for them,
    # the sender published them again, and its clients got every one, once, in order.
    assert delta[other]["bus_reconnects"] >= 1 and delta[other]["nacks_sent"] > 0, delta
    assert delta[sender]["frames_replayed"] > 0, delta
    assert delta[other]["lost_at_clients"] == 0, delta
    assert delta[sender].get("bus_publish_failures", 0) == 0, delta  # publishing never failed


def _stop_and_continue(rds: RedisServer) -> None:
    assert rds.proc is not None
    os.kill(rds.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(6.0)  # silent longer than the bus's 3 s I/O timeout, not a synchronization
    finally:
        os.kill(rds.proc.pid, signal.SIGCONT)


def test_redis_sigstopped_while_streaming(tmp_path: Path) -> None:
    delta, sender, (other,) = _streamed_through(_stop_and_continue, tmp_path)
    assert delta[other]["lost_at_clients"] == 0, delta
    assert delta[sender]["bus_publish_failures"] > 0, delta  # timed out, kept, resent
    assert delta[sender]["frames_resent"] > 0, delta


def _subscribed_line(srv: Gunicorn, pid: int | None) -> bool:
    return any(f"[{pid}]" in line and "is reachable; subscribed" in line for line in srv.log().splitlines())


def test_workers_start_without_redis_serve_locally_and_join_when_it_comes() -> None:
    rds = RedisServer()  # not started yet: its port refuses connections
    srv = Gunicorn(workers=2, env=redis_bus_env(rds, "late"))
    group: list[Client] = []
    try:
        srv.start(timeout=60, wait_ready=False)  # no worker's bus can be live without Redis
        wait_for(lambda: srv.log().count(f"cannot subscribe at Redis {rds.url}") >= 2, 10,
                 "each worker's log line about the unreachable Redis")
        group = spread_clients(srv.url, 2, per_worker=1)
        sender, other = group
        token = uuid.uuid4().hex
        assert sender.call("broadcast", {"token": token}) == "ok"  # queued for Redis, served locally
        wait_for(lambda: {"token": token} in sender.got("news"), 10, "the local delivery")
        # The queued broadcast goes out when the sender's worker reaches Redis; a
        # worker subscribed by then gets it. Hold the sender's worker until the
        # other one has subscribed, so that the other must get it, exactly once.
        os.kill(sender.pid, signal.SIGSTOP)
        try:
            rds.start()
            wait_for(lambda: _subscribed_line(srv, other.pid), 20, "the other worker subscribed")
        finally:
            os.kill(sender.pid, signal.SIGCONT)
        wait_for(lambda: _subscribed_line(srv, sender.pid), 20, "the sender's worker subscribed")
        srv.wait_workers_ready()  # now their buses are live
        fence = uuid.uuid4().hex
        sender.call("broadcast", {"token": fence})
        for c in group:
            wait_for(lambda c=c: {"token": fence} in c.got("news"), 10, f"broadcast at {c.pid}")
            # once at the sender (its own worker, locally), once at the other (through Redis)
            assert c.got("news").count({"token": token}) == 1, (c.pid, c.got("news"))
    finally:
        for c in group:
            c.close()
        srv.stop()
        rds.stop()
