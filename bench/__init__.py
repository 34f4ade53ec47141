"""Benchmarks of gunicorn_barrel: `python -m bench` from the repo root.

No imports here: `python -m bench.polling_load` must be able to
monkey-patch with gevent before any socket module is loaded.
"""

# How the load generator opens connections: one per client loop, per session, per request.
CONNECTION_MODES = ("keepalive", "per-session", "per-request")
