"""gunicorn server hooks that run the barrel bus, and ``install()`` to add them.

In a gunicorn config file::

    from gunicorn_barrel import hooks
    worker_class = "gunicorn_barrel.workers.BarrelWorker"
    hooks.install(globals(), max_frame_size=2 * 1024 * 1024)

``install()`` validates the barrel settings at once and sets the hooks below
in the config namespace, chained with hooks the file already defined (call it
after them): the user's startup hooks run after barrel's, so they can use the
bus; the user's exit hooks run before barrel's, so they still can.

What runs where:
    on_starting       arbiter  create the runtime dir, launch and supervise the side
                               processes (broadcaster, embedded store; none with a
                               Redis bus), make the key that signs session ids
    post_worker_init  worker   connect this worker's bus client (zmq or Redis, after
                               gevent patching)
    worker_exit       worker   close the store and bus clients
    on_reload         arbiter  (HUP) apply reloaded settings; side processes stay
    on_exit           arbiter  stop the side processes, remove the runtime dir
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

from gunicorn.config import validate_callable

from gunicorn_barrel import routing
from gunicorn_barrel import settings as barrel_settings
from gunicorn_barrel.bus import client as bus_client
from gunicorn_barrel.bus import endpoints
from gunicorn_barrel.sidecar import SideProcessSupervisor

_overrides: dict[str, object] = {}
_active: barrel_settings.BarrelSettings | None = None


@dataclasses.dataclass
class _Instance:
    """What on_starting set up in the arbiter (inherited by every worker)."""

    arbiter_pid: int
    runtime_dir: str
    side_processes: list[SideProcessSupervisor]


_instance: _Instance | None = None

# Settings the running side processes were started with; HUP cannot change them.
_FIXED_AT_START = ("runtime_dir", "max_frame_size", "store", "store_path", "store_durability",
                   "bus", "bus_namespace", "federation_listen", "federation_peers",
                   "federation_keys", "federation_queue_limit")


def active_settings() -> barrel_settings.BarrelSettings | None:
    """The settings in force in this process, or None when the hooks are not running."""
    return _active


def supervisor(name: str = "broadcaster") -> SideProcessSupervisor | None:
    """The arbiter's supervisor of side process ``name`` (None before on_starting)."""
    if _instance is None:
        return None
    return next((p for p in _instance.side_processes if p.name == name), None)


def runtime_dir() -> str | None:
    """This instance's private runtime directory (inherited by workers)."""
    return _instance.runtime_dir if _instance is not None else None


def _side_processes(
    settings: barrel_settings.BarrelSettings, rdir: str, server: Any
) -> list[SideProcessSupervisor]:
    common = (rdir, settings, server.log, server.cfg.uid, server.cfg.gid)
    if settings.bus != "zmq":
        return []  # a Redis bus: workers talk to Redis, and the store cannot be embedded
    procs = [SideProcessSupervisor(
        "broadcaster", "gunicorn_barrel.bus.broadcaster",
        ["--max-frame-size", str(settings.max_frame_size), *_federation_args(settings)], *common,
    )]
    if settings.store == "embedded":
        procs.append(SideProcessSupervisor(
            "store", "gunicorn_barrel.store.embedded_server",
            ["--path", settings.store_path, "--durability", settings.store_durability,
             "--max-value", str(settings.store_max_value),
             "--max-frame-size", str(settings.max_frame_size)],
            *common,
        ))
    return procs


def _federation_args(settings: barrel_settings.BarrelSettings) -> list[str]:
    if not settings.federation_listen and not settings.federation_peers:
        return []
    return ["--federation-listen", settings.federation_listen,
            "--federation-peers", settings.federation_peers,
            "--federation-keys", settings.federation_keys,
            "--federation-queue-limit", str(settings.federation_queue_limit)]


def on_starting(server: Any) -> None:
    global _active, _instance
    _active = barrel_settings.resolve(_overrides)
    routing.set_secret(os.urandom(32))
    if _instance is not None:
        return
    rdir = endpoints.create_runtime_dir(_active.runtime_dir, server.cfg.uid, server.cfg.gid)
    instance = _Instance(os.getpid(), rdir, _side_processes(_active, rdir, server))
    try:
        for proc in instance.side_processes:
            proc.start()
    except BaseException:
        _stop(instance)
        raise
    _instance = instance


