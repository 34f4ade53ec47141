"""A bound on engine.io's per-client queue, around ``Socket.send``: the mechanism, not the policy.

engine.io queues every packet for a client without limit. ``bounded_send``
asks the policy (``gunicorn_barrel.worker.backpressure``) what to do once a
client's queue is at the limit; ``drop_oldest`` and ``cut`` are the two
things the policy can do, both on engine.io's internals, so they live here.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import gevent

from gunicorn_barrel.compat import shapes
from gunicorn_barrel.compat.websocket_driver import websocket_of
from gunicorn_barrel.metrics.recorder import Series

ENGINEIO = "python-engineio"

Method = Callable[..., Any]

# engine.io Sockets being cut for slowness: nothing more is queued for them.
# Read only once a queue is at its limit, never on the per-packet path.
_cutting: weakref.WeakSet[Any] = weakref.WeakSet()


def check() -> None:
    """How barrel closes an engine.io socket (the queue's shape is checked with the fast paths)."""
    from engineio.socket import Socket

    shapes.accepts(ENGINEIO, Socket, "close", "engineio.socket.Socket.close", ("self", "wait", "abort"))


def bounded_send(
    send: Method, limit: int, at_limit: Callable[[Any], bool], new_peak: Callable[[int], None],
    deliveries: Series | None = None,
) -> Method:
    """``Socket.send`` that calls ``at_limit(socket)`` when a client has ``limit`` packets queued.

    ``at_limit`` returns True when the packet may still be queued (room was
    made), False to drop it. ``new_peak(n)`` is called when a queue reaches a
    length (at most ``limit``) no queue had before. ``deliveries`` counts the
    message packets that go on (pings and the like are not messages).
    """
    from engineio.packet import MESSAGE

    peak = 0
    delivered = deliveries if deliveries is not None else Series()

    def barrel_bounded_send(self: Any, pkt: Any) -> None:
        # Runs for every packet to every client: one qsize(), a few comparisons, one increment.
        nonlocal peak
        size = self.queue.qsize()
        if size >= limit and not (self.closed or self.closing):
            if self in _cutting or not at_limit(self):
                return
            size = self.queue.qsize()
        if size >= peak:
            peak = min(size + 1, limit)
            new_peak(peak)
        if pkt.packet_type == MESSAGE:
            delivered.value += 1
        send(self, pkt)

    return barrel_bounded_send


def drop_oldest(eio_socket: Any) -> bool:
    """Drop the oldest packet queued for a client; False if its writer emptied the queue meanwhile."""
    try:
        eio_socket.queue.get_nowait()
        eio_socket.queue.task_done()
    except Exception:  # gevent's queue.Empty, whatever module it lives in
        return False
    return True


def cut(eio_socket: Any) -> None:
    """Close a client's session and cut its connection; nothing more is queued for it from now on."""
    _cutting.add(eio_socket)
    # Not from inside send(): closing runs the app's disconnect handler.
    gevent.spawn(_cut, eio_socket)


def _cut(eio_socket: Any) -> None:
    ws = websocket_of(eio_socket)
    if ws is not None:
        ws.abort()  # unblocks its writer, stuck on a client that does not read
    eio_socket.close(wait=False, abort=True)
