"""Federation link protocol and state, sans-io: which frames are new, what a link owes.

Two broadcasters (or a broadcaster and an emitter) joined by a federation link
exchange two kinds of single-part zeromq messages (big-endian)::

    HELLO  b"H" | epoch (16) | flags (1) | ack epoch (16, zeros: none) | ack seq u64 | node
    DATA   b"D" | epoch (16) | link seq u64 | base u64 | topic length u8 | topic | body

Single-part on purpose: a multipart message cut by a dropped connection
tripped an assertion inside libzmq 4.3.5 (fq.cpp ``!_more``) on the receiving
side; one part is always whole.
``epoch`` is random per process start; ``node`` names the sender for good (its
public key, z85); ``flags`` is b"1" for a peer that wants frames, b"0" for a
send-only emitter. Each direction numbers its DATA messages (link seq); the
receiver acknowledges the highest contiguous one in its HELLO (sent every
``HELLO_INTERVAL``), and ``base`` tells it that everything below was already
acknowledged (so a receiver that restarted knows where to start). The sender
keeps what is unacknowledged, up to a bound, and sends it again when the
receiver is new (a new epoch) or when it stays unacknowledged while the peer
is alive. ``topic`` and ``body`` are a bus frame (``wire``) unchanged; which
channels cross hosts is ``channels.crosses_hosts``.

Which side dialed does not matter here: each end keeps an ``Outgoing`` per
configured peer from its own start (the peers it dials and the peers expected
to dial it), held (``blocked``) until that peer's HELLO, so frames made before
a link first comes up, or while it is down, reach the peer when it does.

Any topology is loop-free by flooding with de-duplication: a broadcaster
publishes and forwards a frame only the first time it sees its (origin,
channel, seq) (``SeenFilter``).
"""
from __future__ import annotations

import dataclasses
import struct
from collections import Counter
from collections.abc import Callable, Sequence

from gunicorn_barrel.bus.sequencing import SeqTracker, Unacked

HELLO = b"H"
DATA = b"D"
EPOCH_SIZE = 16
HELLO_INTERVAL = 0.1
# A peer not heard from for this long is taken as down (no resend timer).
PEER_ALIVE_WITHIN = 1.0
# Sent and unacknowledged this long while the peer is alive: lost on the way.
RESEND_AFTER = 1.0

_HELLO = struct.Struct("!1s16s1s16sQ")
_DATA = struct.Struct("!1s16sQQB")
_NO_EPOCH = bytes(EPOCH_SIZE)


class LinkMessageError(ValueError):
    """A link message that does not follow the protocol."""


@dataclasses.dataclass(frozen=True)
class Hello:
    epoch: bytes
    node: str
    wants_data: bool
    ack_epoch: bytes
    ack_seq: int


@dataclasses.dataclass(frozen=True)
class Data:
    epoch: bytes
    seq: int
    base: int
    frame: list[bytes]  # [topic, body], checked by wire before any use


def encode_hello(hello: Hello) -> bytes:
    flags = b"1" if hello.wants_data else b"0"
    return _HELLO.pack(HELLO, hello.epoch, flags, hello.ack_epoch or _NO_EPOCH,
                       hello.ack_seq) + hello.node.encode("ascii")


def encode_data(epoch: bytes, seq: int, base: int, frame: Sequence[bytes]) -> bytes:
    topic, body = frame
    return b"".join((_DATA.pack(DATA, epoch, seq, base, len(topic)), topic, body))


def decode(message: bytes) -> Hello | Data:
    """Parse a link message; raise LinkMessageError on anything else."""
    message = bytes(message)
    kind = message[:1]
    try:
        if kind == HELLO:
            _kind, epoch, flags, ack_epoch, ack_seq = _HELLO.unpack_from(message)
            node = message[_HELLO.size:]
            if flags not in (b"0", b"1") or not 0 < len(node) <= 64:
                raise LinkMessageError("bad HELLO fields")
            return Hello(epoch, node.decode("ascii"), flags == b"1",
                         b"" if ack_epoch == _NO_EPOCH else ack_epoch, ack_seq)
        if kind == DATA:
            _kind, epoch, seq, base, topic_len = _DATA.unpack_from(message)
            topic_end = _DATA.size + topic_len
            if topic_len == 0 or len(message) <= topic_end:
                raise LinkMessageError("DATA without a topic and a body")
            return Data(epoch, seq, base, [message[_DATA.size:topic_end], message[topic_end:]])
    except (struct.error, UnicodeDecodeError) as exc:
        raise LinkMessageError(f"bad field: {exc}") from None
    raise LinkMessageError(f"unknown message kind {kind!r} ({len(message)} bytes)")


