"""The bus as the rest of a worker sees it, whatever its backend (zeromq or Redis).

A worker's context (``gunicorn_barrel.worker.context``) creates its client in
``post_worker_init`` and connects it to this process's ``port``; the manager,
events and the store reach the bus through the port, and what they register
before it connects (at app import) takes effect when it does.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import gevent

from gunicorn_barrel.bus import wire

log = logging.getLogger("gunicorn_barrel.bus")

Handler = Callable[[wire.Frame], None]

# Frames delivered between two yields of the listener: a burst (a worker
# that was paused, a gap filled) must let the clients' writers drain their
# queues, or healthy clients would hit client_queue_limit.
_YIELD_EVERY = 32


class Bus(Protocol):
    """What manager.py, events.py and the store need of a worker's bus, whatever its backend."""

    origin: bytes
    pid: int
    counters: Counter[str]

    def subscribe(self, channel: str, handler: Handler) -> None: ...

    def publish(self, channel: str, payload: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...

    def wait_live(self, timeout: float | None = None) -> bool:
        """Wait until the bus delivers to this worker (its subscriptions are in effect)."""
        ...


def call_handlers(handlers: list[Handler], frame: wire.Frame, counters: Counter[str]) -> None:
    """Hand ``frame`` to its channel's handlers (in the listener greenlet), for either bus backend.

    A handler that raises is logged; the others still run. Every
    ``_YIELD_EVERY`` frames the listener yields (see there).
    """
    counters["frames_delivered"] += 1
    if counters["frames_delivered"] % _YIELD_EVERY == 0:
        gevent.sleep(0)
    for handler in handlers:
        try:
            handler(frame)
        except Exception:
            log.exception("bus handler for %s failed", frame.channel)


class BusClosed(RuntimeError):
    """The bus client was closed; nothing more can be published."""


class BusNotConnected(RuntimeError):
    """Publishing before this worker's bus connected, or outside a barrel worker."""


_NOT_CONNECTED = (
    "the barrel bus is not connected in this process: it connects when a barrel worker "
    "starts (gunicorn's post_worker_init, after the app was imported). Handlers can be "
    "registered at import (events.on, store watch, forward_to_room); publish from request "
    "or event handlers. Outside gunicorn, or without the barrel hooks, there is no bus: the "
    "config must call gunicorn_barrel.hooks.install(globals()) (see example_confs/barrel_conf.py)"
)


class BusPort:
    """This process's way onto the bus, before and after its client connects.

    gunicorn imports the app before ``post_worker_init`` (in the arbiter, before
    fork, with ``--preload``), so what an app registers at import cannot reach
    a bus client yet: the port keeps it (inherited across fork) and hands it
    to the client the worker's context connects, in every worker.
    Publishing needs the client and raises BusNotConnected before it.
    """

    def __init__(self) -> None:
        self._bus: Bus | None = None
        self._closed = False
        self._subscriptions: list[tuple[str, Handler]] = []
        self._on_connect: list[Callable[[Bus], None]] = []
        self._on_closing: list[Callable[[], None]] = []

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler(frame)`` for each frame of ``channel``, from the moment the bus connects."""
        if channel.startswith("\x00"):
            raise ValueError("channels starting with NUL are reserved for the bus")
        if self._bus is not None:
            self._bus.subscribe(channel, handler)
        else:
            self._subscriptions.append((channel, handler))

    def when_connected(self, callback: Callable[[Bus], None]) -> None:
        """Call ``callback(bus)`` once the bus is connected (at once if it is)."""
        self._on_connect.append(callback)
        if self._bus is not None:
            callback(self._bus)

    def when_closing(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when this process's bus is about to close (it can still publish)."""
        self._on_closing.append(callback)

    def publish(self, channel: str, payload: Mapping[str, Any]) -> None:
        """``Bus.publish`` on the connected bus; BusNotConnected before it connects."""
        self.bus().publish(channel, payload)

    def bus(self) -> Bus:
        """The connected bus client; BusNotConnected (BusClosed once closed) otherwise."""
        bus = self._bus
        if bus is None:
            if self._closed:
                raise BusClosed("the barrel bus client is closed: this worker is exiting")
            raise BusNotConnected(_NOT_CONNECTED)
        return bus

    def connected(self) -> Bus | None:
        """The connected bus client, or None."""
        return self._bus

    def connect(self, bus: Bus) -> None:
        """Make ``bus`` this process's bus; what was registered before takes effect now."""
        if self._bus is not None or self._closed:
            raise RuntimeError("this process's barrel bus was connected already")
        self._bus = bus
        pending, self._subscriptions = self._subscriptions, []
        for channel, handler in pending:
            bus.subscribe(channel, handler)
        for callback in list(self._on_connect):
            callback(bus)

    def close(self) -> None:
        """Close the bus client (the worker is exiting); publishing raises BusClosed from now on."""
        closing, self._on_closing = self._on_closing, []
        for callback in closing:
            try:
                callback()
            except Exception:
                log.exception("barrel bus: a closing callback failed")
        bus, self._bus = self._bus, None
        self._closed = True
        if bus is not None:
            bus.close()

    def _forget_after_fork(self) -> None:
        # A client belongs to the process that created it (its sockets,
        # greenlets, origin); registrations are inherited on purpose.
        self._bus = None
        self._closed = False
        self._on_closing = []  # registered by the parent's connected client's users


port = BusPort()
os.register_at_fork(after_in_child=port._forget_after_fork)


def broadcaster_counters() -> dict[str, int]:
    """The federation counters of this worker's broadcaster, as of its last heartbeat."""
    # A Redis bus has no broadcaster.
    return dict(getattr(port.connected(), "broadcaster_counters", {}))
