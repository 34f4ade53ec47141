"""The Socket.IO Admin UI (npm ``@socket.io/admin-ui``) over every worker of the cluster.

python-socketio's ``sio.instrument()`` reports to the UI the sockets of the
worker the UI is connected to, and acts (join, leave, disconnect) on those
only; its connection, room and event reports already travel to the UI from
every worker, since they are emits. ``instrument`` below calls it, then:

- answers the UI's connection with the sockets of every worker
  (``Cluster.fetch_sockets`` of every namespace);
- makes every worker a server of the UI: each sends its ``server_stats``
  under its own id (``host:pid``) from the moment its bus connects;
- runs the UI's join, leave and disconnect through the cluster API, so they
  work on sockets held by any worker.

    from gunicorn_barrel import admin
    admin.instrument(sio, auth={"username": "admin", "password": "..."})
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from gunicorn_barrel.bus import api as bus_api
from gunicorn_barrel.cluster import Cluster, RemoteSocket
from gunicorn_barrel.compat import socketio_admin


def instrument(sio: Any, auth: Any, mode: str = "development", read_only: bool = False,
               namespace: str = "/admin", server_stats_interval: float = 2) -> Any:
    """``sio.instrument(...)`` (same parameters), made cluster-wide; returns its InstrumentedServer.

    ``auth``: as python-socketio's: a dict the UI's credentials must equal, a list
    of such dicts, a callable(auth) -> bool, or False for none.
    """
    cluster = Cluster(sio)
    instrumented = sio.instrument(auth=auth, mode=mode, read_only=read_only, namespace=namespace,
                                  server_stats_interval=server_stats_interval)
    socketio_admin.check(instrumented)
    ui = _ClusterAdmin(sio, cluster, auth, mode, read_only, namespace)
    sio.on("connect", ui.connect, namespace=namespace)
    if mode == "development" and not read_only:
        sio.on("join", ui.join, namespace=namespace)
        sio.on("leave", ui.leave, namespace=namespace)
        sio.on("_disconnect", ui.disconnect, namespace=namespace)
    bus_api.port.when_connected(lambda _bus: socketio_admin.start_stats_here(instrumented, os.getpid()))
    return instrumented


def _authenticated(auth: Any, given: Any) -> bool:
    if not auth:
        return True
    if isinstance(auth, dict):
        return bool(given == auth)
    if isinstance(auth, list):
        return given in auth
    return bool(auth(given))


class _ClusterAdmin:
    """The admin namespace's handlers, acting on the whole cluster."""

    def __init__(self, sio: Any, cluster: Cluster, auth: Any, mode: str, read_only: bool,
                 namespace: str) -> None:
        self.sio, self.cluster, self.auth = sio, cluster, auth
        self.mode, self.read_only, self.namespace = mode, read_only, namespace

    def connect(self, sid: str, environ: Any, auth: Any = None) -> None:
        from socketio.exceptions import ConnectionRefusedError

        if not _authenticated(self.auth, auth):
            raise ConnectionRefusedError("authentication failed")
        self.sio.start_background_task(self._send_config, sid)

    def _features(self) -> list[str]:
        # The Admin UI's feature names (its protocol), as python-socketio announces them.
        features = ["AGGREGATED_EVENTS"]
        if not self.read_only:
            features += ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]
        if self.mode == "development":
            features.append("ALL_EVENTS")
        return features

    def _send_config(self, sid: str) -> None:
        self.sio.emit("config", {"supportedFeatures": self._features()}, to=sid, namespace=self.namespace)
        if self.mode != "development":
            return
        namespaces = set(self.sio.handlers) | set(self.sio.manager.get_namespaces()) | {self.namespace}
        sockets = [_serialized(s) for nsp in sorted(namespaces)
                   for s in self.cluster.fetch_sockets(namespace=nsp).value]
        self.sio.emit("all_sockets", sockets, to=sid, namespace=self.namespace)

    def join(self, _sid: str, namespace: str, room: str, room_filter: Any = None) -> None:
        self.cluster.sockets_join(room, room=room_filter, namespace=namespace)

    def leave(self, _sid: str, namespace: str, room: str, room_filter: Any = None) -> None:
        self.cluster.sockets_leave(room, room=room_filter, namespace=namespace)

    def disconnect(self, _sid: str, namespace: str, close: bool, room_filter: Any = None) -> None:
        self.cluster.disconnect_sockets(room=room_filter, namespace=namespace, close=bool(close))


def _serialized(s: RemoteSocket) -> dict[str, Any]:
    """A socket as the Admin UI's all_sockets lists it (python-socketio's serialize_socket)."""
    handshake = dict(s.handshake)
    issued = handshake.get("issued") or 0
    handshake["time"] = datetime.fromtimestamp(issued / 1000, timezone.utc).isoformat() if issued else ""
    return {"id": s.sid, "clientId": s.client_id, "transport": s.transport, "nsp": s.namespace,
            "data": s.data, "handshake": handshake, "rooms": s.rooms,
            "pid": s.pid}  # beyond the UI's format: which worker holds it
