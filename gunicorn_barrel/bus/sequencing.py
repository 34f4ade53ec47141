"""Exactly-once, in-order delivery per sender over a broadcaster that may crash. Sans-io.

Each bus client numbers its frames per channel (``Outbox``) and keeps them
until the broadcaster acknowledges them in its heartbeat; it resends what is
unacknowledged when a new broadcaster appears (a new epoch) or when a frame
stays unacknowledged too long. Receivers (``Inbox``) deliver each sender's
frames of a channel in sequence order: duplicates are dropped, frames that
arrive early wait for the missing ones, and a gap that is not filled within
``gap_timeout`` is counted and skipped, never hidden.

Where a stream starts. Each frame carries its sender's ``base`` (``wire``):
the lowest seq of the channel the sender had not seen acknowledged when it
(re)sent the frame; everything below was published. A receiver that meets a
stream for the first time expects it from ``base``, not from the first frame
it happens to get: a lost first frame, resent later, is delivered, in order,
instead of being dropped as a duplicate. What stays ambiguous, for a
receiver that subscribed late, is a frame from ``base`` on that it misses:
sent but not acknowledged yet, it may have been published before the
receiver subscribed (never to come to it) or not yet (to come); and as
resends change the order in which frames are published, one above the
first frame it got may have gone out before it subscribed too. The Inbox
waits for such frames until it learns more. On the zeromq bus the
broadcaster's heartbeat, published on the same socket after every frame it
published to us, says up to which seq it published each stream
(``Inbox.published``), and the highest it published: what is still missing
up to the first will never come. Such a frame counts as published before we
subscribed (``frames_before_subscribe``) if its seq is at most that highest
one in the first heartbeat after the stream's first frame, else as lost (a
gap). A frame the broadcaster dropped on its way to a receiver (its queue
full) around the moment that receiver first heard the stream is counted the
first way: the one case told wrongly. On the Redis bus the receiver asks the sender to replay what it
misses (``redis.replay``), and so may get a few frames published just
before it subscribed. A frame missing for good and never settled by a
heartbeat is a gap, counted, after ``gap_timeout``.

``Numbering`` numbers a sender's frames (the bus clients, the Emitter), and
``SeqTracker`` is the one record of which numbers of a stream were seen: what
the broadcaster published of each sender (its acknowledgements), what a
federation link received (its acknowledgements), which frames a broadcaster
already forwarded (``federation.linkstate.SeenFilter``).
"""
from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

Stream = tuple[bytes, str]  # (origin, channel)


