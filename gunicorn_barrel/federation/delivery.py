"""What a broadcaster may acknowledge on its federation links: frames every local worker holds.

A frame from a peer is published to the local workers through the XPUB
socket, whose queues live in the broadcaster's memory until the kernel takes
them. Acknowledging the frame to the peer as soon as it arrived would let a
SIGKILLed broadcaster take it to its grave: the peer forgets it, the workers
never get it. So the link acknowledgement waits for the workers, sans-io:

- Every heartbeat of the broadcaster carries a number (``mark``); at each mark
  this remembers, per link, what had arrived from the peer (epoch, contiguous
  link seq).
- Each worker pushes back the number of each heartbeat it read (``echoed``).
  The PUB queue to one worker keeps order, so a worker that read heartbeat n
  read every frame published before it.
- A link acknowledges what had arrived at the lowest mark every worker
  echoed (``safe``). Workers that stopped echoing for ``STALE_AFTER`` (stopped,
  stuck) are left out, so one frozen worker does not hold every link back;
  with no worker at all (a standalone hub), or none live, what arrived is
  safe at once.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from typing import Generic, TypeVar

# A worker that echoed nothing new for this long no longer holds acknowledgements back.
STALE_AFTER = 2.0
# Marks kept at most (20 a second): a worker further behind holds its links' acknowledgements.
MAX_MARKS = 10_000

Ack = tuple[bytes, int]  # (the peer's epoch, link seq received contiguously)
LinkT = TypeVar("LinkT", bound=Hashable)


class LocalDelivery(Generic[LinkT]):
    """Heartbeat marks and worker echoes: the link acknowledgements every worker is past."""

    def __init__(self, stale_after: float = STALE_AFTER) -> None:
        self.stale_after = stale_after
        self.number = 0
        self._marks: deque[tuple[int, Mapping[LinkT, Ack]]] = deque()
        # worker pid -> (last heartbeat number echoed, when it last moved)
        self._echoes: dict[int, tuple[int, float]] = {}

    def mark(self, received: Mapping[LinkT, Ack]) -> int:
        """A heartbeat is about to go out: remember what the links had received; its number."""
        self.number += 1
        self._marks.append((self.number, dict(received)))
        if len(self._marks) > MAX_MARKS:
            self._marks.popleft()
        return self.number

    def echoed(self, pid: int, number: int, now: float) -> None:
        """Worker ``pid`` read heartbeat ``number`` (so everything published before it)."""
        previous = self._echoes.get(pid)
        if previous is None or number > previous[0]:
            self._echoes[pid] = (number, now)

    def safe(self, workers: Iterable[int], now: float) -> Mapping[LinkT, Ack] | None:
        """Per link, what every live worker holds (empty: no mark passed yet);
        None when there is no live worker to wait for.

        ``workers`` are the subscribed ones. One that subscribed but has not
        echoed yet counts from now: it needs only what is published after.
        """
        live = set(workers)
        for pid in list(self._echoes):
            if pid not in live:
                del self._echoes[pid]  # gone: unsubscribed
        for pid in live - self._echoes.keys():
            self._echoes[pid] = (self.number, now)
        passed = [n for n, at in self._echoes.values() if now - at < self.stale_after]
        if not passed:
            self._marks.clear()
            return None
        lowest = min(passed)
        found: Mapping[LinkT, Ack] | None = None
        while self._marks and self._marks[0][0] <= lowest:
            found = self._marks.popleft()[1]
        if found is None:
            return {}
        # Kept as the first mark: later calls still know it.
        self._marks.appendleft((lowest, found))
        return found
