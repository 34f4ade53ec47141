"""The per-worker bus client over Redis pub/sub (the ``bus`` setting is a Redis URL).

Same interface and frames as the zmq BusClient (``wire.encode``: origin, a
per-channel seq, msgpack), but no broadcaster: each bus channel is the Redis
channel ``barrel:bus:<namespace>:<channel>`` and every worker of every
instance PSUBSCRIBEs to ``barrel:bus:<namespace>:*``.

Sender: publish() only queues (it never blocks the caller); one greenlet
pipelines the queued frames to Redis in batches, on one connection, so a
sender's frames reach Redis in order. A frame stays queued until its PUBLISH
was answered; after an error it is sent again on a new connection (at most
``max_unacked`` frames are kept; past that the oldest is dropped and counted
in ``frames_unrecoverable``). A resent frame that Redis had already published
is a duplicate that receivers drop.

Receiver: Redis pub/sub does not keep messages. A frame published while this
worker's subscription is down (Redis restarted, unreachable, or this
subscriber cut off for falling behind its output buffer limit) is lost for
this worker. It is counted, not hidden: each resubscription counts in
``bus_reconnects``, and the ``Inbox`` counts the missing seqs of a sender in
``gaps``/``frames_lost`` when that sender's next frame arrives. As frames of
one sender cannot overtake each other here, a gap is final at once: no
hold-back wait.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import time
import uuid
from collections import Counter
from typing import Any

import gevent
import redis
from gevent.event import Event
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from gunicorn_barrel.bus import client as bus_client
from gunicorn_barrel.bus import wire
from gunicorn_barrel.bus.client import BusClosed, Handler
from gunicorn_barrel.bus.sequencing import Inbox
from gunicorn_barrel.store.redis_backend import safe_url

log = logging.getLogger("gunicorn_barrel.bus")

CHANNEL_PREFIX = "barrel:bus:"
_IO_TIMEOUT = 3.0  # a Redis command unanswered this long means the link is dead
_IDLE_PING = 1.0  # the subscriber PINGs after this many silent seconds
_BATCH_FRAMES = 512
_BATCH_BYTES = 1024 * 1024
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
_YIELD_EVERY = 32  # as in the zmq client: bursts let the clients' writers drain
_CLOSE_FLUSH = 2.0  # seconds close() waits for queued frames to be published


class RedisBusClient:
    """A worker's connection to the bus through Redis."""

    def __init__(self, url: str, max_frame_size: int, namespace: str = "",
                 max_unacked: int = 100_000) -> None:
        self.url = safe_url(url)
        self.max_frame_size = max_frame_size
        self.max_unacked = max_unacked
        self.origin = uuid.uuid4().bytes
        self.pid = os.getpid()
        self.counters: Counter[str] = Counter()
        self.prefix = (CHANNEL_PREFIX + namespace + ":").encode()
        # max_held=0: a frame after a gap is delivered at once, the gap counted.
        self.inbox: Inbox[wire.Frame] = Inbox(0.0, 0, self.counters)
        self.live = Event()  # set while the subscription is confirmed
        self._handlers: dict[str, list[Handler]] = {}
        self._seqs: dict[str, int] = {}  # channel -> last seq sent, numbered from 1
        # Queued frames: (id, redis channel, body); ids tell what a batch covered.
        self._queue: collections.deque[tuple[int, bytes, bytes]] = collections.deque()
        self._ids = itertools.count(1)
        self._tried_up_to = 0  # highest id sent at least once (later sends are resends)
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self._closed = False
        options: dict[str, Any] = {
            "socket_timeout": _IO_TIMEOUT,
            "socket_connect_timeout": _IO_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),  # we resend ourselves, in order
        }
        self._pub = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
            url, max_connections=1, **options))
        self._sub = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
            url, max_connections=1, **options))
        self._listener = gevent.spawn(self._listen_forever)
        self._sender = gevent.spawn(self._send_forever)

    # -- the interface of bus_client.Bus -------------------------------------

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler(frame)`` in the listener greenlet for each frame of ``channel``."""
        if channel.startswith("\x00"):
            raise ValueError("channels starting with NUL are reserved for the bus")
        # Every channel of the namespace is already subscribed (one pattern):
        # a handler added now hears every frame published after this call.
        self._handlers.setdefault(channel, []).append(handler)

    def publish(self, channel: str, payload: dict[str, Any]) -> None:
        """Queue ``payload`` for every worker subscribed to ``channel``; never blocks.

        Raises wire.FrameTooLarge / wire.WireError for a payload that cannot
        travel, and BusClosed after close().
        """
        if self._closed:
            raise BusClosed("the barrel bus client is closed")
        if channel.startswith("\x00"):
            raise ValueError("channels starting with NUL are reserved for the bus")
        seq = self._seqs[channel] = self._seqs.get(channel, 0) + 1
        topic, body = wire.encode(wire.Frame(channel, self.origin, seq, payload), self.max_frame_size)
        if len(self._queue) >= self.max_unacked:
            # Bounded memory while Redis is away: the oldest frame is given up
            # (its receivers count the gap when this sender's next frame arrives).
            self._queue.popleft()
            self.counters["frames_unrecoverable"] += 1
        self._queue.append((next(self._ids), self.prefix + topic, body))
        self.counters["frames_pushed"] += 1
        self._idle.clear()
        self._wake.set()

    def close(self) -> None:
        """Publish what is queued (for up to 2 s), stop the greenlets, close the connections."""
        if self._closed:
            return
        self._closed = True
        if self._queue and not self._idle.wait(_CLOSE_FLUSH):
            log.warning("bus: %s frames not published to Redis at %s before exit",
                        len(self._queue), self.url)
        gevent.killall([self._listener, self._sender], block=True, timeout=1.0)
        self._pub.close()
        self._sub.close()
        self._pub.connection_pool.disconnect()
        self._sub.connection_pool.disconnect()
        log.info("bus client %s closed; counters %s", self.pid, dict(self.counters))

    # -- sending ---------------------------------------------------------------

    def _send_forever(self) -> None:
        backoff = _BACKOFF_FIRST
        failing = False
        while True:
            if not self._queue:
                self._idle.set()
                if self._closed:
                    return
                self._wake.clear()
                self._wake.wait()
                continue
            batch = self._take_batch()
            try:
                self._publish_batch(batch)
            except (RedisError, OSError) as exc:
                self.counters["bus_publish_failures"] += 1
                if not failing:
                    log.warning("bus: cannot publish to Redis at %s (%s); %s frames kept, "
                                "retrying", self.url, exc, len(self._queue))
                failing = True
                self._pub.connection_pool.disconnect()
                gevent.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            if failing:
                log.warning("bus: publishing to Redis at %s again", self.url)
            failing, backoff = False, _BACKOFF_FIRST
            last = batch[-1][0]
            # publish() may have dropped old frames meanwhile: pop by id, not by count.
            while self._queue and self._queue[0][0] <= last:
                self._queue.popleft()
            self.counters["frames_published"] += len(batch)

    def _take_batch(self) -> list[tuple[int, bytes, bytes]]:
        batch: list[tuple[int, bytes, bytes]] = []
        size = 0
        for item in itertools.islice(self._queue, _BATCH_FRAMES):
            if batch and size + len(item[2]) > _BATCH_BYTES:
                break
            batch.append(item)
            size += len(item[2])
        return batch

    def _publish_batch(self, batch: list[tuple[int, bytes, bytes]]) -> None:
        resent = sum(1 for item_id, _channel, _body in batch if item_id <= self._tried_up_to)
        self.counters["frames_resent"] += resent
        self._tried_up_to = max(self._tried_up_to, batch[-1][0])
        pipe = self._pub.pipeline(transaction=False)
        for _id, channel, body in batch:
            pipe.publish(channel, body)
        pipe.execute()

    # -- receiving -------------------------------------------------------------

    def _listen_forever(self) -> None:
        backoff = _BACKOFF_FIRST
        was_live = failing = False
        while not self._closed:
            try:
                self._listen_once(was_live, failing)
            except (RedisError, OSError) as exc:
                if self.live.is_set():
                    log.warning("bus: lost the subscription to Redis at %s (%s); reconnecting. "
                                "Frames published until it is back are lost here (counted "
                                "in gaps/frames_lost)", self.url, exc)
                elif not failing:
                    log.error("bus: cannot subscribe at Redis %s (%s); retrying. This worker "
                              "serves its own clients meanwhile", self.url, exc)
                failing = True
            except Exception:
                log.exception("bus: the Redis listener failed; restarting it")
            if self.live.is_set():
                was_live, failing, backoff = True, False, _BACKOFF_FIRST
                self.live.clear()
            gevent.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _listen_once(self, was_live: bool, failing: bool) -> None:
        pubsub = self._sub.pubsub()
        try:
            pubsub.psubscribe(self.prefix + b"*")
            started = heard = time.monotonic()
            ping_sent: float | None = None
            while not self._closed:
                message = pubsub.get_message(timeout=_IDLE_PING)
                now = time.monotonic()
                if message is None:
                    if not self.live.is_set() and now - started > _IO_TIMEOUT:
                        raise RedisTimeoutError(f"no subscription confirmation within {_IO_TIMEOUT} s")
                    if ping_sent is not None and now - ping_sent > _IO_TIMEOUT:
                        raise RedisTimeoutError(f"no answer to PING within {_IO_TIMEOUT} s")
                    if ping_sent is None and now - heard > _IDLE_PING:
                        pubsub.ping()
                        ping_sent = now
                    continue
                heard, ping_sent = now, None
                kind = message.get("type")
                if kind == "pmessage":
                    self._receive(message["channel"], message["data"])
                elif kind == "psubscribe":
                    if was_live:
                        self.counters["bus_reconnects"] += 1
                        log.warning("bus: subscription to Redis at %s is back", self.url)
                    elif failing:
                        log.warning("bus: Redis at %s is reachable; subscribed", self.url)
                    self.live.set()
        finally:
            pubsub.close()

    def _receive(self, channel: bytes, body: bytes) -> None:
        try:
            frame = wire.decode([channel[len(self.prefix):], body], self.max_frame_size)
        except wire.WireError as exc:
            self.counters["frames_refused"] += 1
            log.warning("bus frame refused: %s", exc)
            return
        gaps = self.counters["gaps"]
        # Only this greenlet delivers, so frames stay in order without a lock.
        ready = self.inbox.accept((frame.origin, frame.channel), frame.seq, frame, time.monotonic())
        if self.counters["gaps"] > gaps:
            stream, first, last = self.inbox.gap_log[-1]
            log.warning("bus gap: frames %s..%s of %s/%s were published while this worker "
                        "was not subscribed (%s gaps so far)", first, last, stream[0].hex(),
                        stream[1], self.counters["gaps"])
        for item in ready:
            self._deliver(item)

    def _deliver(self, frame: wire.Frame) -> None:
        handlers = self._handlers.get(frame.channel)
        if not handlers:
            return
        self.counters["frames_delivered"] += 1
        if self.counters["frames_delivered"] % _YIELD_EVERY == 0:
            gevent.sleep(0)
        for handler in handlers:
            try:
                handler(frame)
            except Exception:
                log.exception("bus handler for %s failed", frame.channel)


def connect(url: str, max_frame_size: int, namespace: str = "", max_unacked: int = 100_000,
            wait: float = _IO_TIMEOUT) -> RedisBusClient:
    """Create this worker's Redis bus client and wait (up to ``wait`` s) for its subscription."""
    client = RedisBusClient(url, max_frame_size, namespace, max_unacked)
    bus_client.install(client)
    if not client.live.wait(wait):
        log.error("bus: Redis at %s did not confirm the subscription within %s s; this worker "
                  "serves its own clients and keeps trying (frames to others are queued, up "
                  "to max_unacked)", client.url, wait)
    return client
