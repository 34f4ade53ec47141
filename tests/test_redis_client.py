"""Unit tests of the Redis bus client that need no Redis: queueing, bounds, bad input.

The client's greenlets only run when the test yields to gevent; pointed at a
port nothing listens on, they fail to connect and retry, which is what these
tests want: Redis away.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gunicorn_barrel.bus import api as bus_client
from gunicorn_barrel.bus import wire
from gunicorn_barrel.bus.redis.client import RedisBusClient, connect
from tests.harness import free_port


@pytest.fixture
def bus() -> Iterator[RedisBusClient]:
    client = RedisBusClient(f"redis://:secret@127.0.0.1:{free_port()}/0", 4096, "ns", max_unacked=100)
    yield client
    client.sender.queue.clear()  # nothing to flush: close at once
    client.close()


def test_frames_are_queued_on_the_namespaced_channel_with_the_zmq_wire_format(bus: RedisBusClient) -> None:
    bus.publish("sio:socketio", {"blob": b"\x00\xff", "n": 1})
    bus.publish("sio:socketio", {"n": 2})
    bus.publish("ev:x", {"n": 3})
    queued = [(q.redis_channel, wire.decode([q.redis_channel[len(b"barrel:bus:ns:"):], q.body], 4096))
              for q in bus.sender.queue]
    assert [c for c, _f in queued] == [b"barrel:bus:ns:sio:socketio"] * 2 + [b"barrel:bus:ns:ev:x"]
    assert [(f.seq, f.payload) for _c, f in queued] == [
        (1, {"blob": b"\x00\xff", "n": 1}), (2, {"n": 2}), (1, {"n": 3})]
    assert all(f.origin == bus.origin for _c, f in queued)
    assert bus.counters["frames_pushed"] == 3


def test_the_queue_is_bounded_and_what_it_drops_is_counted(bus: RedisBusClient) -> None:
    for n in range(150):
        bus.publish("c", {"n": n})
    assert len(bus.sender.queue) == 100
    assert bus.counters["frames_unrecoverable"] == 50
    first = wire.decode([b"c", bus.sender.queue[0].body], 4096)
    assert first.payload == {"n": 50}  # the oldest went first


def test_each_frame_carries_the_lowest_seq_of_its_channel_not_yet_published(bus: RedisBusClient) -> None:
    def bases() -> list[tuple[str, int, int]]:
        frames = [wire.decode([q.channel.encode(), q.body], 4096) for q in bus.sender.queue]
        return [(f.channel, f.seq, f.base) for f in frames]

    bus.publish("a", {})
    bus.publish("b", {})
    bus.publish("a", {})
    assert bases() == [("a", 1, 1), ("b", 1, 1), ("a", 2, 1)]
    bus.sender.done(bus.sender.take_batch()[:1])  # Redis answered the first PUBLISH
    bus.publish("a", {})
    bus.publish("b", {})
    assert bases()[-2:] == [("a", 3, 2), ("b", 2, 1)]
    bus.sender.done(bus.sender.take_batch())  # all published
    bus.publish("a", {})
    assert bases() == [("a", 4, 4)]


def test_batches_are_bounded_in_frames_and_bytes(bus: RedisBusClient) -> None:
    bus.sender.max_queued = 10_000
    for n in range(600):
        bus.publish("c", {"n": n})
    assert len(bus.sender.take_batch()) == 512
    bus.sender.queue.clear()
    for _ in range(600):
        bus.publish("c", {"pad": "x" * 3000})
    batch = bus.sender.take_batch()
    assert sum(len(q.body) for q in batch) <= 1024 * 1024 < sum(
        len(q.body) for q in list(bus.sender.queue)[:len(batch) + 1])


def test_bad_input_is_refused_at_the_call(bus: RedisBusClient) -> None:
    with pytest.raises(wire.FrameTooLarge):
        bus.publish("c", {"big": b"x" * 5000})
    with pytest.raises(wire.WireError):
        bus.publish("c", {"set": {1, 2}})
    with pytest.raises(ValueError, match="reserved"):
        bus.publish("\x00hb", {})
    with pytest.raises(ValueError, match="reserved"):
        bus.subscribe("\x00hb", lambda frame: None)
    with pytest.raises(ValueError, match="reserved"):
        bus.publish("c", {"\x00tick": 1})
    assert not bus.sender.queue


def test_close_with_redis_away_is_bounded_and_then_publish_raises(bus: RedisBusClient) -> None:
    bus.publish("c", {"n": 1})
    started = time.monotonic()
    bus.close()
    assert time.monotonic() - started < 10
    assert bus.counters["bus_publish_failures"] >= 1
    with pytest.raises(bus_client.BusClosed):
        bus.publish("c", {"n": 2})
    bus.close()  # twice is fine


def test_connect_returns_a_client_even_when_redis_is_away(caplog: pytest.LogCaptureFixture) -> None:
    client = connect(f"redis://:secret@127.0.0.1:{free_port()}/0", 4096)
    try:
        assert isinstance(client, RedisBusClient)
        client.wait_subscribed(0.2)  # says why the worker goes on without the bus
        assert not client.live.is_set()
        assert "did not confirm the subscription within 0.2 s" in caplog.text
        assert "secret" not in client.url and "secret" not in caplog.text
    finally:
        client.close()


def test_logs_and_messages_never_show_the_password(bus: RedisBusClient) -> None:
    assert bus.url.startswith("redis://:***@127.0.0.1:")


def test_a_nack_for_this_sender_replays_what_the_window_kept(bus: RedisBusClient) -> None:
    for seq in (1, 2, 3):
        bus.sender.window.add("c", seq, (b"barrel:bus:ns:c", f"body{seq}".encode()), 5)
    bus.sender.answer({"origin": b"x" * 16, "channel": "c", "first": 1, "last": 3}, 0.0)  # another's
    assert not bus.sender.queue
    bus.sender.answer({"origin": bus.origin, "channel": "c", "first": 2, "last": 4}, 0.0)
    replayed = [(q.seq, q.body, q.fresh) for q in bus.sender.queue]
    assert replayed == [(2, b"body2", False), (3, b"body3", False)]
    assert bus.counters["frames_replayed"] == 2 and bus.counters["replay_misses"] == 1
    for bad in ({"origin": bus.origin, "channel": 5, "first": 1, "last": 1},
                {"origin": bus.origin, "channel": "c", "first": 3, "last": 2},
                {"origin": bus.origin, "channel": "c", "first": 0, "last": 1}):
        bus.sender.answer(bad, 0.0)
    assert bus.counters["frames_refused"] == 3
    # A gap larger than any window: its newest part is looked up, the rest counted at once.
    bus.sender.answer({"origin": bus.origin, "channel": "c", "first": 1, "last": 10**9}, 0.0)
    assert bus.counters["replay_misses"] == 1 + 10**9
