"""engine.io session ids made by barrel: ``BaseServer.generate_id`` replaced.

Every session id names the worker holding the session (see
``gunicorn_barrel.runtime.sids``), so that another worker can hand the
session's requests to it. A class attribute, so servers created before the
patch (--preload) are covered too. python-socketio also draws its namespace
sids from here.

The servers seen here are also where the worker's metrics count its clients
(``sessions_by_transport``: engine.io's ``sockets``, and ``upgraded`` as
engine.io's own ``transport()`` reads it).
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import gevent

from gunicorn_barrel.compat import shapes

ENGINEIO = "python-engineio"
ENGINEIO_DEFAULT_MAX_HTTP_BUFFER = 1_000_000

# engine.io servers that issued sessions in this process (for their limits)
_servers: weakref.WeakSet[Any] = weakref.WeakSet()


def check() -> None:
    """engine.io's id generator, and the limit barrel reads on its servers."""
    from engineio.base_server import BaseServer

    shapes.signature(ENGINEIO, BaseServer, "generate_id", "engineio.base_server.BaseServer.generate_id",
                     ("self",))
    server = shapes.fresh_engineio_socket().server
    shapes.has_attributes(ENGINEIO, server, ("max_http_buffer_size", "ping_interval", "sockets"),
                          "a new engineio.Server")


def tagged_generate_id(new_sid: Callable[[], str]) -> Callable[[Any], str]:
    """A ``generate_id`` that returns ``new_sid()`` and remembers the server that asked."""

    def generate_id(self: Any) -> str:
        _servers.add(self)
        forced = _forced.pop(gevent.getcurrent(), None)
        return forced if forced is not None else new_sid()

    return generate_id


# greenlet -> the id its next generate_id returns (a recovered socket.io session keeps its sid)
_forced: dict[Any, str] = {}


@contextlib.contextmanager
def next_id_is(sid: str | None) -> Iterator[None]:
    """Make the next id generated in this greenlet ``sid`` (None: a new one, as usual)."""
    if sid is None:
        yield
        return
    current = gevent.getcurrent()
    _forced[current] = sid
    try:
        yield
    finally:
        _forced.pop(current, None)


def max_http_buffer_size() -> int:
    """The largest request body the engine.io servers of this worker accept."""
    sizes = [getattr(server, "max_http_buffer_size", 0) or 0 for server in list(_servers)]
    return max(sizes, default=ENGINEIO_DEFAULT_MAX_HTTP_BUFFER) or ENGINEIO_DEFAULT_MAX_HTTP_BUFFER


def sessions_by_transport() -> dict[str, int]:
    """Open engine.io sessions of this worker: {"polling": n, "websocket": m}."""
    counts = {"polling": 0, "websocket": 0}
    for server in list(_servers):
        for eio_socket in list(server.sockets.values()):
            if not eio_socket.closed:
                counts["websocket" if eio_socket.upgraded else "polling"] += 1
    return counts
