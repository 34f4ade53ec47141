"""What barrel holds in one worker, in one object made in post_worker_init and closed at exit.

``WorkerContext.start`` runs after gunicorn loaded the app and gevent patched
the worker: it creates the bus client (zeromq or Redis) and the store client
(embedded or Redis) and connects them to this process's bus port and store
object, so that what the app registered at import (``events.on``, store
watches, ``forward_to_room``, BarrelManagers) takes effect now. ``close`` logs
the worker's counters (through gunicorn's error log) and closes both clients.
"""
from __future__ import annotations

import dataclasses
import logging
import os

from gunicorn_barrel import store as store_api
from gunicorn_barrel.bus import api as bus_api
from gunicorn_barrel.bus.api import Bus
from gunicorn_barrel.config.settings import BarrelSettings
from gunicorn_barrel.sio import recovery
from gunicorn_barrel.store.base import Store
from gunicorn_barrel.worker import backpressure

log = logging.getLogger("gunicorn_barrel.worker")


@dataclasses.dataclass(eq=False)
class WorkerContext:
    """One barrel worker's settings, runtime directory, bus and store clients."""

    settings: BarrelSettings
    runtime_dir: str
    bus: Bus
    store: Store | None  # None with store = 'none'
    pid: int = dataclasses.field(default_factory=os.getpid)

    @classmethod
    def start(cls, settings: BarrelSettings, runtime_dir: str) -> WorkerContext:
        """Connect this worker's bus and store; the app's registrations take effect."""
        global _current
        recovery.configure(recovery.Limits(settings.recovery_max_disconnection,
                                           settings.recovery_max_packets))
        bus = _connect_bus(settings, runtime_dir)
        try:
            bus_api.port.connect(bus)
            if hasattr(bus, "wait_subscribed"):
                # A Redis bus subscribes once the handlers are in (all at once on a cluster).
                bus.wait_subscribed()
            store = _open_store(settings, runtime_dir, bus)
            try:
                store_api.worker_store().connect(store)
            except BaseException:
                if store is not None:
                    store.close()
                raise
        except BaseException:
            if bus_api.port.connected() is bus:
                bus_api.port.close()
            else:
                bus.close()
            raise
        _current = cls(settings, runtime_dir, bus, store)
        return _current

    def counters(self) -> dict[str, int]:
        """The bus, slow-client and store counters of this worker (``gunicorn_barrel.counters()``)."""
        merged = {**self.bus.counters, **backpressure.counters}
        if self.store is not None:
            merged.update(self.store.counters())
        return merged

    def close(self) -> None:
        """Log the counters, close the store then the bus (the store's changes travel on it)."""
        global _current
        log.info("barrel worker %s exiting; counters %s", self.pid, self.counters())
        store_api.worker_store().close()
        bus_api.port.close()
        if _current is self:
            _current = None


_current: WorkerContext | None = None  # set by WorkerContext.start and close only


def current() -> WorkerContext | None:
    """This worker's context, or None (not a barrel worker, not started yet, or exiting)."""
    return _current if _current is not None and _current.pid == os.getpid() else None


def _connect_bus(settings: BarrelSettings, runtime_dir: str) -> Bus:
    if settings.bus == "zmq":
        from gunicorn_barrel.bus.zeromq import client as zmq_client

        return zmq_client.connect(runtime_dir, settings.max_frame_size,
                                  gap_timeout=settings.gap_timeout, max_unacked=settings.max_unacked)
    from gunicorn_barrel.bus.redis import client as redis_client

    return redis_client.connect(settings.bus, settings.max_frame_size, settings.bus_namespace,
                                settings.max_unacked, settings.gap_timeout)


def _open_store(settings: BarrelSettings, runtime_dir: str, bus: Bus) -> Store | None:
    if settings.store == "none":
        return None
    if settings.store == "embedded":
        from gunicorn_barrel.store.embedded.client import EmbeddedStore

        return EmbeddedStore(runtime_dir, settings.store_timeout, settings.store_max_value, bus)
    from gunicorn_barrel.store.redis_backend import RedisStore

    return RedisStore(settings.store, settings.store_timeout, settings.store_max_value)
