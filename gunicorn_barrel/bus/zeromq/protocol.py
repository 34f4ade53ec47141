"""The zeromq bus protocol, sans-io: what a bus client and the broadcaster do with frames.

No sockets and no clock here (h11-style): ``client.BusClient`` and
``broadcaster.Broadcaster`` own the sockets and the time and call these with
frames; tests/test_sequencing.py drives the same code with frames in memory.

A sender (``SenderProtocol``: a worker's bus client, or a side process's
send-only ``sio.local_emitter``) numbers its frames per channel, gives each
its ``base`` (``wire``) and keeps it until the broadcaster's heartbeat
acknowledges it. The broadcaster (``Published``) acknowledges per stream the
seq up to which it published every frame: never past a frame it did not get,
so the sender resends that one (to the same broadcaster after a delay, to a
new one at once), each resend with the sender's current base. A receiver
(``ClientProtocol``, a worker's: a sender that also receives) puts each
sender's frames in order; the heartbeat also tells it which first frames of
a stream were published before it subscribed (``sequencing.Inbox.published``).
"""
from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.sequencing import Inbox, Outbox, SeqTracker

# A frame unacknowledged this long while heartbeats arrive was lost on the
# way (a full queue): send it again; receivers drop the duplicate.
RESEND_AFTER = 1.0
BROADCASTER_ALIVE_WITHIN = 0.5


class SenderProtocol:
    """A bus sender's state: what it sent and awaits acknowledgement of."""

    def __init__(self, max_frame_size: int, max_unacked: int, counters: Counter[str]) -> None:
        self.max_frame_size = max_frame_size
        self.origin = uuid.uuid4().bytes
        self.counters = counters
        self.outbox: Outbox[list[bytes]] = Outbox(max_unacked, counters)
        self.epoch: bytes | None = None
        self.last_heartbeat = float("-inf")

    def frame(self, channel: str, payload: Mapping[str, Any], now: float) -> list[bytes]:
        """Encode a frame of ``channel`` to push, and keep it until acknowledged.

        Raises wire.WireError before taking a number: a number skipped by a
        frame that could not be encoded would be a gap for every receiver.
        """
        seq = self.outbox.peek_seq(channel)
        frame = wire.Frame(channel, self.origin, seq, payload, base=self.outbox.base(channel))
        parts = wire.encode(frame, self.max_frame_size)
        self.outbox.next_seq(channel)
        self.outbox.record(channel, seq, parts, now)
        self.counters["frames_pushed"] += 1
        return parts

    def acknowledged(self, heartbeat: wire.Frame, now: float) -> list[list[bytes]]:
        """The broadcaster's heartbeat, for its acknowledgements: the frames to push again."""
        self.last_heartbeat = now
        resend: list[list[bytes]] = []
        if heartbeat.origin != self.epoch:
            if self.epoch is not None:
                # A new broadcaster: what the old one never published goes again.
                self.counters["broadcaster_restarts_seen"] += 1
                resend = self._resend(now)
            self.epoch = heartbeat.origin
        for channel, seq in channels.acks_for(self.origin, heartbeat.payload):
            self.outbox.ack(channel, seq)
        return resend

    def stalled(self, now: float) -> list[list[bytes]]:
        """Frames to push again: unacknowledged for RESEND_AFTER while the broadcaster is alive."""
        if now - self.last_heartbeat >= BROADCASTER_ALIVE_WITHIN:
            return []
        return self._resend(now, RESEND_AFTER)

    def _resend(self, now: float, older_than: float | None = None) -> list[list[bytes]]:
        # Each with the base of now: frames acknowledged since it was first
        # sent are not waited for by a broadcaster or receiver new to the stream.
        return [wire.rebase(parts, self.outbox.base(channel))
                for channel, parts in self.outbox.to_resend_by_channel(now, older_than)]


class ClientProtocol(SenderProtocol):
    """A bus client's state: a sender's, and what it received, put in order."""

    def __init__(self, max_frame_size: int, gap_timeout: float, max_unacked: int,
                 counters: Counter[str]) -> None:
        super().__init__(max_frame_size, max_unacked, counters)
        self.inbox: Inbox[wire.Frame] = Inbox(gap_timeout, max_unacked, counters)
        # The broadcaster's federation counters, from its heartbeat (empty without federation).
        self.broadcaster_counters: dict[str, int] = {}

    def received(self, frame: wire.Frame, now: float) -> list[wire.Frame]:
        """A frame from the broadcaster (not a heartbeat): the frames now deliverable, in order."""
        return self.inbox.accept((frame.origin, frame.channel), frame.seq, frame.base, frame, now)

    def heartbeat(self, frame: wire.Frame, now: float) -> tuple[list[list[bytes]], list[wire.Frame]]:
        """The broadcaster's heartbeat: (frames to push again, frames now deliverable)."""
        resend = self.acknowledged(frame, now)
        shared = frame.payload.get("counters")
        if isinstance(shared, dict):
            self.broadcaster_counters = shared
        released: list[wire.Frame] = []
        for stream in self.inbox.waiting():
            known = channels.published_up_to(frame.payload, stream)
            if known is not None:
                released.extend(self.inbox.published(stream, *known))
        return resend, released

    def expire(self, now: float) -> list[wire.Frame]:
        """Give up on gaps that waited too long: the frames that releases."""
        return self.inbox.expire(now)


class Published:
    """What a broadcaster published of each stream: its heartbeat's acknowledgements.

    A stream is acknowledged up to its first hole: a frame lost before it
    reached us (a full queue on the way) must not be acknowledged by a later
    one. Below a frame's ``base`` the sender had everything acknowledged (by
    us, or a broadcaster before us), so nothing there is waited for. A hole
    more than ``max_ahead`` behind will never fill (the sender gave up on the
    frame): moved past. Streams silent for ``ttl`` are forgotten.
    """

    def __init__(self, ttl: float, max_ahead: int) -> None:
        self.ttl = ttl
        self.max_ahead = max_ahead
        self._streams: dict[tuple[bytes, bytes], SeqTracker] = {}

    def add(self, origin: bytes, topic: bytes, seq: int, base: int, now: float) -> None:
        """Frame ``seq`` (with ``base``) of ``origin``'s stream ``topic`` was just published."""
        key = (origin, bytes(topic))
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = SeqTracker(contiguous=min(base, seq) - 1)
        stream.skip_to(base - 1)
        stream.add(seq, now)
        if len(stream.ahead) > self.max_ahead:
            stream.skip_first_hole()

    def acks(self, now: float) -> dict[tuple[bytes, bytes], int]:
        """Per (origin, topic), the seq up to which every frame was published."""
        for key, stream in list(self._streams.items()):
            if now - stream.last_seen > self.ttl:
                del self._streams[key]
        return {key: stream.contiguous for key, stream in self._streams.items()}

    def tops(self) -> dict[tuple[bytes, bytes], int]:
        """Per (origin, topic) published past a hole, the highest seq published."""
        return {key: stream.top for key, stream in self._streams.items() if stream.top > stream.contiguous}
