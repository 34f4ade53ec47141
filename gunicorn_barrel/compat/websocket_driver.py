"""WebSocket under gunicorn's gevent worker: barrel's own lean WebSocket, never gevent-websocket.

engineio's gevent driver switches to gevent-websocket whenever that package
imports, and then fails under gunicorn (it needs ``environ['wsgi.websocket']``,
which only gevent-websocket's own server provides); otherwise it uses
simple-websocket, which costs a reader greenlet and wsproto state per
connection. We point the driver's private ``_async['websocket']`` entry at a
factory of ``gunicorn_barrel.ws.connection.BarrelWebSocket`` in every case.

The factory also records which WebSocket serves which engine.io socket, for
the fast paths and the slow-client cut. A plain dict, not a weak map: it is
read for every packet to every client, and an entry lives exactly as long as
its WebSocket is open (removed when its handler returns, or, for a WebSocket
that reads without a greenlet, when it ends), which is shorter than the
engine.io socket's own life.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn_barrel.compat import shapes
from gunicorn_barrel.compat.versions import IncompatibleLibrary
from gunicorn_barrel.ws.connection import BarrelWebSocket

ENGINEIO = "python-engineio"
GEVENT = "gevent"

# engine.io Socket -> its BarrelWebSocket while the WebSocket's handler runs.
open_websockets: dict[Any, BarrelWebSocket] = {}


def websocket_of(eio_socket: Any) -> BarrelWebSocket | None:
    """The open WebSocket of an engine.io socket, if it has one in this worker."""
    return open_websockets.get(eio_socket)


def check() -> None:
    """engine.io's gevent driver table, and how engine.io calls its WebSocket class."""
    import gevent.socket
    from engineio.async_drivers import gevent as engineio_gevent
    from engineio.socket import Socket

    table = shapes.attribute(ENGINEIO, engineio_gevent, "_async", "engineio.async_drivers.gevent._async")
    if not isinstance(table, dict) or "websocket" not in table:
        raise IncompatibleLibrary(
            ENGINEIO, "engineio.async_drivers.gevent._async is no longer a dict with a 'websocket' entry")
    # engine.io builds the WebSocket as _async['websocket'](self._websocket_handler, server).
    shapes.signature(ENGINEIO, Socket, "_upgrade_websocket", "engineio.socket.Socket._upgrade_websocket",
                     ("self", "environ", "start_response"))
    shapes.signature(ENGINEIO, Socket, "_websocket_handler", "engineio.socket.Socket._websocket_handler",
                     ("self", "ws"))
    if Socket.__hash__ is not object.__hash__:
        raise IncompatibleLibrary(ENGINEIO, "engineio.socket.Socket no longer hashes by identity")
    # BarrelWebSocket writes to the OS socket under gevent's at once when it can.
    probe = gevent.socket.socket()
    try:
        raw = shapes.attribute(GEVENT, probe, "_sock", "gevent.socket.socket()._sock")
        if not hasattr(raw, "send") or raw.gettimeout() != 0.0:
            raise IncompatibleLibrary(
                GEVENT, "gevent.socket.socket()._sock is no longer a non-blocking OS socket")
    finally:
        probe.close()


def barrel_websocket_factory(deflate_min_size: int) -> Callable[[Any, Any], BarrelWebSocket]:
    """What engine.io's gevent driver calls to make a WebSocket: ``factory(handler, server)``."""

    def barrel_websocket(handler: Any, server: Any) -> BarrelWebSocket:
        # engine.io passes its Socket's bound _websocket_handler (checked at start).
        eio_socket = getattr(handler, "__self__", None)
        if eio_socket is not None:
            handler = _registered_while_open(handler, eio_socket)
        return BarrelWebSocket(handler, server, deflate_min_size=deflate_min_size)

    return barrel_websocket


def _registered_while_open(handler: Any, eio_socket: Any) -> Callable[[BarrelWebSocket], Any]:
    def run(ws: BarrelWebSocket) -> Any:
        open_websockets[eio_socket] = ws
        try:
            return handler(ws)
        finally:
            if not ws.detached:  # a detached WebSocket is forgotten when it ends
                forget(eio_socket, ws)

    return run


def forget(eio_socket: Any, ws: BarrelWebSocket) -> None:
    """``ws`` no longer serves ``eio_socket``."""
    if open_websockets.get(eio_socket) is ws:
        del open_websockets[eio_socket]


def install(deflate_min_size: int) -> None:
    """Make engineio's gevent driver use BarrelWebSocket, whatever else imports."""
    from engineio.async_drivers import gevent as engineio_gevent

    # Mutate in place: servers created before this call (--preload) hold a
    # reference to this very dict.
    engineio_gevent._async["websocket"] = barrel_websocket_factory(deflate_min_size)
