"""An existing gunicorn config with hooks of its own, plus the barrel lines.

    gunicorn -c example_confs/with_own_hooks.py -b 127.0.0.1:8000 demos.chat.app:wsgi

Shows that barrel composes with what you already have: your hooks keep
running (startup hooks after barrel's, so they can already use the bus; exit
hooks before barrel's, so they still can), and barrel settings are passed to
install().
"""
from gunicorn_barrel import hooks

workers = 2
worker_class = "gunicorn_barrel.workers.BarrelWorker"
graceful_timeout = 5


def post_fork(server, worker):
    server.log.info("own hook: post_fork ran for worker %s", worker.pid)


def post_worker_init(worker):
    worker.log.info("own hook: post_worker_init ran in %s", worker.pid)


def on_exit(server):
    server.log.info("own hook: on_exit ran in the arbiter")


# Last, after your own hooks: install() chains itself with them.
hooks.install(globals(), max_frame_size=2 * 1024 * 1024, websocket_deflate=False)
