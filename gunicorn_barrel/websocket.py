"""WebSocket under gunicorn's gevent worker: simple-websocket, never gevent-websocket.

engineio's gevent driver switches to gevent-websocket whenever that package
imports, and then fails under gunicorn (it needs ``environ['wsgi.websocket']``,
which only gevent-websocket's own server provides). We point it back at
simple-websocket over ``environ['gunicorn.socket']`` in every case.
"""
from __future__ import annotations

import weakref
from typing import Any
from urllib.parse import parse_qs

# engine.io sid -> the client's socket while its WebSocket is open, so that a
# slow client can be cut off (see backpressure).
_raw_sockets: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def raw_socket(sid: str) -> Any:
    """The network socket of the WebSocket of engine.io session ``sid``, if open."""
    return _raw_sockets.get(sid)


def use_simple_websocket() -> None:
    """Make engineio's gevent driver use simple-websocket even if gevent-websocket imports."""
    import gevent
    import gevent.event
    import gevent.selectors
    from engineio.async_drivers import gevent as engineio_gevent
    from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI

    current = engineio_gevent._async["websocket"]
    if isinstance(current, type) and issubclass(current, SimpleWebSocketWSGI):
        return

    class GeventSimpleWebSocket(SimpleWebSocketWSGI):  # type: ignore[misc]
        def __init__(self, handler: Any, server: Any) -> None:
            super().__init__(
                handler, server,
                thread_class=engineio_gevent.Thread,
                event_class=gevent.event.Event,
                selector_class=gevent.selectors.DefaultSelector,
            )

        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            sid = parse_qs(environ.get("QUERY_STRING", "")).get("sid", [None])[0]
            sock = environ.get("gunicorn.socket")
            if sid and sock is not None:
                _raw_sockets[sid] = sock
            return super().__call__(environ, start_response)

    # Mutate in place: servers created before this call (--preload) hold a
    # reference to this very dict.
    engineio_gevent._async["websocket"] = GeventSimpleWebSocket
