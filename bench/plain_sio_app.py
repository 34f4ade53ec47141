"""A plain python-socketio app (no barrel manager), served by gunicorn's gevent worker.

The fallback WSGI app answers any other path with 200: tests.harness.Gunicorn
waits for `GET /ready-check` to answer 200 before it reports the server up.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import socketio

sio = socketio.Server(async_mode="gevent")


def plain_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"plain route from {os.getpid()}".encode()]


wsgi = socketio.WSGIApp(sio, plain_wsgi)