class Numbering:
    """Frame numbers per channel, from 1, without holes: take a number once its frame exists.

    A number taken for a frame that then failed to encode would be a gap that
    every receiver waits for.
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def peek(self, channel: str) -> int:
        """The number the next frame of ``channel`` will get, without taking it."""
        return self._last.get(channel, 0) + 1

    def take(self, channel: str) -> int:
        """Take the number of the next frame of ``channel``."""
        seq = self._last[channel] = self.peek(channel)
        return seq


class SeqTracker:
    """Which numbers of one stream were seen: every one up to ``contiguous``, and ``ahead``.

    ``top`` is the highest seen, ``last_seen`` when the stream was last heard
    of (for forgetting silent streams). What to do when ``ahead`` grows (a hole
    that does not fill) is the user's choice: ``skip_first_hole`` or ``forget_ahead``.
    """

    __slots__ = ("contiguous", "ahead", "top", "last_seen")

    def __init__(self, contiguous: int = 0, now: float = 0.0) -> None:
        self.contiguous = contiguous
        self.ahead: set[int] = set()
        self.top = contiguous
        self.last_seen = now

    def add(self, seq: int, now: float = 0.0) -> bool:
        """Mark ``seq`` seen; False if it already was (or is at or below ``contiguous``)."""
        self.last_seen = now
        if seq <= self.contiguous or seq in self.ahead:
            return False
        self.ahead.add(seq)
        self.top = max(self.top, seq)
        self._advance()
        return True

    def skip_to(self, seq: int) -> None:
        """Count every number up to ``seq`` as seen (acknowledged elsewhere, or given up on)."""
        if seq <= self.contiguous:
            return
        self.contiguous = seq
        self.ahead = {s for s in self.ahead if s > seq}
        self.top = max(self.top, seq)
        self._advance()

    def skip_first_hole(self) -> None:
        """Give up on the lowest missing numbers: the frames will never come."""
        if self.ahead:
            self.skip_to(min(self.ahead))

    def forget_ahead(self) -> None:
        """Forget what was seen past the first hole: it will be sent again."""
        self.ahead.clear()
        self.top = self.contiguous

    def _advance(self) -> None:
        while self.contiguous + 1 in self.ahead:
            self.contiguous += 1
            self.ahead.remove(self.contiguous)


class Unacked(Generic[T]):
    """One stream's sent items, kept in seq order until acknowledged, with when each was last sent.

    Iterating gives the seqs, oldest first. The sending half of a stream: a bus
    client's per channel (``Outbox``), a federation link's (``linkstate.Outgoing``).
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: OrderedDict[int, tuple[float, T]] = OrderedDict()

    def add(self, seq: int, item: T, now: float) -> None:
        self._items[seq] = (now, item)

    def ack(self, seq: int) -> bool:
        """Forget every item up to ``seq``; whether there was any."""
        items = self._items
        acked = False
        while items and next(iter(items)) <= seq:
            items.popitem(last=False)
            acked = True
        return acked

    def drop_oldest(self) -> None:
        self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every item, acknowledged or not."""
        self._items.clear()

    def oldest_sent_at(self) -> float:
        return next(iter(self._items.values()))[0]

    def due(self, now: float, older_than: float | None = None, from_seq: int = 0) -> list[tuple[int, T]]:
        """(seq, item) to send again, oldest first: all from ``from_seq`` on, or those not
        sent for ``older_than`` seconds; each counts as sent ``now``."""
        out = []
        for seq, (sent_at, item) in self._items.items():
            if seq >= from_seq and (older_than is None or now - sent_at >= older_than):
                self._items[seq] = (now, item)
                out.append((seq, item))
        return out

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)


class Outbox(Generic[T]):
    """What this sender pushed and the broadcaster has not acknowledged yet."""

    def __init__(self, max_unacked: int, counters: Counter[str]) -> None:
        self.max_unacked = max_unacked
        self.counters = counters
        self.numbering = Numbering()
        self._unacked: dict[str, Unacked[T]] = {}  # per channel

    def next_seq(self, channel: str) -> int:
        """Take the number of the next frame of ``channel``."""
        return self.numbering.take(channel)

    def peek_seq(self, channel: str) -> int:
        """The number the next frame of ``channel`` will get, without taking it."""
        return self.numbering.peek(channel)

    def base(self, channel: str) -> int:
        """The lowest seq of ``channel`` not acknowledged (the next one if none): each frame's ``base``."""
        pending = self._unacked.get(channel)
        return next(iter(pending)) if pending else self.numbering.peek(channel)

    def record(self, channel: str, seq: int, item: T, now: float) -> None:
        pending = self._unacked.get(channel)
        if pending is None:
            pending = self._unacked[channel] = Unacked()
        pending.add(seq, item, now)
        if self.unacked_count() > self.max_unacked:
            # Bounded memory: the oldest frame can no longer be resent; its
            # receivers will count the gap.
            oldest = min((p for p in self._unacked.values() if p), key=Unacked.oldest_sent_at)
            oldest.drop_oldest()
            self.counters["frames_unrecoverable"] += 1

    def ack(self, channel: str, seq: int) -> None:
        """The broadcaster has published every frame of ``channel`` up to ``seq``."""
        pending = self._unacked.get(channel)
        if pending is not None:
            pending.ack(seq)

    def unacked_count(self) -> int:
        return sum(len(p) for p in self._unacked.values())

    def to_resend(self, now: float, older_than: float | None = None) -> list[T]:
        """Unacknowledged items, in send order within each channel (all, or those older than a delay)."""
        return [item for _channel, item in self.to_resend_by_channel(now, older_than)]

    def to_resend_by_channel(self, now: float, older_than: float | None = None) -> list[tuple[str, T]]:
        """``to_resend``, each item with its channel."""
        out = [(channel, item) for channel, pending in self._unacked.items()
               for _seq, item in pending.due(now, older_than)]
        self.counters["frames_resent"] += len(out)
        return out


class FirstUnacked:
    """Each channel's lowest unacknowledged seq (its frames' ``base``), for a sender whose
    acknowledgements count something else: tickets (a queue position, a link seq) that
    grow with each frame sent, every ticket below a mark being done."""

    def __init__(self) -> None:
        self._open: dict[str, deque[tuple[int, int]]] = {}  # channel -> (ticket, seq), oldest first

    def sent(self, channel: str, seq: int, ticket: int) -> None:
        self._open.setdefault(channel, deque()).append((ticket, seq))

    def base(self, channel: str, next_seq: int, done_below: int) -> int:
        """The base for the next frame of ``channel`` (numbered ``next_seq``)."""
        for name in list(self._open):  # forget what is done, in every channel
            pending = self._open[name]
            while pending and pending[0][0] < done_below:
                pending.popleft()
            if not pending:
                del self._open[name]
        mine = self._open.get(channel)
        return mine[0][1] if mine else next_seq


@dataclasses.dataclass
class _StreamState(Generic[T]):
    next_seq: int
    held: dict[int, tuple[float, T]] = dataclasses.field(default_factory=dict)  # seq -> (arrived, item)
    # Frames up to this seq may have gone out before we subscribed: the highest the
    # broadcaster had published when it first told us of the stream (``Inbox.published``).
    joined_at: int | None = None
    last_at: float = 0.0  # when its last frame arrived