class Outgoing:
    """One direction of a link, sending side: numbered messages kept until acknowledged."""

    def __init__(self, epoch: bytes, limit: int, counters: Counter[str]) -> None:
        self.epoch = epoch
        self.limit = limit
        self.counters = counters
        self.seq = 0
        # link seq -> frame parts
        self.unacked: Unacked[list[bytes]] = Unacked()
        # Until the peer said hello, and after a send failed, new frames wait
        # behind the unsent ones (from link seq resume_from on): the peer gets
        # each sender's frames in order.
        self.blocked = True
        self.resume_from = 1
        # When the peer last acknowledged something (or we had nothing to acknowledge):
        # timed resends only when acknowledgements stall, not behind a busy peer's backlog.
        self.progress_at = 0.0
        # An origin (an emitter) may refresh a frame before it goes again (its wire base);
        # a broadcaster forwards others' frames unchanged.
        self.refresh: Callable[[list[bytes]], list[bytes]] | None = None

    def add(self, frame: Sequence[bytes], now: float) -> bytes | None:
        """Number ``frame`` and keep it; return the DATA message to send now (None: blocked)."""
        self.seq += 1
        if not self.unacked:
            self.progress_at = now
        self.unacked.add(self.seq, list(frame), now)
        while len(self.unacked) > self.limit:
            # The bound: the oldest frame can no longer be resent on this link.
            self.unacked.drop_oldest()
            self.counters["federation_frames_dropped"] += 1
        return None if self.blocked else encode_data(self.epoch, self.seq, self.base(), frame)

    def block(self, from_seq: int | None = None) -> None:
        """Hold new frames: a send failed at ``from_seq``, or (None) the connection is new
        and what it carried before may be lost: everything unacknowledged goes again."""
        first = next(iter(self.unacked), self.seq + 1) if from_seq is None else from_seq
        self.resume_from = min(self.resume_from, first) if self.blocked else first
        self.blocked = True

    def unblock(self, now: float) -> list[tuple[int, bytes]]:
        """(link seq, DATA message) to send, in order, to resume; the caller blocks again on a failure."""
        self.blocked = False
        base = self.base()
        out = [(seq, encode_data(self.epoch, seq, base, self._again(frame)))
               for seq, frame in self.unacked.due(now, from_seq=self.resume_from)]
        self.counters["federation_frames_resent"] += len(out)
        return out

    def _again(self, frame: list[bytes]) -> list[bytes]:
        return frame if self.refresh is None else self.refresh(frame)

    def discard(self) -> None:
        """Forget what is kept, uncounted: the peer turned out to want no frames (an emitter)."""
        self.unacked.clear()

    def base(self) -> int:
        """Everything below this was acknowledged (or dropped past the bound)."""
        return next(iter(self.unacked)) if self.unacked else self.seq + 1

    def ack(self, ack_epoch: bytes, seq: int, now: float = 0.0) -> None:
        if ack_epoch != self.epoch:
            return  # an acknowledgement for a previous run of ours
        if self.unacked.ack(seq):
            self.progress_at = now

    def stalled(self, now: float) -> bool:
        """Frames wait and nothing was acknowledged for RESEND_AFTER."""
        return bool(self.unacked) and now - self.progress_at >= RESEND_AFTER

    def resend(self, now: float, older_than: float | None = None) -> list[bytes]:
        """DATA messages to send again, oldest first (all, or those unacknowledged for a while)."""
        base = self.base()
        out = [encode_data(self.epoch, seq, base, self._again(frame))
               for seq, frame in self.unacked.due(now, older_than)]
        self.counters["federation_frames_resent"] += len(out)
        return out


class Incoming:
    """One direction of a link, receiving side: what to acknowledge."""

    _MAX_AHEAD = 100_000

    def __init__(self) -> None:
        self.epoch = b""
        self._seen = SeqTracker()

    @property
    def contiguous(self) -> int:
        """The link seq up to which everything arrived: the acknowledgement."""
        return self._seen.contiguous

    def received(self, epoch: bytes, seq: int, base: int) -> None:
        if epoch != self.epoch:
            # A sender we never heard, or one that restarted: its numbering is new.
            self.epoch, self._seen = epoch, SeqTracker()
        self._seen.skip_to(base - 1)
        self._seen.add(seq)
        if len(self._seen.ahead) > self._MAX_AHEAD:  # bounded: the sender resends the hole
            self._seen.forget_ahead()


class SeenFilter:
    """Which (origin, channel, seq) frames were already handled here; bounded memory.

    Per stream: the seqs seen (``SeqTracker``). Frames may arrive out of order
    by up to ``window`` seqs (other paths, resends after a link healed); a
    frame older than that is taken as seen.
    """

    def __init__(self, window: int = 10_000, ttl: float = 600.0) -> None:
        self.window = window
        self.ttl = ttl
        self._streams: dict[tuple[bytes, bytes], SeqTracker] = {}

    def first_time(self, origin: bytes, topic: bytes, seq: int, now: float) -> bool:
        key = (origin, bytes(topic))
        stream = self._streams.get(key)
        if stream is None:
            # Frames sent before we heard of the stream may still come by
            # another path: accept a window below the first one seen.
            stream = self._streams[key] = SeqTracker(max(0, seq - 1 - self.window), now)
        if not stream.add(seq, now):
            return False
        if stream.top - stream.contiguous > self.window + self.window // 4:
            stream.skip_to(stream.top - self.window)
        return True

    def expire(self, now: float) -> None:
        for key, stream in list(self._streams.items()):
            if now - stream.last_seen > self.ttl:
                del self._streams[key]

    def __len__(self) -> int:
        return len(self._streams)
