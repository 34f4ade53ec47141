"""`python -m bench.peers`: gunicorn_barrel against python-socketio and Node socket.io.

No imports here: the server app (bench.peers.app) is imported in gevent workers.
"""
