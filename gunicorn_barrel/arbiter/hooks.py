"""gunicorn server hooks that run the barrel bus, and ``install()`` to add them.

In a gunicorn config file::

    from gunicorn_barrel import hooks
    worker_class = "gunicorn_barrel.workers.BarrelWorker"
    hooks.install(globals(), max_frame_size=2 * 1024 * 1024)

``install()`` validates the barrel settings at once and sets the hooks below
in the config namespace, chained with hooks the file already defined (call it
after them): the user's startup hooks run after barrel's, so they can use the
bus; the user's exit hooks run before barrel's, so they still can. Its
``side_processes`` argument declares side processes of the user's own
(``SideProcess``, see ``arbiter.user_processes``).

What runs where:
    on_starting       arbiter  create the runtime dir, launch and supervise the side
                               processes (broadcaster, embedded store: none with a
                               Redis bus; the metrics exporter with metrics_listen or
                               statsd; then the user's), make the key that signs
                               session ids
    post_worker_init  worker   the BarrelWorker makes its context: bus client (zmq or
                               Redis, after gevent patching) and store client; what
                               the app registered at import takes effect
    worker_exit       worker   the BarrelWorker logs its counters and closes them
    on_reload         arbiter  (HUP) apply reloaded settings; barrel's side processes
                               stay, the user's are kept or restarted as declared
    on_exit           arbiter  stop the side processes, remove the runtime dir
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from gunicorn.config import validate_callable

from gunicorn_barrel.arbiter import exporter, snapshot, user_processes
from gunicorn_barrel.arbiter.supervisor import SideProcessSupervisor
from gunicorn_barrel.config import arguments, instance
from gunicorn_barrel.config import settings as barrel_settings
from gunicorn_barrel.config.side_processes import SideProcess, declare
from gunicorn_barrel.runtime import endpoints, logs, open_files, sids

_overrides: dict[str, object] = {}
_declared: tuple[SideProcess, ...] = ()  # the user's side processes, from install()


@dataclasses.dataclass
class _Instance:
    """What on_starting set up in the arbiter (inherited by every worker)."""

    arbiter_pid: int
    runtime_dir: str
    side_processes: list[SideProcessSupervisor]


_instance: _Instance | None = None


def active_settings() -> barrel_settings.BarrelSettings | None:
    """The settings in force in this process, or None when the hooks are not running."""
    return instance.settings()


def supervisor(name: str = barrel_settings.BROADCASTER) -> SideProcessSupervisor | None:
    """The arbiter's supervisor of side process ``name`` (None before on_starting)."""
    if _instance is None:
        return None
    return next((p for p in _instance.side_processes if p.name == name), None)


def runtime_dir() -> str | None:
    """This instance's private runtime directory (inherited by workers)."""
    return instance.runtime_dir()


def _side_processes(
    settings: barrel_settings.BarrelSettings, rdir: str, server: Any
) -> list[SideProcessSupervisor]:
    common = (rdir, settings, server.log, server.cfg.uid, server.cfg.gid)
    broadcaster, store = barrel_settings.BROADCASTER, barrel_settings.STORE_SERVER
    procs = []
    # A Redis bus: workers talk to Redis, and the store cannot be embedded.
    if settings.bus == "zmq":
        procs.append(SideProcessSupervisor(
            broadcaster, "gunicorn_barrel.bus.zeromq.broadcaster",
            arguments.command_line(settings, broadcaster), *common,
        ))
    if settings.bus == "zmq" and settings.store == "embedded":
        procs.append(SideProcessSupervisor(
            store, "gunicorn_barrel.store.embedded.server",
            arguments.command_line(settings, store), *common,
        ))
    if exporter.wanted(settings, server.cfg):
        name = barrel_settings.EXPORTER
        procs.append(SideProcessSupervisor(
            name, exporter.MODULE,
            arguments.command_line(settings, name) + exporter.statsd_args(server.cfg), *common,
        ))
    return procs


def _user_process(settings: barrel_settings.BarrelSettings, rdir: str, server: Any
                  ) -> Callable[[SideProcess], user_processes.UserSideProcess]:
    def make(declaration: SideProcess) -> user_processes.UserSideProcess:
        return user_processes.UserSideProcess(declaration, rdir, settings, server.log,
                                              server.cfg.uid, server.cfg.gid)

    return make


