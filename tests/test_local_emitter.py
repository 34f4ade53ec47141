"""LocalEmitter (gunicorn_barrel.side.emitter()) against a real broadcaster process, no gunicorn;
RedisLocalEmitter against a real redis-server.

The broadcaster runs as the supervisor runs it, with this test as its parent;
a plain zmq SUB socket (a Redis pattern subscription) stands for the workers.
Delivery to clients through real workers is tested in tests/test_side_processes.py.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from gunicorn_barrel import side
from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.config import arguments
from gunicorn_barrel.config import settings as barrel_settings
from gunicorn_barrel.runtime import endpoints, side_env
from gunicorn_barrel.sio.local_emitter import EmitterClosed, LocalEmitter
from gunicorn_barrel.sio.redis_local_emitter import RedisLocalEmitter
from tests.harness import REPO, wait_for
from tests.redis_server import RedisServer

MAX_FRAME = 64 * 1024


class Broadcaster:
    def __init__(self, runtime_dir: Path) -> None:
        self.runtime_dir = str(runtime_dir)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Broadcaster:
        values = barrel_settings.resolve({"max_frame_size": MAX_FRAME}, environ={})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn_barrel.bus.zeromq.broadcaster",
             *arguments.instance_args(self.runtime_dir, os.getpid()),
             *arguments.command_line(values, barrel_settings.BROADCASTER)],
            cwd=REPO, stderr=subprocess.PIPE, text=True)
        pid = self.proc.pid
        wait_for(lambda: endpoints.ready_pid(self.runtime_dir) == pid, 10, "the broadcaster ready")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int:
        """Stop it (SIGTERM); the count of frames it published, from its last log line."""
        assert self.proc is not None
        self.proc.terminate()
        _out, err = self.proc.communicate(timeout=10)
        found = re.search(r"'frames_published': (\d+)", err)
        return int(found.group(1)) if found else 0


class Subscriber:
    """Reads what the broadcaster publishes on the given channels."""

    def __init__(self, runtime_dir: str, *topics: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        for topic in (*topics, channels.HEARTBEAT):
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.sock.connect(endpoints.pub_endpoint(runtime_dir))
        self.frames: list[wire.Frame] = []
        # Our subscriptions went before the heartbeat's: once one arrives, they are in effect.
        wait_for(lambda: self.read() or any(f.channel == channels.HEARTBEAT for f in self.frames), 10,
                 "a heartbeat")

    def read(self) -> list[wire.Frame]:
        while self.sock.poll(50):
            self.frames.append(wire.decode(self.sock.recv_multipart(), MAX_FRAME))
        return [f for f in self.frames if f.channel != channels.HEARTBEAT]

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


class PlayedBroadcaster:
    """The broadcaster's two sockets, played by the test: it reads what arrives and chooses
    which heartbeats (epoch, acknowledgements) go out."""

    def __init__(self, runtime_dir: str) -> None:
        self.ctx = zmq.Context()
        self.pull, self.pub = self.ctx.socket(zmq.PULL), self.ctx.socket(zmq.PUB)
        for sock in (self.pull, self.pub):
            sock.setsockopt(zmq.LINGER, 0)
        self.pull.bind(endpoints.pull_endpoint(runtime_dir))
        self.pub.bind(endpoints.pub_endpoint(runtime_dir))
        self.arrived: list[wire.Frame] = []

    def heartbeat(self, epoch: bytes, acks: dict[tuple[bytes, bytes], int]) -> None:
        payload = channels.heartbeat_payload(acks)
        self.pub.send_multipart(wire.encode(wire.Frame(channels.HEARTBEAT, epoch, 0, payload), MAX_FRAME))

    def beat_until(self, epoch: bytes, acks: dict[tuple[bytes, bytes], int], done: Any, what: str) -> Any:
        """Heartbeats until ``done()`` (the emitter may subscribe late: the first ones may be lost)."""
        def beat() -> Any:
            self.heartbeat(epoch, acks)
            self.read()
            return done()
        return wait_for(beat, 10, what)

    def read(self) -> list[wire.Frame]:
        while self.pull.poll(0):
            self.arrived.append(wire.decode(self.pull.recv_multipart(), MAX_FRAME))
        return self.arrived

    def close(self) -> None:
        self.pull.close()
        self.pub.close()
        self.ctx.term()


@pytest.fixture
def broadcaster(tmp_path: Path) -> Iterator[Broadcaster]:
    started = Broadcaster(tmp_path)
    yield started
    started.kill()


def _data(frame: wire.Frame) -> Any:
    return frame.payload["data"]


def test_emits_and_events_reach_the_bus_in_order_and_flush_waits_for_the_acknowledgement(
        broadcaster: Broadcaster) -> None:
    broadcaster.start()
    sub = Subscriber(broadcaster.runtime_dir, "sio:socketio", "ev:cache-clear")
    em = LocalEmitter(broadcaster.runtime_dir, MAX_FRAME)
    try:
        for n in range(200):
            em.emit("news", {"n": n})
        em.emit("alert", ("two", b"\x00args"), room="ops", skip_sid="s1")
        em.event("cache-clear", {"why": "test"})
        assert em.flush(10)
        assert em.unacked == 0
        frames = wait_for(lambda: (got := sub.read()) and len(got) >= 202 and got, 10, "every frame")
    finally:
        assert em.close(1)
        sub.close()
    news = [f for f in frames if f.channel == "sio:socketio"]
    assert [f.seq for f in news] == list(range(1, 202))
    assert [_data(f) for f in news[:200]] == [[{"n": n}] for n in range(200)]
    assert {f.origin for f in frames} == {em.origin}
    last = news[-1].payload
    assert (last["event"], last["data"], last["room"], last["skip_sid"]) == ("alert", ["two", b"\x00args"],
                                                                            "ops", "s1")
    event = next(f for f in frames if f.channel == "ev:cache-clear")
    assert (event.seq, event.payload) == (1, {"data": {"why": "test"}})


def test_what_is_emitted_before_the_broadcaster_runs_is_delivered_once_it_does(
        broadcaster: Broadcaster) -> None:
    os.makedirs(broadcaster.runtime_dir, exist_ok=True)
    em = LocalEmitter(broadcaster.runtime_dir, MAX_FRAME)
    try:
        em.emit("news", {"early": True})
        assert not em.flush(0.3)
        assert em.unacked == 1
        broadcaster.start()
        assert em.flush(10)
    finally:
        em.close(1)


def test_a_broadcaster_killed_with_frames_in_its_socket_gets_them_from_the_next_one(
        broadcaster: Broadcaster) -> None:
    broadcaster.start()
    em = LocalEmitter(broadcaster.runtime_dir, MAX_FRAME)
    try:
        em.emit("news", 0)
        assert em.flush(10)
        assert broadcaster.proc is not None
        os.kill(broadcaster.proc.pid, signal.SIGSTOP)
        for n in range(1, 50):
            em.emit("news", n)
        assert not em.flush(0.3)  # a frozen broadcaster acknowledges nothing
        broadcaster.kill()  # what it held in its socket is gone
        broadcaster.start()
        assert em.flush(10)
        assert em.counters["broadcaster_restarts_seen"] == 1
    finally:
        em.close(1)
    # the next one published all 49 (it acknowledges from the first it saw: all of them, not a tail)
    assert broadcaster.stop() >= 49


def test_frames_carry_their_base_and_go_again_with_the_base_of_now(tmp_path: Path) -> None:
    played = PlayedBroadcaster(str(tmp_path))
    em = LocalEmitter(str(tmp_path), MAX_FRAME)
    topic = b"sio:socketio"
    try:
        for n in range(1, 4):
            em.emit("news", n)
        first = wait_for(lambda: len(played.read()) >= 3 and played.arrived[:3], 10, "three frames")
        assert [(f.seq, f.base, f.origin) for f in first] == [(1, 1, em.origin), (2, 1, em.origin),
                                                                (3, 1, em.origin)]
        played.beat_until(b"1" * 16, {(em.origin, topic): 1}, lambda: em.unacked == 2, "1 acknowledged")
        played.arrived.clear()
        # A new broadcaster (another epoch) that has none of them: 2 and 3 go again at once,
        # with the base of now (1 was acknowledged since they were first sent).
        resent = played.beat_until(b"2" * 16, {}, lambda: len(played.arrived) >= 2 and played.arrived[:2],
                                   "2 and 3 sent to the new broadcaster")
        assert [(f.seq, f.base) for f in resent] == [(2, 2), (3, 2)]
        assert em.counters["broadcaster_restarts_seen"] == 1
        # It publishes 2, not 3 (lost on the way): 3 goes again once unacknowledged for a while
        # with heartbeats coming, with base 3.
        played.arrived.clear()
        again = played.beat_until(b"2" * 16, {(em.origin, topic): 2},
                                  lambda: any(f.seq == 3 for f in played.arrived) and played.arrived,
                                  "3 sent again")
        assert {(f.seq, f.base) for f in again} == {(3, 3)}
        played.beat_until(b"2" * 16, {(em.origin, topic): 3}, lambda: em.unacked == 0, "all acknowledged")
        assert em.flush(0)
    finally:
        em.close(0)
        played.close()


def test_a_frame_too_large_raises_at_the_caller_and_takes_no_number(broadcaster: Broadcaster) -> None:
    broadcaster.start()
    sub = Subscriber(broadcaster.runtime_dir, "sio:socketio")
    em = LocalEmitter(broadcaster.runtime_dir, MAX_FRAME)
    try:
        with pytest.raises(wire.FrameTooLarge):
            em.emit("news", b"x" * MAX_FRAME)
        with pytest.raises(wire.WireError):
            em.emit("news", {1: "not a string key"})
        em.emit("news", "small")
        assert em.flush(10)
        got = wait_for(sub.read, 10, "the small frame")
        assert [(f.seq, _data(f)) for f in got] == [(1, ["small"])]
    finally:
        em.close(1)
        sub.close()
    with pytest.raises(EmitterClosed):
        em.emit("news", "late")


def test_side_emitter_needs_a_side_process_of_a_zmq_instance(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.delenv(side_env.RUNTIME_DIR, raising=False)
    with pytest.raises(RuntimeError, match="not a barrel side process"):
        side.emitter()
    with pytest.raises(RuntimeError, match="this process was not started as a barrel side process"):
        LocalEmitter()
    instance = side_env.SideInstance("x", str(tmp_path), os.getpid(), "redis://127.0.0.1:1/0", "", MAX_FRAME)
    for key, value in side_env.environment(instance).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RuntimeError, match="bus is Redis"):
        LocalEmitter()
    zmq_instance = side_env.SideInstance("x", str(tmp_path), os.getpid(), "zmq", "", MAX_FRAME)
    monkeypatch.setenv(side_env.BUS, "zmq")
    em = side.emitter()
    try:
        assert isinstance(em, LocalEmitter) and em.runtime_dir == zmq_instance.runtime_dir
        assert em.max_frame_size == MAX_FRAME
    finally:
        em.close(0)


def test_flush_returns_at_once_when_the_arbiter_is_gone(tmp_path: Path) -> None:
    arbiter = subprocess.Popen(["sleep", "610"])
    em = LocalEmitter(str(tmp_path), MAX_FRAME, arbiter_pid=arbiter.pid)  # no broadcaster: no acks
    flushed: list[bool] = []
    try:
        em.emit("news", 1)
        waiting = threading.Thread(target=lambda: flushed.append(em.flush(300)), daemon=True)
        waiting.start()
        arbiter.kill()
        arbiter.wait(10)
        wait_for(lambda: flushed, 10, "flush() to return once the arbiter is gone")
        assert flushed == [False] and em.unacked == 1
    finally:
        arbiter.kill()
        em.close(0)


def test_on_redis_frames_are_published_numbered_then_ticks_follow(redis_server: RedisServer) -> None:
    pubsub = redis_server.client.pubsub()
    pubsub.psubscribe("barrel:bus:ns:*")
    wait_for(lambda: pubsub.get_message(timeout=0.1), 10, "psubscribe confirmation")
    em = RedisLocalEmitter(redis_server.url, "ns", MAX_FRAME)
    try:
        em.emit("news", {"n": 1})
        em.event("cache-clear", {"why": "test"})
        assert em.flush(10) and em.unacked == 0
        frames: list[wire.Frame] = []

        def read() -> list[wire.Frame]:
            while (message := pubsub.get_message(timeout=0.1)) is not None:
                channel = message["channel"][len(b"barrel:bus:ns:"):]
                frames.append(wire.decode([channel, message["data"]], MAX_FRAME))
            return frames

        # A tick (a numbered frame no handler sees) follows each channel's last frame.
        wait_for(lambda: any(channels.TICK_KEY in f.payload for f in read() if f.channel == "sio:socketio"),
                 10, "a tick after the emit")
    finally:
        em.close(1)
        pubsub.close()
    news = [f for f in frames if f.channel == "sio:socketio"]
    assert (news[0].seq, news[0].base, news[0].payload["data"]) == (1, 1, [{"n": 1}])
    assert [f.seq for f in news] == list(range(1, len(news) + 1))
    # Each with the lowest seq of its channel not yet published when it was queued.
    bases = [f.base for f in news]
    assert bases == sorted(bases) and all(f.base <= f.seq for f in news)
    event = next(f for f in frames if f.channel == "ev:cache-clear")
    assert (event.seq, event.payload) == (1, {"data": {"why": "test"}})
    with pytest.raises(EmitterClosed):
        em.emit("news", "late")


def test_on_redis_flush_says_false_while_redis_is_away() -> None:
    away = RedisServer()  # never started: its port refuses connections
    em = RedisLocalEmitter(away.url, "", MAX_FRAME)
    try:
        em.emit("news", 1)
        assert not em.flush(0.5)
        assert em.unacked == 1
    finally:
        em.close(0)
