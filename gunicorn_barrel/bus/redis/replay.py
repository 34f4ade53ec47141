"""Closing the gaps Redis pub/sub leaves, sans-io: replay on request.

Redis keeps nothing for a subscriber that is away, so the sender keeps what
it published lately (``ReplayWindow``, bounded in frames and bytes). A
receiver that sees a gap in a sender's sequence holds the later frames back
(``GapInbox``, the zmq bus's Inbox) and asks that sender for the missing ones
(a NACK on the bus); ``NackSchedule`` says when to ask, and asks again while
the gap stays open. The sender publishes the frames again, receivers drop
the copies they already had. A gap still open after ``gap_timeout`` (the
frames left the window, or the sender died) is counted and skipped.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

from gunicorn_barrel.bus.sequencing import Inbox, Stream

T = TypeVar("T")


class ReplayWindow(Generic[T]):
    """The last frames this sender published, by (channel, seq), bounded in count and bytes."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], tuple[int, T]] = OrderedDict()
        self._replayed: dict[tuple[str, int], float] = {}  # when a kept frame was last replayed
        self._bytes = 0

    def add(self, channel: str, seq: int, item: T, size: int) -> None:
        if (channel, seq) in self._items:
            return
        self._items[(channel, seq)] = (size, item)
        self._bytes += size
        while self._items and (len(self._items) > self.max_frames or self._bytes > self.max_bytes):
            key, (old_size, _item) = self._items.popitem(last=False)
            self._replayed.pop(key, None)
            self._bytes -= old_size

    def get(self, channel: str, first: int, last: int, now: float, again_after: float
            ) -> tuple[list[tuple[int, T]], int]:
        """The kept frames first..last of ``channel`` as (seq, item), and how many are gone.

        A frame replayed less than ``again_after`` seconds ago is left out: several
        receivers asking for the same gap get one replay.
        """
        found = []
        gone = 0
        for seq in range(first, last + 1):
            entry = self._items.get((channel, seq))
            if entry is None:
                gone += 1
            elif now - self._replayed.get((channel, seq), -again_after) >= again_after:
                self._replayed[(channel, seq)] = now
                found.append((seq, entry[1]))
        return found, gone

    def __len__(self) -> int:
        return len(self._items)


class GapInbox(Inbox[T]):
    """The Inbox, telling which streams wait for missing frames."""

    def gaps(self) -> Iterator[tuple[Stream, int, int]]:
        """(stream, first missing seq, last missing seq) of every stream holding frames back."""
        for stream in self._streams:
            gap = self.gap(stream)
            if gap is not None:
                yield stream, gap[0], gap[1]

    def gap(self, stream: Stream) -> tuple[int, int] | None:
        """The missing seqs (first, last) that ``stream``'s held frames wait for, if any."""
        state = self._streams.get(stream)
        if state is None or not state.held:
            return None
        return state.next_seq, min(state.held) - 1


class NackSchedule:
    """When to ask a sender for a gap: at once, then again after ``first`` s, doubling up to ``most``.

    The answer can take a while (Redis away, the sender's queue long): asking
    ever more slowly keeps the replays from piling up.
    """

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self._asked: dict[Stream, tuple[int, int, float, float]] = {}  # first, last, at, wait

    def due(self, stream: Stream, first: int, last: int, now: float) -> bool:
        """Whether to ask for this gap now."""
        asked = self._asked.get(stream)
        # The same gap filling from its start (replays arriving) is no new gap.
        if asked is None or asked[1] != last or first < asked[0]:
            self._asked[stream] = (first, last, now, self.first)
            return True
        _first, _last, at, wait = asked
        if now - at < wait:
            return False
        self._asked[stream] = (first, last, now, min(wait * 2, self.most))
        return True

    def forget_closed(self, open_streams: set[Stream]) -> None:
        """Forget the streams whose gap closed."""
        for stream in [s for s in self._asked if s not in open_streams]:
            del self._asked[stream]