def _open_files_for(server: Any) -> None:
    # The workers inherit the arbiter's limit: raised before they fork.
    connections = int(server.cfg.worker_connections)
    files = open_files.ensure(connections)
    if files.raised:
        server.log.info("barrel: open-files limit raised from %s to %s for worker_connections %s",
                        files.soft_before, files.soft, connections)
    if not files.enough:
        server.log.warning(
            "barrel: the open-files hard limit (%s) is below what worker_connections %s needs (%s): "
            "a worker will refuse connections past about %s clients; raise it (ulimit -Hn, "
            "systemd LimitNOFILE=) or lower worker_connections",
            files.hard, connections, files.needed, max(files.soft - open_files.SPARE, 0))


def on_starting(server: Any) -> None:
    global _instance
    logs.follow_gunicorn(server.log)  # barrel's records in gunicorn's error log, here and in workers
    _open_files_for(server)
    settings = _resolve(_overrides)
    sids.set_secret(os.urandom(32))
    if _instance is not None:
        instance.record(settings, _instance.runtime_dir)
        return
    rdir = endpoints.create_runtime_dir(settings.runtime_dir, server.cfg.uid, server.cfg.gid)
    # The user's last: they may emit on the bus as soon as they run.
    make = _user_process(settings, rdir, server)
    started = _Instance(os.getpid(), rdir,
                        [*_side_processes(settings, rdir, server), *map(make, _declared)])
    try:
        for proc in started.side_processes:
            proc.start()
    except BaseException:
        _stop(started)
        raise
    _write_snapshots(started)
    _instance = started
    instance.record(settings, rdir)


def on_reload(server: Any) -> None:
    logs.follow_gunicorn(server.log)  # gunicorn's log level may have changed
    _open_files_for(server)  # worker_connections may have changed
    active = instance.settings()
    assert active is not None
    reloaded = _resolve(_overrides)
    for name in barrel_settings.FIXED_AT_START:
        if getattr(reloaded, name) != getattr(active, name):
            server.log.warning("barrel setting %s changed; it takes effect on restart", name)
            reloaded = dataclasses.replace(reloaded, **{name: getattr(active, name)})
    instance.record(reloaded, instance.runtime_dir())
    if _instance is not None and _instance.arbiter_pid == os.getpid():
        user_processes.reload(_instance.side_processes, _declared,
                              _user_process(reloaded, _instance.runtime_dir, server), server.log)
        _write_snapshots(_instance)


def _write_snapshots(running: _Instance) -> None:
    """The arbiter's metrics snapshot: written now, and after each restart of a side process."""
    for proc in running.side_processes:
        proc.on_change = lambda _proc: snapshot.write(running.runtime_dir, running.side_processes)
    snapshot.write(running.runtime_dir, running.side_processes)


def _resolve(overrides: dict[str, object]) -> barrel_settings.BarrelSettings:
    """The settings from the config file and environment, federation keys checked."""
    settings = barrel_settings.resolve(overrides)
    if settings.federation_listen or settings.federation_peers:
        # Imported here: zmq only when federation is on.
        from gunicorn_barrel.federation.keys import check_settings

        check_settings(settings.federation_keys, settings.federation_peers)
    return settings


def post_worker_init(worker: Any) -> None:
    # The worker starts its own bus and store clients (after gevent patched it):
    # nothing of the worker side is imported into the arbiter.
    start = getattr(worker, "start_barrel", None)
    if start is None:
        raise RuntimeError("the barrel hooks need worker_class = "
                           "'gunicorn_barrel.workers.BarrelWorker' (see example_confs/barrel_conf.py)")
    settings, rdir = instance.settings(), instance.runtime_dir()
    if settings is None or rdir is None:
        raise RuntimeError("barrel hooks: on_starting did not run in the arbiter")
    logs.follow_gunicorn(worker.log)
    start(settings, rdir)


def worker_exit(server: Any, worker: Any) -> None:
    stop = getattr(worker, "stop_barrel", None)
    if stop is not None:
        stop()


def on_exit(server: Any) -> None:
    global _instance
    if _instance is not None and _instance.arbiter_pid == os.getpid():
        _stop(_instance)
        _instance = None
        instance.record(None, None)


def _stop(instance: _Instance) -> None:
    # The user's first (they may use the store and the bus), then the store,
    # which publishes through the broadcaster.
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


def install(namespace: MutableMapping[str, Any], *,
            side_processes: Sequence[SideProcess | Mapping[str, Any]] = (), **settings: object) -> None:
    """Validate barrel ``settings`` and ``side_processes``, and add the barrel hooks to a config
    namespace."""
    global _declared
    _resolve(settings)  # fail at config load, with the setting's name
    declared = declare(side_processes)
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
    _declared = declared