class Inbox(Generic[T]):
    """Orders and de-duplicates frames per (origin, channel)."""

    # A stream silent this long, with nothing held, is forgotten: senders come
    # and go (every restarted worker is a new origin) and their state would
    # pile up. A sender that speaks again is taken as new, from its base, which
    # is then its own frame (every earlier one was acknowledged long ago).
    forget_after = 300.0

    def __init__(self, gap_timeout: float, max_held: int, counters: Counter[str]) -> None:
        self.gap_timeout = gap_timeout
        self.max_held = max_held
        self.counters = counters
        self._streams: dict[Stream, _StreamState[T]] = {}
        self._waiting: set[Stream] = set()  # new, or holding frames back: see waiting()
        # the last gaps (stream, first missing seq, last missing seq), for logs and tests
        self.gap_log: deque[tuple[Stream, int, int]] = deque(maxlen=100)

    def accept(self, stream: Stream, seq: int, base: int, item: T, now: float) -> list[T]:
        """Take a received frame (with its sender's ``base``); return the frames now deliverable, in order."""
        state = self._streams.get(stream)
        if state is None:
            # A sender we never heard: its stream goes on from base (what is
            # below was published, before we subscribed).
            state = self._streams[stream] = _StreamState(next_seq=base if 0 < base < seq else seq)
            self._waiting.add(stream)
        if seq < state.next_seq or seq in state.held:
            self.counters["duplicates_dropped"] += 1
            return []
        state.held[seq] = (now, item)
        state.last_at = now
        if seq != state.next_seq:
            self._waiting.add(stream)
            if len(state.held) > self.max_held:
                return self._skip_gap(stream, state)
        return self._release(state)

    def waiting(self) -> list[Stream]:
        """The streams that news of what was published (``published``) may move on."""
        self._waiting = {s for s in self._waiting if (state := self._streams.get(s)) is not None
                         and (state.joined_at is None or state.held)}
        return list(self._waiting)

    def published(self, stream: Stream, up_to: int, top: int) -> list[T]:
        """The broadcaster published every frame of ``stream`` up to ``up_to``, none above
        ``top``; return what giving up on the missing ones releases.

        This news comes after every frame it published to us (one socket, in
        order): a frame still missing up to there will not come. If it went
        out before we subscribed, it is counted in ``frames_before_subscribe``,
        else as lost (a gap). Those that went out before we subscribed were
        published before the first frame we got, so before the first news
        after it: their seqs are at most its ``top``.
        """
        state = self._streams.get(stream)
        if state is None:
            return []
        if state.joined_at is None:
            state.joined_at = max(top, up_to)
        out: list[T] = []
        while state.next_seq <= up_to:
            if state.next_seq not in state.held:
                kept = min((s for s in state.held if s <= up_to), default=up_to + 1)
                self._give_up(stream, state, kept)
            out.extend(self._release(state))
        return out

    def expire(self, now: float) -> list[T]:
        """Give up on every gap behind which a frame waited gap_timeout; return what that releases."""
        out: list[T] = []
        for stream, state in self._streams.items():
            while state.held and now - min(at for at, _item in state.held.values()) >= self.gap_timeout:
                out.extend(self._skip_gap(stream, state))
        for stream in [s for s, state in self._streams.items()
                       if not state.held and now - state.last_at >= self.forget_after]:
            self.forget(stream)
        return out

    def stream_count(self) -> int:
        """The streams it keeps state for."""
        return len(self._streams)

    def _skip_gap(self, stream: Stream, state: _StreamState[T]) -> list[T]:
        self._give_up(stream, state, min(state.held), before_subscribe=False)
        return self._release(state)

    def _give_up(self, stream: Stream, state: _StreamState[T], kept: int,
                 before_subscribe: bool = True) -> None:
        """Stop waiting for next_seq..kept-1; those up to ``joined_at`` went out before we
        subscribed (if ``before_subscribe`` can be told), the others are a gap."""
        first = state.next_seq
        if before_subscribe and state.joined_at is not None and first <= state.joined_at:
            self.counters["frames_before_subscribe"] += min(kept, state.joined_at + 1) - first
            first = min(kept, state.joined_at + 1)
        if first < kept:
            self.counters["gaps"] += 1
            self.counters["frames_lost"] += kept - first
            self.gap_log.append((stream, first, kept - 1))
        state.next_seq = kept

    def _release(self, state: _StreamState[T]) -> list[T]:
        out = []
        while state.next_seq in state.held:
            out.append(state.held.pop(state.next_seq)[1])
            state.next_seq += 1
        return out

    def forget(self, stream: Stream) -> None:
        self._streams.pop(stream, None)
        self._waiting.discard(stream)
