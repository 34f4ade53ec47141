"""The slow-client policy: what happens to a client that has ``client_queue_limit`` packets queued.

engine.io queues every packet for a client without limit, and a WebSocket
client that stops reading leaves its writer blocked while the queue grows.
The bound itself is a wrapper of engine.io's ``Socket.send``
(``compat.engineio_backpressure``); at the limit it asks ``SlowClientPolicy``:

``disconnect`` (default)
    the session is closed and its connection cut (shutdown of the TCP
    socket, which also unblocks its writer); the client reconnects and
    resynchronises. Counted in ``clients_dropped_slow``.
``drop_oldest``
    the client's oldest queued packet is dropped for each new one; it stays
    connected but misses messages. Counted in ``packets_dropped_slow``.

``client_queue_peak`` records the largest queue seen (never above the limit).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from gunicorn_barrel.compat import engineio_backpressure as queues

counters: Counter[str] = Counter()

POLICIES = ("disconnect", "drop_oldest")


class SlowClientPolicy:
    """The slow_client_policy setting of this worker, counted in ``counters``."""

    def __init__(self, limit: int, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"slow_client_policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.limit = limit
        self.policy = policy

    def at_limit(self, eio_socket: Any) -> bool:
        """Apply the policy to a client with ``limit`` packets queued; True if the new one may be queued."""
        if self.policy == "drop_oldest":
            if queues.drop_oldest(eio_socket):
                counters["packets_dropped_slow"] += 1
            return True
        counters["clients_dropped_slow"] += 1
        queues.cut(eio_socket)
        return False

    def new_peak(self, size: int) -> None:
        """A client's queue reached a length none had before."""
        counters["client_queue_peak"] = max(counters["client_queue_peak"], size)
