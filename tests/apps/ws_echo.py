"""A WebSocket echo server on barrel's own WebSocket (gunicorn_barrel.ws), for conformance tests.

Run under the barrel worker like any app (``tests.apps.ws_echo:wsgi``): every
request but ``/ready-check`` is a WebSocket upgrade whose messages are sent
back as they came (text as text, binary as binary). permessage-deflate is
accepted when offered (the ``websocket_deflate`` setting applies to engine.io
requests only); messages of ``websocket_deflate_min_size`` bytes or more are
sent back compressed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gunicorn_barrel.ws.connection import BarrelWebSocket

# Autobahn|Testsuite's largest messages (cases 9.*) are 16 MiB.
MAX_MESSAGE = 16 * 1024 * 1024 + 1024


class _Limits:
    """What BarrelWebSocket reads from engine.io's server: the largest message."""

    max_http_buffer_size = MAX_MESSAGE


def _echo(ws: BarrelWebSocket) -> None:
    while True:
        message = ws.wait()
        if message is None:
            return
        ws.send(message)


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/ready-check":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ready"]
    if environ.get("PATH_INFO") == "/favicon.ico":  # a browser's page asks for it
        start_response("204 No Content", [])
        return []
    return BarrelWebSocket(_echo, _Limits())(environ, start_response)
