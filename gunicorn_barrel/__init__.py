"""gunicorn_barrel: socket.io apps on every gunicorn worker.

Public names: BarrelManager (the python-socketio client manager). The worker
class is ``gunicorn_barrel.workers.BarrelWorker``; the config-file hooks are in
``gunicorn_barrel.hooks``; the whole cluster as one socket.io server is
``gunicorn_barrel.cluster`` (and the Admin UI over it ``gunicorn_barrel.admin``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["BarrelManager", "__version__", "counters"]

if TYPE_CHECKING:
    from gunicorn_barrel.sio.manager import BarrelManager


def counters() -> dict[str, int]:
    """This process's barrel counters: bus (frames pushed, delivered, duplicates
    dropped, gaps, resends, broadcaster restarts seen, frames refused; on a Redis
    bus also reconnects, publish failures, NACKs sent, frames replayed), slow
    clients (clients_dropped_slow, packets_dropped_slow, client_queue_peak) and,
    with a Redis store, store_watch_reconnects and store_watch_gaps. Empty
    outside a running barrel worker."""
    from gunicorn_barrel.worker import context

    worker = context.current()
    return worker.counters() if worker is not None else {}


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import gunicorn_barrel` in a config file does
    # not pull python-socketio into the arbiter before it is needed.
    if name == "BarrelManager":
        from gunicorn_barrel.sio.manager import BarrelManager

        return BarrelManager
    raise AttributeError(name)
