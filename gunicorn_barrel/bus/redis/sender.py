"""The sending half of the Redis bus client: one greenlet, pipelined PUBLISHes.

publish() only queues (``outbox.RedisOutbox``: numbering, bases, the bounded
queue, replay, ticks), so emitting never waits for Redis. One greenlet sends
the queue in batches on one connection, so a sender's frames reach Redis in
order. A frame leaves the queue when Redis answered its PUBLISH; after an
error the same frames go again on a new connection (a frame Redis had
published before the answer was lost then goes twice; receivers drop the
copy).
"""
from __future__ import annotations

import logging
from collections import Counter

import gevent
import redis
from gevent.event import Event
from redis.exceptions import RedisError

from gunicorn_barrel.bus.redis.outbox import Queued, RedisOutbox

log = logging.getLogger("gunicorn_barrel.bus")

_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0


class RedisSender(RedisOutbox):
    """Queue and publish one worker's frames (from a greenlet of its own)."""

    def __init__(self, client: redis.Redis, url: str, origin: bytes, prefix: bytes, max_frame_size: int,
                 max_queued: int, counters: Counter[str]) -> None:
        super().__init__(origin, prefix, max_frame_size, max_queued, counters)
        self.client = client
        self.url = url
        self._wake = Event()
        self.idle = Event()
        self.idle.set()
        self.stopping = False

    def enqueue(self, channel: str, seq: int, redis_channel: bytes, body: bytes, fresh: bool = True) -> None:
        super().enqueue(channel, seq, redis_channel, body, fresh)
        self.idle.clear()
        self._wake.set()

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
            self.done(batch)

    def _publish(self, batch: list[Queued]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for item in batch:
            pipe.publish(item.redis_channel, item.body)
        pipe.execute()
