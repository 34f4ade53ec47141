"""Named events between workers, on the bus: emit in one, handle in all.

    from gunicorn_barrel import events
    events.on("cache-clear", lambda data: cache.clear())   # at app import: every worker
    events.emit("cache-clear", {"why": "deploy"})          # from any worker, once it runs

Every worker that registered a handler for the name gets the event, the
emitting worker included, once, and the events of one worker arrive in the
order it emitted them (the bus's guarantees). Data is JSON-like data and
bytes, as for socket.io emits; handlers run in the bus listener greenlet, so
they should be quick (spawn a greenlet for slow work).

``on`` may be called at app import, also with ``--preload``: the bus connects
later (post_worker_init) and every worker's handlers take effect then.
``emit`` needs the connected bus: before, it raises BusNotConnected.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn_barrel.bus import api as bus_client
from gunicorn_barrel.bus import channels
from gunicorn_barrel.bus.wire import Frame


def emit(name: str, data: Any = None) -> None:
    """Send event ``name`` with ``data`` to every worker's handlers."""
    bus_client.port.publish(channels.event_channel(name), channels.event_message(data))


def on(name: str, handler: Callable[[Any], None]) -> None:
    """Call ``handler(data)`` in this worker for every event ``name`` from any worker.

    Called at app import, the handler takes effect in every worker once its bus connects.
    """

    def deliver(frame: Frame) -> None:
        handler(frame.payload.get("data"))

    bus_client.port.subscribe(channels.event_channel(name), deliver)