def on_reload(server: Any) -> None:
    global _active
    reloaded = barrel_settings.resolve(_overrides)
    assert _active is not None
    for name in _FIXED_AT_START:
        if getattr(reloaded, name) != getattr(_active, name):
            server.log.warning("barrel setting %s changed; it takes effect on restart", name)
            reloaded = dataclasses.replace(reloaded, **{name: getattr(_active, name)})
    _active = reloaded


def post_worker_init(worker: Any) -> None:
    if _instance is None or _active is None:
        raise RuntimeError("barrel hooks: on_starting did not run in the arbiter")
    if _active.bus == "zmq":
        bus_client.connect(
            _instance.runtime_dir,
            _active.max_frame_size,
            gap_timeout=_active.gap_timeout,
            max_unacked=_active.max_unacked,
        )
    else:
        from gunicorn_barrel.bus import redis_client

        redis_client.connect(_active.bus, _active.max_frame_size, _active.bus_namespace,
                             _active.max_unacked, _active.gap_timeout)
    manager = sys.modules.get("gunicorn_barrel.manager")
    if manager is not None:  # the app created BarrelManagers: subscribe them now
        manager.attach_all()
    if _active.store == "embedded":
        from gunicorn_barrel.store import get_store

        get_store()  # its change subscription starts with the worker


def worker_exit(server: Any, worker: Any) -> None:
    backpressure = sys.modules.get("gunicorn_barrel.backpressure")
    if backpressure is not None and backpressure.counters:
        server.log.info("barrel slow-client counters (pid %s): %s", os.getpid(),
                        dict(backpressure.counters))
    store = sys.modules.get("gunicorn_barrel.store")
    if store is not None:
        store.close_store()
    bus_client.close_current()  # logs the bus counters


def on_exit(server: Any) -> None:
    global _instance
    if _instance is not None and _instance.arbiter_pid == os.getpid():
        _stop(_instance)
        _instance = None


def _stop(instance: _Instance) -> None:
    # The store publishes through the broadcaster: stop it first.
    for proc in reversed(instance.side_processes):
        proc.stop()
    endpoints.remove_runtime_dir(instance.runtime_dir)


# name -> (barrel hook, barrel runs first?)
_HOOKS: dict[str, tuple[Callable[..., None], bool]] = {
    "on_starting": (on_starting, True),
    "on_reload": (on_reload, True),
    "post_worker_init": (post_worker_init, True),
    "worker_exit": (worker_exit, False),
    "on_exit": (on_exit, False),
}


def chain(barrel_hook: Callable[..., None], user_hook: Any, barrel_first: bool = True) -> Callable[..., None]:
    """A hook that runs ``barrel_hook`` and ``user_hook`` in order, with the same arity."""
    arity = len(inspect.signature(barrel_hook).parameters)
    user = validate_callable(arity)(user_hook)
    first, second = (barrel_hook, user) if barrel_first else (user, barrel_hook)

    def chained(*args: Any) -> None:
        first(*args)
        second(*args)

    chained.__signature__ = inspect.signature(barrel_hook)  # type: ignore[attr-defined]
    chained.__name__ = barrel_hook.__name__
    chained.__barrel_hook__ = True  # type: ignore[attr-defined]
    return chained


def install(namespace: MutableMapping[str, Any], **settings: object) -> None:
    """Validate barrel ``settings`` and add the barrel hooks to a config namespace."""
    barrel_settings.resolve(settings)  # fail at config load, with the setting's name
    installed = {}
    for name, (hook, barrel_first) in _HOOKS.items():
        existing = namespace.get(name)
        if existing is None or existing is hook:
            installed[name] = hook
        elif getattr(existing, "__barrel_hook__", False):
            installed[name] = existing  # install() ran before: already chained
        else:
            installed[name] = chain(hook, existing, barrel_first)
    # Change nothing until every hook was accepted.
    namespace.update(installed)
    _overrides.clear()
    _overrides.update(settings)
