"""gunicorn_barrel: socket.io apps on every gunicorn worker.

Public names: BarrelManager (the python-socketio client manager). The worker
class is ``gunicorn_barrel.workers.BarrelWorker``; the config-file hooks are in
``gunicorn_barrel.hooks``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["BarrelManager", "__version__", "counters"]

if TYPE_CHECKING:
    from gunicorn_barrel.manager import BarrelManager


def counters() -> dict[str, int]:
    """This process's barrel counters: bus (frames pushed, delivered, duplicates
    dropped, gaps, resends, broadcaster restarts seen, frames refused; on a Redis
    bus also reconnects, publish failures, NACKs sent, frames replayed) and slow
    clients (clients_dropped_slow, packets_dropped_slow, client_queue_peak)."""
    import sys

    from gunicorn_barrel import backpressure
    from gunicorn_barrel.bus import client

    merged = {**client.counters(), **backpressure.counters}
    redis_backend = sys.modules.get("gunicorn_barrel.store.redis_backend")
    if redis_backend is not None:  # store_watch_reconnects, store_watch_gaps
        merged.update(redis_backend.counters)
    return merged


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import gunicorn_barrel` in a config file does
    # not pull python-socketio into the arbiter before it is needed.
    if name == "BarrelManager":
        from gunicorn_barrel.manager import BarrelManager

        return BarrelManager
    raise AttributeError(name)
