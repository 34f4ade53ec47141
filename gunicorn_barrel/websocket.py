"""WebSocket under gunicorn's gevent worker: barrel's own lean WebSocket, never gevent-websocket.

engineio's gevent driver switches to gevent-websocket whenever that package
imports, and then fails under gunicorn (it needs ``environ['wsgi.websocket']``,
which only gevent-websocket's own server provides); otherwise it uses
simple-websocket, which costs a reader greenlet and wsproto state per
connection. We point it at ``gunicorn_barrel.ws.server.BarrelWebSocket`` over
``environ['gunicorn.socket']`` in every case.
"""
from __future__ import annotations

import weakref
from typing import Any
from urllib.parse import parse_qs

from gunicorn_barrel.ws.server import BarrelWebSocket, engineio_fast_paths

# engine.io sid -> the client's socket while its WebSocket is open, so that a
# slow client can be cut off (see backpressure).
_raw_sockets: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def raw_socket(sid: str) -> Any:
    """The network socket of the WebSocket of engine.io session ``sid``, if open."""
    return _raw_sockets.get(sid)


def _remember_socket(environ: dict[str, Any], sock: Any) -> None:
    sid = parse_qs(environ.get("QUERY_STRING", "")).get("sid", [None])[0]
    if sid:
        _raw_sockets[sid] = sock


def use_barrel_websocket(deflate_min_size: int = 1024) -> None:
    """Make engineio's gevent driver use BarrelWebSocket, whatever else imports."""
    from engineio.async_drivers import gevent as engineio_gevent

    BarrelWebSocket.deflate_min_size = deflate_min_size
    BarrelWebSocket.on_open = staticmethod(_remember_socket)
    # Mutate in place: servers created before this call (--preload) hold a
    # reference to this very dict.
    engineio_gevent._async["websocket"] = BarrelWebSocket
    engineio_fast_paths()
