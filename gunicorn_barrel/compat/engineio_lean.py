"""Less memory per engine.io connection in a barrel worker: ``Socket.schedule_ping`` on a timer.

Measured with 500 idle WebSocket clients on one worker (gc + greenlet stack
sizes): engine.io kept three greenlets per connection (gunicorn's connection
greenlet, the writer, and a ping task that sleeps ``ping_interval`` between
pings), gevent kept the spawning stack of each (``track_greenlet_tree``),
and engine.io's WSGI middleware created a class per request to wrap
``gunicorn.socket``. Here:

- the ping wait is a libev timer (a small object, no stack) that starts a
  short-lived greenlet only when the ping is due;
- greenlets do not record their spawning tree (a debugging aid);
- engine.io requests carry the socket as ``barrel.socket``, so engine.io's
  middleware has no ``gunicorn.socket`` to wrap in a new class.

engine.io calls ``schedule_ping`` when a session opens and at each PONG. Its
own contract changed across the tested versions (4.12 schedules at every
call; 4.13+ only once the previous ping was answered, with ``last_ping`` set
at creation): ours keeps the newer contract on all of them by remembering
the pending timer, not by reading ``last_ping``.
"""
from __future__ import annotations

import time
import weakref
from typing import Any

import gevent

from gunicorn_barrel.compat import shapes
from gunicorn_barrel.compat.versions import IncompatibleLibrary
from gunicorn_barrel.ws.connection import SOCKET_KEY

ENGINEIO = "python-engineio"

# engine.io Socket -> its pending ping timer. The loop does not keep an
# active watcher alive by itself; this does, and forgets closed sessions.
_ping_timers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def check() -> None:
    """engine.io's ping scheduling, and the gevent parts the timer uses."""
    from engineio.socket import Socket

    shapes.signature(ENGINEIO, Socket, "schedule_ping", "engineio.socket.Socket.schedule_ping", ("self",))
    if not hasattr(Socket, "__weakref__"):
        raise IncompatibleLibrary(ENGINEIO, "engineio.socket.Socket can no longer be weakly referenced")
    loop = gevent.get_hub().loop
    shapes.accepts("gevent", loop, "timer", "gevent's loop.timer", ("after",))
    if not hasattr(gevent.config, "track_greenlet_tree"):
        raise IncompatibleLibrary("gevent", "gevent.config.track_greenlet_tree is gone")


def install() -> None:
    """Replace engine.io's ping task by a timer, and stop recording greenlet trees."""
    from engineio.socket import Socket

    gevent.config.track_greenlet_tree = False
    Socket.schedule_ping = schedule_ping


def schedule_ping(self: Any) -> None:
    """Send the next PING in ``ping_interval`` seconds, unless one is already scheduled."""
    if self in _ping_timers:
        return  # a PONG nobody asked for: the next ping is already on its way
    self.last_ping = None  # no ping outstanding: engine.io's timeout check waits
    timer = gevent.get_hub().loop.timer(self.server.ping_interval)
    _ping_timers[self] = timer
    timer.start(_ping_due, self)


def ping_scheduled(eio_socket: Any) -> bool:
    """Whether a ping of this engine.io socket is waiting on its timer."""
    return eio_socket in _ping_timers


def _ping_due(eio_socket: Any) -> None:
    # Runs in the hub, which must never block: sending may run app code
    # (a slow-client cut), so it gets a greenlet of its own.
    timer = _ping_timers.pop(eio_socket, None)
    if timer is not None:
        timer.close()
    gevent.spawn(_ping, eio_socket)


def _ping(eio_socket: Any) -> None:
    from engineio import packet

    if not eio_socket.closing and not eio_socket.closed:
        eio_socket.last_ping = time.time()
        eio_socket.send(packet.Packet(packet.PING))


def hide_gunicorn_socket(environ: dict[str, Any]) -> None:
    """Move the raw socket of an engine.io request out of engine.io middleware's sight."""
    sock = environ.pop("gunicorn.socket", None)
    if sock is not None:
        environ[SOCKET_KEY] = sock
