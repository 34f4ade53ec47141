"""Patch of python-socketio's CONNECT handling: barrel keeps what each CONNECT packet carried.

``socketio.Server._handle_connect(eio_sid, namespace, data)`` hands the
packet's auth to the app's connect handler and forgets it; python-socketio
keeps nothing of it. The cluster API's fetch_sockets reports it (as Node's
``socket.handshake.auth``), so the wrapper hands it to the BarrelManager
first, then runs python-socketio's own handling unchanged; a connection that
was refused is forgotten again. Servers with another manager are untouched.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn_barrel.compat import shapes

SOCKETIO = "python-socketio"
PARAMETERS = ("self", "eio_sid", "namespace", "data")


def check() -> None:
    import socketio

    shapes.signature(SOCKETIO, socketio.Server, "_handle_connect", "socketio.Server._handle_connect",
                     PARAMETERS)


def recording_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    """``_handle_connect`` that first gives the BarrelManager the packet's auth."""
    from gunicorn_barrel.sio.manager import BarrelManager

    def _handle_connect(self: Any, eio_sid: str, namespace: str | None, data: Any) -> Any:
        manager = self.manager
        if not isinstance(manager, BarrelManager):
            return original(self, eio_sid, namespace, data)
        key = namespace or "/"
        manager.remember_connect(eio_sid, key, data)
        try:
            return original(self, eio_sid, namespace, data)
        finally:
            if manager.sid_from_eio_sid(eio_sid, key) is None:  # refused, or gone already
                manager.handshakes.pop((eio_sid, key), None)

    return _handle_connect
