"""For the code of a side process declared in the gunicorn config (``hooks.SideProcess``).

    from gunicorn_barrel import side

    def main() -> None:
        side.setup_logging()            # records at their level in gunicorn's error log
        stop = side.stop_signals()      # first, before any thread starts
        with side.emitter() as em:      # the instance's own bus
            side.ready()                # only needed with ready_timeout in the declaration
            while not stop.wait(30):    # True once SIGTERM (or SIGINT) came
                em.emit("news", {"title": "report ready"})      # every worker's clients
                em.event("cache-clear", {"why": "import done"})  # every worker's events.on handlers
                em.flush(5)             # True once the bus took every message

The supervisor names the instance in the process's environment
(``GUNICORN_BARREL_*``, ``runtime.side_env``); these functions read it and
raise RuntimeError in a process it did not start.
"""
from __future__ import annotations

from gunicorn_barrel.runtime import logs, side_env
from gunicorn_barrel.runtime.stop_signals import StopSignals
from gunicorn_barrel.sio.emitting import EmitterBase

__all__ = ["StopSignals", "emitter", "instance", "ready", "setup_logging", "stop_signals"]


def instance() -> side_env.SideInstance:
    """This side process's name and instance (runtime directory, arbiter pid, bus)."""
    found = side_env.current()
    if found is None:
        raise RuntimeError(f"not a barrel side process ({side_env.RUNTIME_DIR} is not set): "
                           "declare it in the gunicorn config with hooks.SideProcess")
    return found


def emitter() -> EmitterBase:
    """An emitter over this instance's bus (zmq: ``LocalEmitter``; Redis: ``RedisLocalEmitter``):
    emit(), event(), flush(), close(); a context manager."""
    found = instance()
    if found.bus == "zmq":
        from gunicorn_barrel.sio.local_emitter import LocalEmitter

        return LocalEmitter(found.runtime_dir, found.max_frame_size, arbiter_pid=found.arbiter_pid)
    from gunicorn_barrel.sio.redis_local_emitter import RedisLocalEmitter

    return RedisLocalEmitter(found.bus, found.bus_namespace, found.max_frame_size,
                             arbiter_pid=found.arbiter_pid)


def ready() -> None:
    """Tell the supervisor this process is ready (gunicorn's start waits for it with ready_timeout)."""
    side_env.mark_ready(instance())


def setup_logging() -> None:
    """Send this process's log records to gunicorn's error log at their level (Python's logging)."""
    logs.side_process_logging()


def stop_signals() -> StopSignals:
    """SIGTERM and SIGINT, blocked from now on and waited for with ``wait(timeout)``.

    Call it before starting any thread (``emitter()`` starts one). A handler
    that sets a ``threading.Event`` can deadlock the process (see
    ``runtime/stop_signals.py``); this cannot.
    """
    return StopSignals()
