"""A bound on what one engine.io client can have queued: slow clients cost the others nothing.

engine.io queues every packet for a client without limit, and a WebSocket
client that stops reading leaves its writer blocked while the queue grows.
At ``client_queue_limit`` packets the policy applies:

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

import socket
from collections import Counter
from typing import Any

import gevent

from gunicorn_barrel import websocket

counters: Counter[str] = Counter()
_limit = 1000
_policy = "disconnect"


def install(limit: int, policy: str) -> None:
    """Bound engine.io's per-client queues in this process (idempotent)."""
    global _limit, _policy
    from engineio.socket import Socket

    _limit, _policy = limit, policy
    if getattr(Socket.send, "__barrel_bounded__", False):
        return
    unbounded_send = Socket.send

    def send(self: Any, pkt: Any) -> None:
        if getattr(self, "_barrel_cut", False):
            return  # being disconnected for slowness: nothing more for it
        size = self.queue.qsize()
        if size >= _limit and not (self.closed or self.closing):
            if _policy == "drop_oldest":
                _drop_oldest(self)
            else:
                counters["clients_dropped_slow"] += 1
                self._barrel_cut = True
                # Not from inside send(): closing runs the app's disconnect handler.
                gevent.spawn(_cut, self)
                return
        if size >= counters["client_queue_peak"]:
            counters["client_queue_peak"] = min(size + 1, _limit)
        unbounded_send(self, pkt)

    send.__barrel_bounded__ = True  # type: ignore[attr-defined]
    Socket.send = send


def _drop_oldest(eio_socket: Any) -> None:
    try:
        eio_socket.queue.get_nowait()
        eio_socket.queue.task_done()
    except Exception:  # emptied meanwhile by its writer: nothing to drop
        return
    counters["packets_dropped_slow"] += 1


def _cut(eio_socket: Any) -> None:
    raw = websocket.raw_socket(eio_socket.sid)
    if raw is not None:
        try:
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    eio_socket.close(wait=False, abort=True)
