"""A key/value store shared by all workers, with change events.

    from gunicorn_barrel.store import get_store
    store = get_store()
    store.set("visits:abc", 0)
    store.incr("visits:abc")
    store.watch("visits:", lambda change: ...)

The backend is the ``store`` barrel setting: the embedded side process
(default) or Redis. See ``gunicorn_barrel.store.base`` for the API and errors.
"""
from __future__ import annotations

import os

from gunicorn_barrel.store.base import (
    Change,
    Store,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    StoreValueError,
)

__all__ = [
    "Change", "Store", "StoreError", "StoreTimeout", "StoreUnavailable", "StoreValueError",
    "get_store", "close_store",
]

_store: Store | None = None
_store_pid: int | None = None
_closed_pid: int | None = None  # this worker closed its store: it is exiting


def get_store() -> Store:
    """This worker's store client, created on first use from the barrel settings."""
    global _store, _store_pid
    if _store is not None and _store_pid == os.getpid():
        return _store
    if _closed_pid == os.getpid():
        raise StoreError("the barrel store client is closed: this worker is exiting")
    from gunicorn_barrel import hooks

    settings = hooks.active_settings()
    runtime_dir = hooks.runtime_dir()
    if settings is None or runtime_dir is None:
        raise StoreError("no barrel store here: run gunicorn with the barrel hooks installed")
    if settings.store == "none":
        raise StoreError("the barrel store is disabled (store = 'none')")
    if settings.store == "embedded":
        from gunicorn_barrel.store.embedded import EmbeddedStore

        _store = EmbeddedStore(runtime_dir, settings.store_timeout, settings.store_max_value)
    else:
        from gunicorn_barrel.store.redis_backend import RedisStore

        _store = RedisStore(settings.store, settings.store_timeout, settings.store_max_value)
    _store_pid = os.getpid()
    return _store


def close_store() -> None:
    global _store, _closed_pid
    if _store is not None and _store_pid == os.getpid():
        _store.close()
    _store = None
    _closed_pid = os.getpid()
