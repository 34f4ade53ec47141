"""The sending half of the Redis bus client: one greenlet, pipelined PUBLISHes.

publish() only queues (``outbox.RedisOutbox``: numbering, bases, the bounded
queue, replay, ticks), so emitting never waits for Redis. One greenlet sends
the queue in batches on one connection (on a cluster: one per master, each
master's part of a batch in order), so a sender's frames reach Redis in
order. A frame leaves the queue when Redis answered its PUBLISH (SPUBLISH);
after an error the same frames go again on a new client (a cluster client
learns the layout again: after a failover the promoted replica gets them).
A frame Redis had published before the answer was lost then goes twice;
receivers drop the copy.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import gevent
from gevent.event import Event

from gunicorn_barrel.bus.redis import connection
from gunicorn_barrel.bus.redis.connection import AnyClient
from gunicorn_barrel.bus.redis.layout import ChannelLayout
from gunicorn_barrel.bus.redis.outbox import Queued, RedisOutbox

log = logging.getLogger("gunicorn_barrel.bus")

_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0


class RedisSender(RedisOutbox):
    """Queue and publish one worker's frames (from a greenlet of its own)."""

    def __init__(self, connect: Callable[[], AnyClient], url: str, origin: bytes, layout: ChannelLayout,
                 max_frame_size: int, max_queued: int, counters: Counter[str]) -> None:
        super().__init__(origin, layout, max_frame_size, max_queued, counters)
        self.connect = connect  # a new client: at start, and after each error
        self.client: AnyClient | None = None
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
            except connection.FAILURES as exc:
                self.counters["bus_publish_failures"] += 1
                if not failing:
                    log.warning("bus: cannot publish to Redis at %s (%s); %s frames kept, "
                                "retrying", self.url, exc, len(self.queue))
                failing = True
                self.close()
                gevent.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            if failing:
                log.warning("bus: publishing to Redis at %s again", self.url)
            failing, backoff = False, _BACKOFF_FIRST
            self.done(batch)

    def _publish(self, batch: list[Queued]) -> None:
        if self.client is None:
            self.client = self.connect()
        pipe = self.client.pipeline(transaction=False)
        send = pipe.spublish if self.layout.sharded else pipe.publish
        for item in batch:
            send(item.redis_channel, item.body)
        pipe.execute()

    def close(self) -> None:
        """Drop the client and its connections (the next batch makes a new one)."""
        client, self.client = self.client, None
        if client is not None:
            connection.close(client)
