"""WebSocket under gunicorn's gevent worker: simple-websocket, with a deflate policy.

engineio's gevent driver switches to gevent-websocket whenever that package
imports, and then fails under gunicorn (it needs ``environ['wsgi.websocket']``,
which only gevent-websocket's own server provides). We point it back at
simple-websocket over ``environ['gunicorn.socket']`` in every case.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


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


def deflate_policy(app: WSGIApp, allow_deflate: bool) -> WSGIApp:
    """Wrap ``app`` so WebSocket handshakes do not negotiate permessage-deflate.

    simple-websocket accepts any deflate offer; hiding the offer is the one
    lever that does not depend on its internals.
    """
    if allow_deflate:
        return app

    def without_deflate(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return app(environ, start_response)

    return without_deflate
