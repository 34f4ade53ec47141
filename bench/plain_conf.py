"""gunicorn config for the peer row: gunicorn's own gevent worker, no barrel."""
worker_class = "gevent"
