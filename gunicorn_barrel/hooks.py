"""The config-file API (a stable public path)::

    from gunicorn_barrel import hooks
    worker_class = "gunicorn_barrel.workers.BarrelWorker"
    hooks.install(globals())

Side processes of your own: ``hooks.install(globals(), side_processes=[hooks.SideProcess(...)])``.
The hooks run in the arbiter and live in ``gunicorn_barrel.arbiter.hooks``;
importing this module imports neither gevent nor zeromq.
"""
from gunicorn_barrel.arbiter.hooks import active_settings, chain, install, runtime_dir, supervisor
from gunicorn_barrel.config.side_processes import SideProcess

__all__ = ["SideProcess", "active_settings", "chain", "install", "runtime_dir", "supervisor"]
