"""gunicorn config for a socket.io app on several workers: copy these lines.

    gunicorn -c example_confs/barrel_conf.py -w 4 -b 127.0.0.1:8000 demos.chat.app:wsgi

Command-line flags (-w, -b, -k, ...) win over what this file sets.
A config file of your own needs only the worker_class line and the
hooks.install() call (after your own hooks, which it chains with barrel's).
"""
from gunicorn_barrel import hooks

worker_class = "gunicorn_barrel.workers.BarrelWorker"
workers = 4
# Clients a worker may hold at once (each WebSocket or polling client keeps a
# connection open): gunicorn's default of 1,000 would leave later ones hanging.
# The arbiter raises its open-files soft limit to match, up to the hard limit
# (README: "Many clients: worker_connections and open files").
worker_connections = 10_000
# Barrel settings go to install() (or BARREL_* environment variables, which
# win); unknown names or bad values stop gunicorn with a clear error.
hooks.install(globals(), websocket_deflate=False)
