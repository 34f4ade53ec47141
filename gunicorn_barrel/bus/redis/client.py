"""The per-worker bus client over Redis pub/sub (the ``bus`` setting is a Redis URL).

Same interface and frames as the zmq BusClient (``wire.encode``: origin, a
per-channel seq, msgpack), but no broadcaster: each bus channel is the Redis
channel ``barrel:bus:<namespace>:<channel>`` and every worker of every
instance PSUBSCRIBEs to ``barrel:bus:<namespace>:*``. On a Redis Cluster
(``redis+cluster://``) frames go by sharded pub/sub and a worker SSUBSCRIBEs
to the channels it has handlers for, on the masters serving them
(``layout``, ``cluster``).

Sending (``sender``, ``outbox``): publish() only queues; one greenlet
pipelines the queue to Redis and keeps a frame until Redis answered, then in
a replay window.

Receiving: Redis pub/sub keeps nothing for a subscriber that is away (Redis
restarted, unreachable, or this subscriber cut off for falling behind), so a
worker can miss frames. It notices when a sender's next frame arrives with a
later seq, holds the later frames back and asks that sender (a NACK on the
bus channel ``\x00nack``) to publish the missing ones again from its replay
window (``replay``). The first frames it gets of a sender it never heard
may follow others that Redis had not yet published when they were sent (their
``base``): it asks for those too, and so may get a few frames published just
before it subscribed (``sequencing``). While a channel is active, its sender follows its last
frame with a few "tick" frames (never delivered to handlers), so a loss at
the end of its traffic is noticed too. What cannot be recovered within
``gap_timeout`` is counted (``gaps``, ``frames_lost``) and skipped; each
resubscription counts in ``bus_reconnects``.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import gevent
import gevent.lock
from gevent.event import Event
from redis.backoff import NoBackoff
from redis.retry import Retry

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.api import BusClosed, Handler, call_handlers
from gunicorn_barrel.bus.redis import cluster, connection, layout
from gunicorn_barrel.bus.redis.outbox import TICKS_EVERY
from gunicorn_barrel.bus.redis.pubsub import live_messages
from gunicorn_barrel.bus.redis.replay import GapInbox, NackSchedule
from gunicorn_barrel.bus.redis.sender import RedisSender
from gunicorn_barrel.bus.sequencing import Stream
from gunicorn_barrel.config.values import safe_url

log = logging.getLogger("gunicorn_barrel.bus")

_IO_TIMEOUT = 3.0  # a Redis command unanswered this long means the link is dead
_IDLE_PING = 1.0  # the subscriber PINGs after this many silent seconds
_TICK = 0.05  # the recovery greenlet's period: expire gaps, ask again for missing frames
_NACK_FIRST, _NACK_MOST = 0.25, 2.0  # ask again for a gap still open after 0.25 s, 0.5, 1, 2, 2...
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
_CLOSE_FLUSH = 2.0  # seconds close() waits for queued frames to be published


class RedisBusClient:
    """A worker's connection to the bus through Redis."""

    def __init__(self, url: str, max_frame_size: int, namespace: str = "",
                 max_unacked: int = 100_000, gap_timeout: float = 5.0) -> None:
        self.url = safe_url(url)
        self.max_frame_size = max_frame_size
        self.origin = uuid.uuid4().bytes
        self.pid = os.getpid()
        self.counters: Counter[str] = Counter()
        self.layout = layout.for_url(url, namespace)
        self.inbox: GapInbox[wire.Frame] = GapInbox(gap_timeout, max_unacked, self.counters)
        self.live = Event()  # set while the subscription is confirmed
        self._handlers: dict[str, list[Handler]] = {}
        self._nacks = NackSchedule(_NACK_FIRST, _NACK_MOST)
        # The listener and the recovery greenlet both deliver: one at a time keeps the order.
        self._in_order = gevent.lock.Semaphore()
        self._closed = False
        self._subscribed: set[str] = set()  # a cluster subscription's channels
        self._resubscribing = False  # a cluster subscription ended to add channels
        self._url = url
        self._options: dict[str, Any] = {
            "socket_timeout": _IO_TIMEOUT,
            "socket_connect_timeout": _IO_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),  # the sender resends itself, in order
        }
        self.sender = RedisSender(lambda: connection.client(url, 1, **self._options), self.url, self.origin,
                                  self.layout, max_frame_size, max_unacked, self.counters)
        self._listener = gevent.spawn(self._listen_forever)
        self._greenlets = [self._listener, gevent.spawn(self.sender.run), gevent.spawn(self._recover_forever)]

    # -- the interface of bus.api.Bus ----------------------------------------

    def wait_live(self, timeout: float | None = None) -> bool:
        """Wait until Redis confirmed this worker's subscription."""
        return bool(self.live.wait(timeout))

    def wait_subscribed(self, wait: float = _IO_TIMEOUT) -> None:
        """Wait (up to ``wait`` s) for the subscription; log why this worker goes on without it."""
        if not self.live.wait(wait):
            log.error("bus: Redis at %s did not confirm the subscription within %s s; this worker "
                      "serves its own clients and keeps trying (frames to others are queued, up "
                      "to max_unacked)", self.url, wait)

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler(frame)`` in the listener greenlet for each frame of ``channel``."""
        channels.check_user_channel(channel)
        new = channel not in self._handlers
        self._handlers.setdefault(channel, []).append(handler)
        # One server: every channel of the namespace is already subscribed (one
        # pattern), so a handler added now hears every frame published after this
        # call. A cluster: a new channel is subscribed by name, so subscribe again
        # and (unless called from the listener itself) wait for it, as long as a
        # command may take.
        if new and self.layout.sharded and self.live.is_set() and gevent.getcurrent() is not self._listener:
            deadline = time.monotonic() + _IO_TIMEOUT
            while not (channel in self._subscribed and self.live.is_set()) and time.monotonic() < deadline:
                gevent.sleep(0.01)

    def publish(self, channel: str, payload: Mapping[str, Any]) -> None:
        """Queue ``payload`` for every worker subscribed to ``channel``; never blocks.

        Raises wire.FrameTooLarge / wire.WireError for a payload that cannot
        travel, and BusClosed after close().
        """
        if self._closed:
            raise BusClosed("the barrel bus client is closed")
        channels.check_user_channel(channel)
        if isinstance(payload, dict) and channels.TICK_KEY in payload:
            raise ValueError("the payload key '\\x00tick' is reserved for the bus")
        self.sender.publish(channel, payload, time.monotonic())
        self.counters["frames_pushed"] += 1

    def close(self) -> None:
        """Publish what is queued (for up to 2 s), stop the greenlets, close the connections."""
        if self._closed:
            return
        self._closed = True
        self.sender.stopping = True
        if self.sender.queue and not self.sender.idle.wait(_CLOSE_FLUSH):
            log.warning("bus: %s frames not published to Redis at %s before exit",
                        len(self.sender.queue), self.url)
        gevent.killall(self._greenlets, block=True, timeout=1.0)
        self.sender.close()
        # At debug level: a worker logs all its counters at exit (worker.context).
        log.debug("bus client %s closed; counters %s", self.pid, dict(self.counters))

    # -- receiving -------------------------------------------------------------

    def _listen_forever(self) -> None:
        backoff = _BACKOFF_FIRST
        was_live = failing = False
        while not self._closed:
            try:
                self._listen_once(was_live, failing)
            except connection.FAILURES as exc:
                if self.live.is_set():
                    log.warning("bus: lost the subscription to Redis at %s (%s); reconnecting. "
                                "Frames published until it is back are lost here (counted "
                                "in gaps/frames_lost)", self.url, exc)
                elif not failing:
                    log.error("bus: cannot subscribe at Redis %s (%s); retrying. This worker "
                              "serves its own clients meanwhile", self.url, exc)
                failing = True
                self._resubscribing = False  # not planned any more: a failure, with its backoff
            except Exception:
                log.exception("bus: the Redis listener failed; restarting it")
                self._resubscribing = False
            if self.live.is_set():
                was_live, failing, backoff = True, False, _BACKOFF_FIRST
                self.live.clear()
            if not self._resubscribing:
                gevent.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    def _listen_once(self, was_live: bool, failing: bool) -> None:
        for message in self._messages():
            kind = message.get("type")
            if kind in ("pmessage", "smessage"):
                self._receive(message["channel"], message["data"])
            elif kind in ("psubscribe", "subscribed"):
                if self._resubscribing:
                    pass  # a planned resubscription (new channels), not a reconnect
                elif was_live:
                    self.counters["bus_reconnects"] += 1
                    log.warning("bus: subscription to Redis at %s is back", self.url)
                elif failing:
                    log.warning("bus: Redis at %s is reachable; subscribed", self.url)
                self._resubscribing = False
                self.live.set()

    def _messages(self) -> Iterator[dict[str, Any]]:
        """What the subscription receives: one pattern on one server, shard channels on a cluster."""
        if self.layout.sharded:
            self._subscribed = set(self._handlers)
            names = self.layout.subscriptions(self._subscribed, self.origin)
            yield from cluster.sharded_messages(self._url, names, self._must_stop, _IO_TIMEOUT, _IDLE_PING,
                                                _IDLE_PING, **self._options)
            return
        sub = connection.client(self._url, 1, **self._options)
        pubsub = sub.pubsub()
        try:
            pubsub.psubscribe(self.layout.prefix + b"*")
            yield from live_messages(pubsub, self.live, lambda: self._closed, _IO_TIMEOUT, _IDLE_PING,
                                     poll=_IDLE_PING)
        finally:
            pubsub.close()
            connection.close(sub)

    def _must_stop(self) -> bool:
        """Whether the cluster subscription ends: closing, or channels to add."""
        if self._closed:
            return True
        if self.live.is_set() and not self._handlers.keys() <= self._subscribed:
            self._resubscribing = True
            return True
        return False

    def _receive(self, channel: bytes, body: bytes) -> None:
        try:
            frame = wire.decode([self.layout.topic(channel), body], self.max_frame_size)
        except wire.WireError as exc:
            self.counters["frames_refused"] += 1
            log.warning("bus frame refused: %s", exc)
            return
        if frame.channel == channels.NACK:
            self.sender.answer(frame.payload, time.monotonic())
            return
        stream = (frame.origin, frame.channel)
        with self._in_order:
            for ready in self.inbox.accept(stream, frame.seq, frame.base, frame, time.monotonic()):
                self._deliver(ready)
        gap = self.inbox.gap(stream)
        if gap is not None:
            self._ask(stream, *gap, time.monotonic())

    def _deliver(self, frame: wire.Frame) -> None:
        handlers = self._handlers.get(frame.channel)
        if handlers and channels.TICK_KEY not in frame.payload:
            call_handlers(handlers, frame, self.counters)

    # -- recovery --------------------------------------------------------------

    def _ask(self, stream: Stream, first: int, last: int, now: float) -> None:
        """Ask the sender of ``stream`` to publish first..last again (unless asked just now)."""
        if not self.live.is_set() or not self._nacks.due(stream, first, last, now):
            return  # a request made while unsubscribed could not be answered here
        self.counters["nacks_sent"] += 1
        nack = channels.Nack(stream[0], stream[1], first, last).payload()
        topic, body = wire.encode(wire.Frame(channels.NACK, self.origin, 0, nack), self.max_frame_size)
        self.sender.enqueue(channels.NACK, 0, self.layout.nack_channel(stream[0]), body, fresh=False)

    def _recover_forever(self) -> None:
        """Skip gaps that waited gap_timeout, ask again for open ones, tick active channels."""
        next_ticks = 0.0
        while not self._closed:
            gevent.sleep(_TICK)
            now = time.monotonic()
            skipped = self.counters["gaps"]
            with self._in_order:
                for frame in self.inbox.expire(now):
                    self._deliver(frame)
            if self.counters["gaps"] > skipped:
                stream, first, last = self.inbox.gap_log[-1]
                log.warning("bus gap: frames %s..%s of %s/%s could not be recovered (%s gaps so far)",
                            first, last, stream[0].hex(), stream[1], self.counters["gaps"])
            open_gaps = list(self.inbox.gaps())
            self._nacks.forget_closed({stream for stream, _first, _last in open_gaps})
            for stream, first, last in open_gaps:
                self._ask(stream, first, last, now)
            if now >= next_ticks:
                next_ticks = now + TICKS_EVERY
                self.sender.ticks(now)


def connect(url: str, max_frame_size: int, namespace: str = "", max_unacked: int = 100_000,
            gap_timeout: float = 5.0) -> RedisBusClient:
    """Create this worker's Redis bus client; it subscribes once this greenlet yields.

    Register the handlers first (``BusPort.connect``), then ``wait_subscribed``:
    on a cluster the first subscription then covers every channel at once.
    """
    return RedisBusClient(url, max_frame_size, namespace, max_unacked, gap_timeout)
