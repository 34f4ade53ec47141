"""Emit from a side process of an instance whose bus is Redis (``bus = "redis://..."``).

One more sender on the Redis bus, as a worker is, by the workers' own rules
(``bus.redis.outbox``): frames numbered per channel with their base,
PUBLISHed in order to ``barrel:bus:<namespace>:<channel>`` (SPUBLISHed on a
Redis Cluster, ``bus.redis.layout``), each kept in a
replay window once Redis took it and published again when a receiver that
missed it asks (a NACK on the bus); an active channel's last frame is
followed by tick frames, so that a loss at the end of its traffic is noticed
too. Plain redis-py: one thread of its own owns the connections; emit() only
queues.

flush() waits until Redis took every message: each then reached every worker
subscribed at that moment, of every instance sharing the bus and namespace
(not only this one's); a worker whose subscription was down gets it again on
request while this emitter is open. Once the arbiter is gone, flush()
returns False at once.
"""
from __future__ import annotations

import logging
import os
import select
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from redis.backoff import NoBackoff
from redis.retry import Retry

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.redis import connection, layout
from gunicorn_barrel.bus.redis.connection import AnyClient
from gunicorn_barrel.bus.redis.outbox import TICKS_EVERY, RedisOutbox
from gunicorn_barrel.config.values import safe_url
from gunicorn_barrel.sio.emitting import EmitterBase, EmitterClosed

log = logging.getLogger("gunicorn_barrel.side")

_IO_TIMEOUT = 3.0
_TICK = 0.05  # the thread's period when idle
_BACKOFF_FIRST, _BACKOFF_MAX = 0.05, 1.0
_JOIN = 2.0


class RedisLocalEmitter(EmitterBase):
    """A sender on a Redis bus, for a side process of an instance that uses it."""

    def __init__(self, url: str, namespace: str = "", max_frame_size: int = 1024 * 1024,
                 channel: str = channels.DEFAULT_SIO_NAME, arbiter_pid: int | None = None,
                 max_queued: int = 100_000) -> None:
        super().__init__(channel)
        self.url = url
        self.max_frame_size = max_frame_size
        self.layout = layout.for_url(url, namespace)
        self.origin = uuid.uuid4().bytes
        self.counters: Counter[str] = Counter()
        self._out = RedisOutbox(self.origin, self.layout, max_frame_size, max_queued, self.counters)
        self._changed = threading.Condition()  # guards _out and the flags; notified on progress
        self._closed = self._stopping = self._orphaned = False
        self._retry_at = 0.0  # the thread's: no Redis call before (backoff)
        self._arbiter: int | None = None
        if arbiter_pid is not None:
            try:
                self._arbiter = os.pidfd_open(arbiter_pid)
            except ProcessLookupError:
                self._orphaned = True
        self._thread = threading.Thread(target=self._run, name="barrel-redis-emitter", daemon=True)
        self._thread.start()

    @property
    def unacked(self) -> int:
        """Messages Redis has not taken yet."""
        with self._changed:
            return sum(1 for item in self._out.queue if item.fresh)

    def _send(self, channel: str, payload: Mapping[str, Any]) -> None:
        with self._changed:
            if self._closed:
                raise EmitterClosed("the RedisLocalEmitter is closed")
            # Raises WireError / FrameTooLarge here, for a message that cannot travel.
            self._out.publish(channel, payload, time.monotonic())
            self._changed.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until Redis took every message; False if some still are not (at once when the
        arbiter is gone)."""
        with self._changed:
            self._changed.wait_for(lambda: self._orphaned or not self._out.queue, timeout)
            return not self._out.queue

    def close(self, timeout: float = 10.0) -> bool:
        """Flush (up to ``timeout`` s), then stop the thread and close the connections."""
        with self._changed:
            if self._closed:
                return not self._out.queue
        try:
            return self.flush(timeout)
        finally:
            with self._changed:
                self._closed = self._stopping = True
                self._changed.notify_all()
            self._thread.join(_JOIN)
            if self._arbiter is not None:
                os.close(self._arbiter)

    # -- the thread that owns the connections -------------------------------------------

    def _run(self) -> None:
        client: AnyClient | None = None
        pubsub: Any = None
        backoff, next_ticks = _BACKOFF_FIRST, 0.0
        try:
            while True:
                with self._changed:
                    # Woken by an emit, but not before a retry is due (no spinning while Redis is away).
                    self._changed.wait_for(self._due, _TICK)
                    if self._stopping:
                        return
                self._watch_arbiter()
                now = time.monotonic()
                if now < self._retry_at:
                    continue
                try:
                    if client is None:
                        client = connection.client(self.url, None, socket_timeout=_IO_TIMEOUT,
                                                   socket_connect_timeout=_IO_TIMEOUT,
                                                   retry=Retry(NoBackoff(), 0))
                    if pubsub is None:
                        pubsub = client.pubsub()
                        nacks = self.layout.nack_channel(self.origin)
                        if self.layout.sharded:
                            pubsub.ssubscribe(nacks)
                        else:
                            pubsub.subscribe(nacks)
                    self._read_nacks(pubsub)
                    if now >= next_ticks:
                        next_ticks = now + TICKS_EVERY
                        with self._changed:
                            self._out.ticks(now)
                    self._publish(client)
                    backoff = _BACKOFF_FIRST
                except connection.FAILURES as exc:
                    if backoff == _BACKOFF_FIRST:
                        log.warning("emitter: Redis at %s: %s; trying again", safe_url(self.url), exc)
                    _close(pubsub)
                    pubsub = None
                    if client is not None:
                        # A new client: a cluster's learns the layout again (a failover).
                        connection.close(client)
                        client = None
                    self._retry_at, backoff = now + backoff, min(backoff * 2, _BACKOFF_MAX)
        finally:
            _close(pubsub)
            if client is not None:
                connection.close(client)

    def _due(self) -> bool:
        return self._stopping or (bool(self._out.queue) and time.monotonic() >= self._retry_at)

    def _watch_arbiter(self) -> None:
        if self._arbiter is not None and not self._orphaned and select.select([self._arbiter], [], [], 0)[0]:
            with self._changed:
                self._orphaned = True
                self._changed.notify_all()

    def _publish(self, client: AnyClient) -> None:
        with self._changed:
            batch = self._out.take_batch()
        if not batch:
            return
        pipe = client.pipeline(transaction=False)
        send = pipe.spublish if self.layout.sharded else pipe.publish
        for item in batch:
            send(item.redis_channel, item.body)
        pipe.execute()
        with self._changed:
            self._out.done(batch)
            self._changed.notify_all()

    def _read_nacks(self, pubsub: Any) -> None:
        read = pubsub.get_sharded_message if self.layout.sharded else pubsub.get_message
        while (message := read(timeout=0)) is not None:
            if message.get("type") not in ("message", "smessage"):
                continue
            try:
                frame = wire.decode([self.layout.topic(message["channel"]), message["data"]],
                                    self.max_frame_size)
            except wire.WireError:
                self.counters["frames_refused"] += 1
                continue
            with self._changed:
                self._out.answer(frame.payload, time.monotonic())


def _close(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except connection.FAILURES:
            pass
