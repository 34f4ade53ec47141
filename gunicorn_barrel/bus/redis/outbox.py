"""What a sender on the Redis bus keeps, sans-io: its frames, from numbering to replay.

The workers' bus client (``sender.RedisSender``, a greenlet) and a side
process's ``sio.redis_local_emitter`` (a thread) send by these rules; each
owns its connection and its clock and calls these under its own order.

Frames are numbered per channel and queued; a frame leaves the queue once
Redis answered its PUBLISH (or it was given up on: the queue is bounded), so
each frame's ``base`` (``wire``) is the lowest seq of its channel still
queued. Batches go in queue order, again after an error. Published frames
stay in the replay window, queued again when a receiver that missed them
asks (a NACK, ``answer``). While a channel is active, a few tick frames
follow its last frame (``ticks``), so that a loss at the end of its traffic
is noticed too.
"""
from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any, NamedTuple

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.redis.layout import ChannelLayout
from gunicorn_barrel.bus.redis.replay import ReplayWindow
from gunicorn_barrel.bus.sequencing import FirstUnacked, Numbering

BATCH_FRAMES = 512
BATCH_BYTES = 1024 * 1024
REPLAY_FRAMES = 20_000
REPLAY_BYTES = 16 * 1024 * 1024
_REPLAY_AGAIN_AFTER = 0.2  # receivers asking for one gap within this get one replay
TICKS_EVERY = 0.5  # an active channel gets a tick frame this often...
_TICKS_FOR = 2.0  # ...for this long after its last frame


class Queued(NamedTuple):
    id: int  # tells what a batch covered, whatever was dropped meanwhile
    channel: str
    seq: int
    redis_channel: bytes
    body: bytes
    fresh: bool  # False for a replay (already in the window) or a NACK


class RedisOutbox:
    """One sender's frames: numbered, queued until Redis took them, then kept for replay."""

    def __init__(self, origin: bytes, layout: ChannelLayout, max_frame_size: int, max_queued: int,
                 counters: Counter[str]) -> None:
        self.origin = origin
        self.layout = layout
        self.max_frame_size = max_frame_size
        self.max_queued = max_queued
        self.counters = counters
        self.queue: deque[Queued] = deque()
        self.window: ReplayWindow[tuple[bytes, bytes]] = ReplayWindow(REPLAY_FRAMES, REPLAY_BYTES)
        self._numbering = Numbering()
        self._unpublished = FirstUnacked()  # the queued fresh frames' seqs, per channel
        self._ids = itertools.count(1)
        self._tried_up_to = 0  # highest id taken at least once (later takes are resends)
        self._active: dict[str, float] = {}  # channel -> when it last had a frame of ours

    def publish(self, channel: str, payload: Mapping[str, Any], now: float) -> None:
        """Queue a frame of ``channel``; ticks follow it (``ticks``).

        Raises wire.WireError before taking a number: a number skipped by a
        frame that could not be encoded would be a gap for every receiver.
        """
        self._frame(channel, payload)
        self._active[channel] = now

    def ticks(self, now: float) -> None:
        """Queue a tick on each channel active lately (call every TICKS_EVERY seconds).

        A tick is a frame of the channel's sequence that no handler sees: a
        receiver that missed the channel's last frames sees the gap it leaves.
        """
        for channel, last in list(self._active.items()):
            if now - last > _TICKS_FOR:
                del self._active[channel]
            else:
                self._frame(channel, {channels.TICK_KEY: 1})

    def _frame(self, channel: str, payload: Mapping[str, Any]) -> None:
        seq = self._numbering.peek(channel)
        frame = wire.Frame(channel, self.origin, seq, payload, base=self.base(channel, seq))
        topic, body = wire.encode(frame, self.max_frame_size)
        self._numbering.take(channel)
        self.enqueue(channel, seq, self.layout.frame_channel(topic, self.origin), body)

    def base(self, channel: str, seq: int) -> int:
        """The ``base`` of frame ``seq`` of ``channel``, about to be queued."""
        done_below = self.queue[0].id if self.queue else 2**63  # ids below left the queue
        return self._unpublished.base(channel, seq, done_below)

    def enqueue(self, channel: str, seq: int, redis_channel: bytes, body: bytes, fresh: bool = True) -> None:
        if len(self.queue) >= self.max_queued:
            # Bounded memory while Redis is away: the oldest frame is given up
            # (its receivers count the gap when they give up waiting for it).
            self.queue.popleft()
            self.counters["frames_unrecoverable"] += 1
        queued = Queued(next(self._ids), channel, seq, redis_channel, body, fresh)
        if fresh:
            self._unpublished.sent(channel, seq, queued.id)
        self.queue.append(queued)

    def answer(self, nack_payload: Mapping[str, Any], now: float) -> None:
        """A NACK on the bus: if it asks this sender, queue again what the window kept of it."""
        if nack_payload.get("origin") != self.origin:
            return  # another sender's gap
        nack = channels.Nack.from_payload(nack_payload)
        if nack is None:
            self.counters["frames_refused"] += 1
            return
        # Older frames than the window's size cannot be kept: count them, look up the rest.
        oldest = max(nack.first, nack.last - self.window.max_frames + 1)
        self.counters["replay_misses"] += oldest - nack.first
        found, gone = self.window.get(nack.channel, oldest, nack.last, now, _REPLAY_AGAIN_AFTER)
        for seq, (redis_channel, body) in found:
            self.enqueue(nack.channel, seq, redis_channel, body, fresh=False)
        self.counters["frames_replayed"] += len(found)
        self.counters["replay_misses"] += gone

    def take_batch(self) -> list[Queued]:
        """The next frames to PUBLISH, in order, bounded in frames and bytes (again after a failure)."""
        batch: list[Queued] = []
        size = 0
        for item in itertools.islice(self.queue, BATCH_FRAMES):
            if batch and size + len(item.body) > BATCH_BYTES:
                break
            batch.append(item)
            size += len(item.body)
        if batch:
            self.counters["frames_resent"] += sum(1 for item in batch if item.id <= self._tried_up_to)
            self._tried_up_to = max(self._tried_up_to, batch[-1].id)
        return batch

    def done(self, batch: list[Queued]) -> None:
        """Redis answered every PUBLISH of ``batch``: out of the queue, into the replay window."""
        last = batch[-1].id
        # enqueue() may have dropped old frames meanwhile: pop by id, not by count.
        while self.queue and self.queue[0].id <= last:
            self.queue.popleft()
        for item in batch:
            if item.fresh:
                self.window.add(item.channel, item.seq, (item.redis_channel, item.body), len(item.body))
                self.counters["frames_published"] += 1
