"""A key/value store shared by all workers, with change events.

    from gunicorn_barrel.store import get_store
    store = get_store()
    store.watch("visits:", lambda change: ...)   # at app import too: every worker
    store.set("visits:abc", 0)                   # once the worker runs
    store.incr("visits:abc")

The backend is the ``store`` barrel setting: the embedded side process
(default) or Redis. See ``gunicorn_barrel.store.base`` for the API and errors.

``get_store()`` returns this process's one store object at any time. Its
backend connects when the worker starts (``post_worker_init``, after gunicorn
imported the app, in the arbiter with ``--preload``): watches made before take
effect then, in every worker; reads and writes before raise StoreError.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from gunicorn_barrel.config import instance
from gunicorn_barrel.metrics import catalog, recorder
from gunicorn_barrel.store.base import (
    Change,
    Store,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    StoreValueError,
    Watcher,
)

__all__ = [
    "Change", "Store", "StoreError", "StoreTimeout", "StoreUnavailable", "StoreValueError",
    "get_store", "close_store",
]

_NOT_CONNECTED = (
    "the barrel store is not connected in this process: it connects when a barrel worker "
    "starts (gunicorn's post_worker_init, after the app was imported). At import, watch() "
    "(and forward_to_room) can be called; call the rest from request or event handlers. "
    "Outside gunicorn, or without the barrel hooks, there is no store: the config must call "
    "gunicorn_barrel.hooks.install(globals())"
)
_DISABLED = "the barrel store is disabled (store = 'none')"

_OPERATIONS = catalog.metric("barrel_store_operations_total")
_DURATION = catalog.metric("barrel_store_operation_duration_seconds")
T = TypeVar("T")


def _measured(op: str, call: Callable[[], T]) -> T:
    """``call()``, counted and timed in this process's metrics under ``op``."""
    started = time.perf_counter()
    result = "error"
    try:
        value = call()
        result = "ok"
        return value
    except StoreTimeout:
        result = "timeout"
        raise
    finally:
        metrics = recorder.process()
        metrics.histogram(_DURATION, op).observe(time.perf_counter() - started)
        metrics.series(_OPERATIONS, op, result).value += 1


class WorkerStore(Store):
    """This process's store: the one object ``get_store()`` returns, before and after it connects.

    The worker's context connects it to the backend the settings name; until
    then watches are kept (across fork too) and every other call raises.
    """

    def __init__(self) -> None:
        self._backend: Store | None = None
        self._state = "waiting"  # then "connected", "disabled" (store = 'none') or "closed"
        self._watchers: list[tuple[str, Watcher]] = []

    def backend(self) -> Store:
        """The connected backend; StoreError with the reason otherwise."""
        backend = self._backend
        if backend is None:
            if self._state == "disabled":
                raise StoreError(_DISABLED)
            if self._state == "closed":
                raise StoreError("the barrel store client is closed: this worker is exiting")
            raise StoreError(_NOT_CONNECTED)
        return backend

    def connect(self, backend: Store | None) -> None:
        """Use ``backend`` (None: the store is disabled); the watches made before take effect now."""
        if self._state != "waiting":
            raise RuntimeError("this process's barrel store was connected already")
        pending, self._watchers = self._watchers, []
        if backend is None:
            self._state = "disabled"
            if pending:
                raise StoreError(f"the app watches store keys ({pending[0][0]!r}...) but {_DISABLED}")
            return
        self._backend, self._state = backend, "connected"
        for prefix, callback in pending:
            backend.watch(prefix, callback)

    def _forget_after_fork(self) -> None:
        # A backend belongs to the process that opened it; watches are inherited on purpose.
        self._backend, self._state = None, "waiting"

    # Each call is counted and timed (barrel_store_operations_total, ..._duration_seconds).
    def get(self, key: str, default: Any = None) -> Any:
        backend = self.backend()
        return _measured("get", lambda: backend.get(key, default))

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        backend = self.backend()
        _measured("set", lambda: backend.set(key, value, ttl))

    def delete(self, key: str) -> bool:
        backend = self.backend()
        return _measured("delete", lambda: backend.delete(key))

    def incr(self, key: str, amount: int = 1) -> int:
        backend = self.backend()
        return _measured("incr", lambda: backend.incr(key, amount))

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None = None) -> bool:
        backend = self.backend()
        return _measured("compare_and_set", lambda: backend.compare_and_set(key, expected, value, ttl))

    def scan(self, prefix: str, limit: int = 1000) -> dict[str, Any]:
        backend = self.backend()
        return _measured("scan", lambda: backend.scan(prefix, limit))

    def watch(self, prefix: str, callback: Watcher) -> None:
        """Call ``callback(change)`` for every change of a key with ``prefix``, in this worker.

        Called before the store connects (at app import), it takes effect when it does.
        """
        if self._state == "waiting":
            if not isinstance(prefix, str):
                raise StoreValueError(f"prefix must be a string, got {type(prefix).__name__}")
            self._watchers.append((prefix, callback))
            return
        self.backend().watch(prefix, callback)

    def counters(self) -> dict[str, int]:
        return self._backend.counters() if self._backend is not None else {}

    def close(self) -> None:
        """Close the backend (the worker is exiting); later calls raise StoreError."""
        backend, self._backend = self._backend, None
        if self._state != "disabled":
            self._state = "closed"
        if backend is not None:
            backend.close()


_store = WorkerStore()  # this process's; connected and closed by the worker's context


def get_store() -> Store:
    """This process's store (its backend connects when the worker starts)."""
    settings = instance.settings()
    if settings is not None and settings.store == "none":
        raise StoreError(_DISABLED)
    return _store


def worker_store() -> WorkerStore:
    """The object get_store() returns, for the worker's context to connect and close."""
    return _store


def close_store() -> None:
    """Close this worker's store client (the worker's context does it at exit)."""
    _store.close()


os.register_at_fork(after_in_child=_store._forget_after_fork)
