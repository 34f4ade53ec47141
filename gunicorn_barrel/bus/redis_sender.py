"""The sending half of the Redis bus client: a queue, one greenlet, pipelined PUBLISHes.

publish() only queues, so emitting never waits for Redis. One greenlet sends
the queue in batches on one connection, so a sender's frames reach Redis in
order. A frame leaves the queue when Redis answered its PUBLISH; after an
error the same frames go again on a new connection (a frame Redis had
published before the answer was lost then goes twice; receivers drop the
copy). Published frames stay in the replay window for receivers that missed
them.
"""
from __future__ import annotations

import collections
import itertools
import logging
from collections import Counter
from typing import NamedTuple

import gevent
import redis
from gevent.event import Event
from redis.exceptions import RedisError

from gunicorn_barrel.bus.replay import ReplayWindow

log = logging.getLogger("gunicorn_barrel.bus")

_BATCH_FRAMES = 512
_BATCH_BYTES = 1024 * 1024
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
_REPLAY_AGAIN_AFTER = 0.2  # receivers asking for one gap within this get one replay


class Queued(NamedTuple):
    id: int  # tells what a batch covered, whatever was dropped meanwhile
    channel: str
    seq: int
    redis_channel: bytes
    body: bytes
    fresh: bool  # False for a replay (already in the window)


class RedisSender:
    """Queue and publish one worker's frames; keep the published ones for replay."""

    def __init__(self, client: redis.Redis, url: str, max_queued: int, counters: Counter[str],
                 window: ReplayWindow[tuple[bytes, bytes]]) -> None:
        self.client = client
        self.url = url
        self.max_queued = max_queued
        self.counters = counters
        self.window = window
        self.queue: collections.deque[Queued] = collections.deque()
        self._ids = itertools.count(1)
        self._tried_up_to = 0  # highest id sent at least once (later sends are resends)
        self._wake = Event()
        self.idle = Event()
        self.idle.set()
        self.stopping = False

    def enqueue(self, channel: str, seq: int, redis_channel: bytes, body: bytes, fresh: bool = True) -> None:
        if len(self.queue) >= self.max_queued:
            # Bounded memory while Redis is away: the oldest frame is given up
            # (its receivers count the gap when they give up waiting for it).
            self.queue.popleft()
            self.counters["frames_unrecoverable"] += 1
        self.queue.append(Queued(next(self._ids), channel, seq, redis_channel, body, fresh))
        self.idle.clear()
        self._wake.set()

    def replay(self, channel: str, first: int, last: int, now: float) -> None:
        """Publish again the kept frames first..last of ``channel`` (a receiver missed them)."""
        found, gone = self.window.get(channel, first, last, now, _REPLAY_AGAIN_AFTER)
        for seq, (redis_channel, body) in found:
            self.enqueue(channel, seq, redis_channel, body, fresh=False)
        self.counters["frames_replayed"] += len(found)
        self.counters["replay_misses"] += gone

    def run(self) -> None:
        """The sending greenlet: until stopped and the queue is empty."""
        backoff = _BACKOFF_FIRST
        failing = False
        while True:
            if not self.queue:
                self.idle.set()
                if self.stopping:
                    return
                self._wake.clear()
                self._wake.wait()
                continue
            batch = self.take_batch()
            try:
                self._publish(batch)
            except (RedisError, OSError) as exc:
                self.counters["bus_publish_failures"] += 1
                if not failing:
                    log.warning("bus: cannot publish to Redis at %s (%s); %s frames kept, "
                                "retrying", self.url, exc, len(self.queue))
                failing = True
                self.client.connection_pool.disconnect()
                gevent.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            if failing:
                log.warning("bus: publishing to Redis at %s again", self.url)
            failing, backoff = False, _BACKOFF_FIRST
            self._done(batch)

    def take_batch(self) -> list[Queued]:
        batch: list[Queued] = []
        size = 0
        for item in itertools.islice(self.queue, _BATCH_FRAMES):
            if batch and size + len(item.body) > _BATCH_BYTES:
                break
            batch.append(item)
            size += len(item.body)
        return batch

    def _publish(self, batch: list[Queued]) -> None:
        self.counters["frames_resent"] += sum(1 for item in batch if item.id <= self._tried_up_to)
        self._tried_up_to = max(self._tried_up_to, batch[-1].id)
        pipe = self.client.pipeline(transaction=False)
        for item in batch:
            pipe.publish(item.redis_channel, item.body)
        pipe.execute()

    def _done(self, batch: list[Queued]) -> None:
        last = batch[-1].id
        # enqueue() may have dropped old frames meanwhile: pop by id, not by count.
        while self.queue and self.queue[0].id <= last:
            self.queue.popleft()
        for item in batch:
            if item.fresh:
                self.window.add(item.channel, item.seq, (item.redis_channel, item.body), len(item.body))
                self.counters["frames_published"] += 1
