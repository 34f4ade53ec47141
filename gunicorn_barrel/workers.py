"""The worker class to name in a gunicorn config (a stable public path)::

    worker_class = "gunicorn_barrel.workers.BarrelWorker"

It lives in ``gunicorn_barrel.worker.barrel_worker``.
"""
from gunicorn_barrel.worker.barrel_worker import BarrelWorker

__all__ = ["BarrelWorker"]
