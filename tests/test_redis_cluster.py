"""The Redis bus and the Redis store on a Redis Cluster (``redis+cluster://``), sharded pub/sub.

A cluster of the test's own (tests/redis_cluster.py): three masters with a
replica each, on free loopback ports. Three gunicorn instances pass the
cross-instance suite on it; their frames travel by SPUBLISH on every shard,
and each worker is subscribed to the channels that concern it only. A master
is SIGKILLed while a sender streams 100 messages/s: its replica takes over,
the workers follow, and every socket.io-client receiver gets every message
once and in order. The store keeps its keys and change events on the shard
of its hash tag, and follows that shard's failover.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import pytest
from redis.cluster import RedisCluster as RedisClusterClient
from redis.crc import key_slot

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.redis.client import RedisBusClient
from gunicorn_barrel.bus.redis.layout import SPREAD, ChannelLayout, ShardedLayout
from gunicorn_barrel.config.values import ClusterAddress, cluster_address, redis_url
from gunicorn_barrel.sio.redis_local_emitter import RedisLocalEmitter
from gunicorn_barrel.store.base import StoreUnavailable
from gunicorn_barrel.store.redis_backend import RedisStore
from tests import cross_instance
from tests.harness import Client, Gunicorn, free_port, spread_clients, wait_for
from tests.redis_cluster import RedisCluster
from tests.test_redis_bus import _check_stream_through, failover_bus_env, streaming_instances
from tests.test_store import (
    check_watchers_back_after_failover,
    op,
    wait_calls_work_after_failover,
    watching_workers,
)

pytestmark = pytest.mark.integration

ORIGIN = bytes(range(16))


@pytest.mark.parametrize("url, expected", [
    ("redis+cluster://10.0.0.5:7000", ClusterAddress((("10.0.0.5", 7000),))),
    ("redis+cluster://app:p%40ss@a:1,b:2,[::1]:3",
     ClusterAddress((("a", 1), ("b", 2), ("::1", 3)), "app", "p@ss")),
    ("redis+cluster://:secret@a:1/", ClusterAddress((("a", 1),), None, "secret")),
])
def test_cluster_urls_name_nodes_and_credentials(url: str, expected: ClusterAddress) -> None:
    assert cluster_address(url) == expected
    assert redis_url(url) == url


def test_the_sharded_layout_spreads_a_channel_and_finds_its_topic_again() -> None:
    sharded, plain = ShardedLayout("ns"), ChannelLayout("ns")
    for topic in (b"sio:socketio", b"ev:a#b", b"sio@tag.12:socketio"):
        assert sharded.topic(sharded.frame_channel(topic, ORIGIN)) == topic
        assert plain.topic(plain.frame_channel(topic, ORIGIN)) == topic
    assert plain.frame_channel(b"sio:x", ORIGIN) == b"barrel:bus:ns:sio:x"
    # One sender always uses one shard channel (its order holds); senders spread.
    assert {sharded.frame_channel(b"sio:x", ORIGIN) for _ in range(3)} == {b"barrel:bus:ns:sio:x#0"}
    assert sharded.nack_channel(ORIGIN) == b"barrel:bus:ns:\x00nack#" + ORIGIN.hex().encode()
    names = sharded.subscriptions(["sio:socketio", "ev:x"], ORIGIN)
    assert len(names) == 1 + 2 * SPREAD and names[0] == sharded.nack_channel(ORIGIN)
    # The spread channels of one bus channel fall on every third of the slots
    # (the masters of a 3-master cluster made by redis-cli).
    thirds = Counter(key_slot(n) * 3 // 16384 for n in names if b"sio:socketio#" in n)
    assert sorted(thirds) == [0, 1, 2] and min(thirds.values()) >= 3, thirds


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    # One per test: a failover leaves a shard without a replica.
    group = RedisCluster(masters=3, replicas=1)
    try:
        yield group.start()
    finally:
        group.stop()


def _command_calls(group: RedisCluster, command: str) -> dict[int, int]:
    """Calls of ``command`` each live master served so far (INFO commandstats)."""
    found = {}
    for node in group.masters():
        stats = node.client.info("commandstats").get(f"cmdstat_{command}", {})
        found[node.port] = int(stats.get("calls", 0))
    return found


def _subscribers(group: RedisCluster, name: bytes) -> int:
    node = group.owner(key_slot(name))
    reply = node.client.execute_command("PUBSUB", "SHARDNUMSUB", name)  # [name, count]
    return int(reply[1])


def test_the_cross_instance_suite_on_three_instances_over_the_cluster(cluster: RedisCluster) -> None:
    before = _command_calls(cluster, "spublish")
    servers = [Gunicorn(workers=2, env=failover_bus_env(cluster.url, "c3")) for _ in range(3)]
    try:
        for srv in servers:
            srv.start()
        cross_instance.check_all(servers)
        # Subscribed by name: everyone's channel by the 6 workers, a worker's own by that worker
        # (polled: a worker may still be adding a channel a test subscribed late).
        sharded = ShardedLayout("c3")
        everyone = [b"barrel:bus:c3:sio:socketio#%d" % k for k in range(SPREAD)]
        wait_for(lambda: [_subscribers(cluster, name) for name in everyone] == [6] * SPREAD, 10,
                 "6 subscribers of each of everyone's shard channels")
        # ... spread over every master, so each shard carries part of everyone's traffic.
        owners = {cluster.owner(key_slot(name)).port for name in everyone}
        assert owners == {m.port for m in cluster.masters()}
        clients = spread_clients(servers[0].url, 2, per_worker=1)
        try:
            for client in clients:
                origin = bytes.fromhex(client.call("bus_counters")["origin"])
                assert _subscribers(cluster, sharded.nack_channel(origin)) == 1
        finally:
            for client in clients:
                client.close()
    finally:
        for srv in servers:
            srv.stop()
    # Frames went by SPUBLISH; nothing by PUBLISH or PSUBSCRIBE.
    assert sum(_command_calls(cluster, "spublish").values()) > sum(before.values())
    assert sum(_command_calls(cluster, "publish").values()) == 0
    assert sum(_command_calls(cluster, "psubscribe").values()) == 0


def test_the_store_keeps_its_keys_and_events_on_the_cluster(cluster: RedisCluster) -> None:
    with watching_workers(cluster.url) as (clients, prefix):
        op(clients[0], "set", prefix + "a", {"n": 1})
        assert op(clients[1], "get", prefix + "a") == {"n": 1}
        assert op(clients[1], "incr", prefix + "count") == 1
        assert op(clients[0], "compare_and_set", prefix + "a", {"n": 1}, {"n": 2}) is True
        assert op(clients[0], "scan", prefix) == {prefix + "a": {"n": 2}, prefix + "count": 1}
        # Every watcher gets every change, in order.
        expected = [["set", prefix + "a", {"n": 1}], ["set", prefix + "count", 1],
                    ["set", prefix + "a", {"n": 2}]]

        def watched(c: Client) -> list[list[object]]:
            return list(c.call("store_watched", {"prefix": prefix})["changes"])

        wait_for(lambda: all(len(watched(c)) >= 3 for c in clients), 10, "every change at every watcher")
        assert all(watched(c) == expected for c in clients), [watched(c) for c in clients]
        # One slot: the shard of the hash tag holds every key of the store.
        owner = cluster.owner(key_slot(b"{barrel}"))
        assert owner.client.exists(f"{{barrel}}:kv:{prefix}a".encode()) == 1

        replacement = cluster.fail_over(owner)
        # A worker's first calls may fail until its client learned the new layout.
        wait_calls_work_after_failover(clients, prefix + "a")
        assert op(clients[0], "get", prefix + "a") == {"n": 2}
        assert op(clients[1], "incr", prefix + "count") == 2
        assert replacement.client.get(f"{{barrel}}:kv:{prefix}count".encode()) == b"2"
        check_watchers_back_after_failover(clients, prefix)


def _fail_over_the_senders_shard(group: RedisCluster) -> Callable[[Client], None]:
    def outage(sender: Client) -> None:
        # The master serving the shard channel the sender's broadcasts go to.
        origin = bytes.fromhex(sender.call("bus_counters")["origin"])
        name = ShardedLayout("failover").frame_channel(b"sio:socketio", origin)
        group.fail_over(group.owner(key_slot(name)))
    return outage


def test_a_master_sigkilled_while_streaming_every_receiver_gets_every_message(
        cluster: RedisCluster, tmp_path: Path) -> None:
    # Two instances of one worker each: a sender on one, node socket.io-client
    # receivers on both, 100 messages/s while the master of the sender's shard
    # channel dies and its replica takes over.
    env = failover_bus_env(cluster.url, "failover")
    with streaming_instances(env, tmp_path, instances=2) as (group, receivers):
        outage = _fail_over_the_senders_shard(cluster)
        delta, sender, (other,) = _check_stream_through(group, receivers, outage)
    assert delta[other]["lost_at_clients"] == 0, delta  # replayed from the sender's outbox
    assert delta[sender]["bus_publish_failures"] > 0, delta  # it published while the shard had no master
    assert delta[sender]["frames_resent"] > 0, delta
    assert all(d["bus_reconnects"] >= 1 for d in delta.values()), delta  # both moved over


def test_a_side_process_emitter_spublishes_on_its_shard_channel_and_answers_nacks() -> None:
    group = RedisCluster(masters=3).start()
    em = RedisLocalEmitter(group.url, "side", 64 * 1024)
    reader = RedisClusterClient.from_url(group.url.replace("redis+cluster://", "redis://").split(",")[0])
    pubsub = reader.pubsub()
    try:
        layout = ShardedLayout("side")
        name = layout.frame_channel(b"sio:socketio", em.origin)
        pubsub.ssubscribe(name)
        frames: list[wire.Frame] = []

        def read() -> list[wire.Frame]:
            while (message := pubsub.get_sharded_message(timeout=0.05)) is not None:
                if message["type"] == "smessage":
                    frames.append(wire.decode([layout.topic(message["channel"]), message["data"]], 64 * 1024))
            return frames

        wait_for(lambda: _subscribers(group, name) == 1, 10, "the reader subscribed")
        em.emit("news", {"n": 1})
        em.emit("news", {"n": 2})
        assert em.flush(10)
        wait_for(lambda: len([f for f in read() if "data" in f.payload]) >= 2, 10, "both emits")
        assert [f.payload["data"] for f in frames if "data" in f.payload] == [[{"n": 1}], [{"n": 2}]]
        # A receiver that missed seq 1 asks the emitter, on the emitter's own NACK channel.
        wait_for(lambda: _subscribers(group, layout.nack_channel(em.origin)) == 1, 10, "the NACK channel")
        nack = channels.Nack(em.origin, "sio:socketio", 1, 1).payload()
        topic, body = wire.encode(wire.Frame(channels.NACK, bytes(16), 0, nack), 64 * 1024)
        reader.spublish(layout.nack_channel(em.origin), body)
        wait_for(lambda: sum(1 for f in read() if f.seq == 1) == 2, 10, "seq 1 published again")
    finally:
        em.close(1)
        pubsub.close()
        reader.close()
        group.stop()


def test_an_unreachable_cluster_is_a_failure_to_retry_not_a_crash() -> None:
    # redis-py's cluster client raises RedisClusterException (not a RedisError)
    # when no node answers: the store says StoreUnavailable, and the bus's
    # sender, listener and a side process's emitter keep trying.
    url = f"redis+cluster://:secret@127.0.0.1:{free_port()}"
    store = RedisStore(url, timeout=0.5, max_value=1024)
    try:
        with pytest.raises(StoreUnavailable, match="cannot reach the Redis Cluster"):
            store.get("k")
    finally:
        store.close()
    bus = RedisBusClient(url, 4096)
    emitter = RedisLocalEmitter(url, "side", 4096)
    try:
        bus.publish("sio:x", {"n": 1})
        wait_for(lambda: gevent.sleep(0.05) or bus.counters["bus_publish_failures"] >= 2, 10,
                 "the sender to fail twice and go on")
        assert all(not g.dead for g in bus._greenlets), bus._greenlets
        assert not bus.live.is_set() and bus.sender.queue
        emitter.emit("news", {"n": 1})
        assert not emitter.flush(1.0) and emitter._thread.is_alive()
    finally:
        bus.close()
        emitter.close(0)
