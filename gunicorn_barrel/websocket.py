"""WebSocket under gunicorn's gevent worker: simple-websocket, never gevent-websocket.

engineio's gevent driver switches to gevent-websocket whenever that package
imports, and then fails under gunicorn (it needs ``environ['wsgi.websocket']``,
which only gevent-websocket's own server provides). We point it back at
simple-websocket over ``environ['gunicorn.socket']`` in every case.
"""
from __future__ import annotations

from typing import Any


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

    # Mutate in place: servers created before this call (--preload) hold a
    # reference to this very dict.
    engineio_gevent._async["websocket"] = GeventSimpleWebSocket
