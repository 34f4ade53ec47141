"""Which other managers (one per worker and socket.io channel) are alive on the bus. Sans-io.

Each manager says ``hello`` when its worker's bus connects, then a
``heartbeat`` every ``HEARTBEAT_INTERVAL`` seconds, and ``bye`` when its
worker exits; the others answer a ``hello`` with a heartbeat at once, so a
new worker knows them all within one round trip. A manager not heard from for
``PEER_TIMEOUT`` seconds (a crashed or stopped worker, a host cut off) stops
being counted. These are the figures of Node socket.io's cluster adapter.
A cluster request waits for the answers of the peers alive when it was made.
"""
from __future__ import annotations

HEARTBEAT_INTERVAL = 5.0
PEER_TIMEOUT = 10.0


class Peers:
    """host_id -> when it was last heard from (monotonic seconds)."""

    def __init__(self, timeout: float = PEER_TIMEOUT) -> None:
        self.timeout = timeout
        self._last_heard: dict[str, float] = {}

    def heard(self, host: str, now: float) -> bool:
        """Note a sign of life of ``host``; True if it was not counted as alive before."""
        last = self._last_heard.get(host)
        self._last_heard[host] = now
        return last is None or now - last > self.timeout

    def left(self, host: str) -> None:
        self._last_heard.pop(host, None)

    def alive(self, now: float) -> list[str]:
        """The hosts heard from within the timeout (the others are forgotten)."""
        for host, last in list(self._last_heard.items()):
            if now - last > self.timeout:
                del self._last_heard[host]
        return sorted(self._last_heard)

    def clear(self) -> None:
        self._last_heard.clear()
