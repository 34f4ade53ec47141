"""Exactly-once, in-order delivery per sender over a broadcaster that may crash. Sans-io.

Each bus client numbers its frames per channel (``Outbox``) and keeps them
until the broadcaster acknowledges them in its heartbeat; it resends what is
unacknowledged when a new broadcaster appears (a new epoch) or when a frame
stays unacknowledged too long. Receivers (``Inbox``) deliver each sender's
frames of a channel in sequence order: duplicates are dropped, frames that
arrive early wait for the missing ones, and a gap that is not filled within
``gap_timeout`` is counted and skipped, never hidden.
"""
from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict, deque
from typing import Generic, TypeVar

T = TypeVar("T")

Stream = tuple[bytes, str]  # (origin, channel)


class Outbox(Generic[T]):
    """What this sender pushed and the broadcaster has not acknowledged yet."""

    def __init__(self, max_unacked: int, counters: Counter[str]) -> None:
        self.max_unacked = max_unacked
        self.counters = counters
        self._seq: dict[str, int] = {}
        # channel -> seq -> (sent_at, item), in seq order
        self._unacked: dict[str, OrderedDict[int, tuple[float, T]]] = {}

    def next_seq(self, channel: str) -> int:
        """Take the number of the next frame of ``channel``."""
        seq = self.peek_seq(channel)
        self._seq[channel] = seq
        return seq

    def peek_seq(self, channel: str) -> int:
        """The number the next frame of ``channel`` will get, without taking it."""
        return self._seq.get(channel, 0) + 1

    def record(self, channel: str, seq: int, item: T, now: float) -> None:
        pending = self._unacked.setdefault(channel, OrderedDict())
        pending[seq] = (now, item)
        if self.unacked_count() > self.max_unacked:
            # Bounded memory: the oldest frame can no longer be resent; its
            # receivers will count the gap.
            oldest_channel = min(
                (c for c in self._unacked if self._unacked[c]),
                key=lambda c: next(iter(self._unacked[c].values()))[0],
            )
            self._unacked[oldest_channel].popitem(last=False)
            self.counters["frames_unrecoverable"] += 1

    def ack(self, channel: str, seq: int) -> None:
        """The broadcaster has published every frame of ``channel`` up to ``seq``."""
        pending = self._unacked.get(channel)
        while pending and next(iter(pending)) <= seq:
            pending.popitem(last=False)

    def unacked_count(self) -> int:
        return sum(len(p) for p in self._unacked.values())

    def to_resend(self, now: float, older_than: float | None = None) -> list[T]:
        """Unacknowledged items, in send order within each channel (all, or those older than a delay)."""
        out: list[T] = []
        for pending in self._unacked.values():
            for seq, (sent_at, item) in list(pending.items()):
                if older_than is None or now - sent_at >= older_than:
                    pending[seq] = (now, item)
                    out.append(item)
        self.counters["frames_resent"] += len(out)
        return out


@dataclasses.dataclass
class _StreamState(Generic[T]):
    next_seq: int
    held: dict[int, tuple[float, T]] = dataclasses.field(default_factory=dict)  # seq -> (arrived, item)


class Inbox(Generic[T]):
    """Orders and de-duplicates frames per (origin, channel)."""

    def __init__(self, gap_timeout: float, max_held: int, counters: Counter[str]) -> None:
        self.gap_timeout = gap_timeout
        self.max_held = max_held
        self.counters = counters
        self._streams: dict[Stream, _StreamState[T]] = {}
        # the last gaps (stream, first missing seq, last missing seq), for logs and tests
        self.gap_log: deque[tuple[Stream, int, int]] = deque(maxlen=100)

    def accept(self, stream: Stream, seq: int, item: T, now: float) -> list[T]:
        """Take a received frame; return the frames now deliverable, in order."""
        state = self._streams.get(stream)
        if state is None:
            # First frame of a sender we never heard: start there (frames it
            # sent before we subscribed were never ours to receive).
            state = self._streams[stream] = _StreamState(next_seq=seq)
        if seq < state.next_seq or seq in state.held:
            self.counters["duplicates_dropped"] += 1
            return []
        state.held[seq] = (now, item)
        if seq != state.next_seq and len(state.held) > self.max_held:
            return self._skip_gap(stream, state)
        return self._release(state)

    def expire(self, now: float) -> list[T]:
        """Give up on every gap behind which a frame waited gap_timeout; return what that releases."""
        out: list[T] = []
        for stream, state in self._streams.items():
            while state.held and now - min(at for at, _item in state.held.values()) >= self.gap_timeout:
                out.extend(self._skip_gap(stream, state))
        return out

    def _skip_gap(self, stream: Stream, state: _StreamState[T]) -> list[T]:
        first_held = min(state.held)
        missing = first_held - state.next_seq
        self.counters["gaps"] += 1
        self.counters["frames_lost"] += missing
        self.gap_log.append((stream, state.next_seq, first_held - 1))
        state.next_seq = first_held
        return self._release(state)

    def _release(self, state: _StreamState[T]) -> list[T]:
        out = []
        while state.next_seq in state.held:
            out.append(state.held.pop(state.next_seq)[1])
            state.next_seq += 1
        return out

    def forget(self, stream: Stream) -> None:
        self._streams.pop(stream, None)
