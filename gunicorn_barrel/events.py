"""Named events between workers, on the bus: emit in one, handle in all.

    from gunicorn_barrel import events
    events.on("cache-clear", lambda data: cache.clear())   # in every worker (e.g. at import)
    events.emit("cache-clear", {"why": "deploy"})          # from any worker

Every worker that registered a handler for the name gets the event, the
emitting worker included, once, and the events of one worker arrive in the
order it emitted them (the bus's guarantees). Data is JSON-like data and
bytes, as for socket.io emits; handlers run in the bus listener greenlet, so
they should be quick (spawn a greenlet for slow work).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn_barrel.bus import client as bus_client
from gunicorn_barrel.bus.wire import Frame

_PREFIX = "ev:"


def emit(name: str, data: Any = None) -> None:
    """Send event ``name`` with ``data`` to every worker's handlers."""
    bus_client.current().publish(_channel(name), {"data": data})


def on(name: str, handler: Callable[[Any], None]) -> None:
    """Call ``handler(data)`` in this worker for every event ``name`` from any worker."""

    def deliver(frame: Frame) -> None:
        handler(frame.payload.get("data"))

    bus_client.current().subscribe(_channel(name), deliver)


def _channel(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError("event names are non-empty strings")
    return _PREFIX + name
