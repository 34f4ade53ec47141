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
    on_starting       arbiter  create the runtime dir, launch and supervise the broadcaster,
                               make the key that signs session ids
    post_worker_init  worker   connect this worker's bus client (after gevent patching)
    worker_exit       worker   close the bus client
    on_reload         arbiter  (HUP) apply reloaded settings; the broadcaster stays
    on_exit           arbiter  stop the broadcaster, remove the runtime dir
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
from gunicorn_barrel.sidecar import BroadcasterSupervisor

_overrides: dict[str, object] = {}
_active: barrel_settings.BarrelSettings | None = None
_supervisor: BroadcasterSupervisor | None = None

# Settings the running broadcaster was started with; HUP cannot change them.
_FIXED_AT_START = ("runtime_dir", "max_frame_size")


def active_settings() -> barrel_settings.BarrelSettings | None:
    """The settings in force in this process, or None when the hooks are not running."""
    return _active


def supervisor() -> BroadcasterSupervisor | None:
    """The arbiter's broadcaster supervisor (None in workers and before on_starting)."""
    return _supervisor


def runtime_dir() -> str | None:
    """This instance's private runtime directory (inherited by workers)."""
    return _supervisor.runtime_dir if _supervisor is not None else None


def on_starting(server: Any) -> None:
    global _active, _supervisor
    _active = barrel_settings.resolve(_overrides)
    routing.set_secret(os.urandom(32))
    if _supervisor is None:
        _supervisor = BroadcasterSupervisor(_active, server.log, server.cfg.uid, server.cfg.gid)
        _supervisor.start()


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
    if _supervisor is None or _active is None:
        raise RuntimeError("barrel hooks: on_starting did not run in the arbiter")
    bus_client.connect(
        _supervisor.runtime_dir,
        _active.max_frame_size,
        gap_timeout=_active.gap_timeout,
        max_unacked=_active.max_unacked,
    )
    manager = sys.modules.get("gunicorn_barrel.manager")
    if manager is not None:  # the app created BarrelManagers: subscribe them now
        manager.attach_all()


def worker_exit(server: Any, worker: Any) -> None:
    backpressure = sys.modules.get("gunicorn_barrel.backpressure")
    if backpressure is not None and backpressure.counters:
        server.log.info("barrel slow-client counters (pid %s): %s", os.getpid(),
                        dict(backpressure.counters))
    bus_client.close_current()  # logs the bus counters


def on_exit(server: Any) -> None:
    global _supervisor
    if _supervisor is not None and _supervisor.arbiter_pid == os.getpid():
        _supervisor.stop()
        _supervisor = None


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
