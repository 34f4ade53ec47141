"""Patches of python-socketio's connection handling: what barrel keeps of each connection.

``socketio.Server._handle_connect(eio_sid, namespace, data)`` hands the
CONNECT packet's auth to the app's connect handler and forgets it. The
wrapper hands it to the BarrelManager first (fetch_sockets reports it, as
Node's ``socket.handshake.auth``), and, with connection state recovery on
(``gunicorn_barrel.sio.recovery``), restores the session the auth's
``pid``/``offset`` name: python-socketio's own handling then runs unchanged,
with the session's sid as the one it generates; afterwards the missed emits go
out. ``_send_packet`` adds the session's ``pid`` to the CONNECT answer;
``_handle_eio_disconnect`` keeps the sessions of a connection that was lost.
Servers with another manager are untouched.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn_barrel.compat import engineio_sessions, shapes

SOCKETIO = "python-socketio"
PARAMETERS = ("self", "eio_sid", "namespace", "data")
SEND_PARAMETERS = ("self", "eio_sid", "pkt")
EIO_DISCONNECT_PARAMETERS = ("self", "eio_sid", "reason")


def check() -> None:
    import socketio
    from socketio import packet

    shapes.signature(SOCKETIO, socketio.Server, "_handle_connect", "socketio.Server._handle_connect",
                     PARAMETERS)
    shapes.signature(SOCKETIO, socketio.Server, "_send_packet", "socketio.Server._send_packet",
                     SEND_PARAMETERS)
    shapes.signature(SOCKETIO, socketio.Server, "_handle_eio_disconnect",
                     "socketio.Server._handle_eio_disconnect", EIO_DISCONNECT_PARAMETERS)
    shapes.attribute(SOCKETIO, packet, "CONNECT", "socketio.packet.CONNECT")
    shapes.has_attributes(SOCKETIO, packet.Packet(packet.CONNECT, {"sid": "x"}), ("packet_type", "data"),
                          "a socketio.packet.Packet")


def _barrel_manager(server: Any) -> Any:
    from gunicorn_barrel.sio.manager import BarrelManager

    manager = server.manager
    return manager if isinstance(manager, BarrelManager) else None


def recording_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    """``_handle_connect`` that gives the BarrelManager the packet's auth, and recovers sessions."""

    def _handle_connect(self: Any, eio_sid: str, namespace: str | None, data: Any) -> Any:
        manager = _barrel_manager(self)
        if manager is None:
            return original(self, eio_sid, namespace, data)
        key = namespace or "/"
        manager.remember_connect(eio_sid, key, data)
        restored_sid = manager.restore(eio_sid, key, data)
        try:
            with engineio_sessions.next_id_is(restored_sid):
                return original(self, eio_sid, namespace, data)
        finally:
            sid = manager.sid_from_eio_sid(eio_sid, key)
            if sid is None:  # refused, or gone already
                manager.handshakes.pop((eio_sid, key), None)
            if restored_sid is not None:
                manager.release_restored(restored_sid, key)

    return _handle_connect


def connect_with_pid(original: Callable[..., Any]) -> Callable[..., Any]:
    """``_send_packet`` that adds the recovery pid to a CONNECT answer ``{sid}``."""
    from socketio import packet

    def _send_packet(self: Any, eio_sid: str, pkt: Any) -> Any:
        data = pkt.data
        if pkt.packet_type == packet.CONNECT and isinstance(data, dict) and "sid" in data:
            manager = _barrel_manager(self)
            if manager is not None and manager.recovery is not None:
                pkt.data = {**data, "pid": manager.recovery.pid_for(data["sid"])}
        return original(self, eio_sid, pkt)

    return _send_packet


def keeping_lost_sessions(original: Callable[..., Any]) -> Callable[..., Any]:
    """``_handle_eio_disconnect`` that first keeps the sessions of a lost connection."""

    def _handle_eio_disconnect(self: Any, eio_sid: str, reason: Any) -> Any:
        manager = _barrel_manager(self)
        if manager is not None and manager.recovery is not None:
            manager.keep_lost_sessions(eio_sid, reason)
        return original(self, eio_sid, reason)

    return _handle_eio_disconnect
