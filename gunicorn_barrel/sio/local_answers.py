"""What one worker answers to a cluster request, from the sockets it holds.

Every function takes the worker's BarrelManager (python-socketio's rooms and
its server's environ and sessions) and returns a list of values; the asking
worker concatenates the lists of every worker. All values are plain msgpack
types (``plain``), since they travel on the bus.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs

from gunicorn_barrel.runtime import sids

# Connection facts kept per (eio_sid, namespace) from the CONNECT packet: the auth it carried,
# and when it came (ms since the epoch), as Node's handshake.auth and handshake.issued.
Handshake = tuple[Any, int]


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` with anything msgpack cannot carry (sets, objects, deep nests) as its repr."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if depth < 16 and isinstance(value, Mapping):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if depth < 16 and isinstance(value, list | tuple):
        return [plain(v, depth + 1) for v in value]
    return repr(value)


def selected(manager: Any, namespace: str, room: Any) -> list[tuple[str, str]]:
    """(sid, eio_sid) of this worker's sockets in ``room`` (a room, a list of rooms, or None: all)."""
    if namespace not in manager.rooms:
        return []
    return list(manager.get_participants(namespace, room))


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
               if key.startswith("HTTP_") and isinstance(value, str)}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def socket_info(manager: Any, sid: str, eio_sid: str, namespace: str) -> dict[str, Any]:
    """One socket as fetch_sockets reports it (see gunicorn_barrel.cluster.RemoteSocket)."""
    server = manager.server
    environ = server.environ.get(eio_sid, {})
    query = environ.get("QUERY_STRING", "")
    auth, issued = manager.handshakes.get((eio_sid, namespace), (None, 0))
    try:
        data = server.get_session(sid, namespace=namespace)
    except KeyError:  # the socket is leaving
        data = {}
    return {
        "sid": sid, "namespace": namespace,
        "rooms": plain(manager.get_rooms(sid, namespace)),
        "handshake": {
            "headers": _headers(environ),
            "query": {k: v[0] if len(v) == 1 else v for k, v in parse_qs(query).items()},
            "auth": plain(auth), "address": environ.get("REMOTE_ADDR", ""), "issued": issued,
            "url": environ.get("PATH_INFO", "") + ("?" + query if query else ""),
            "secure": environ.get("wsgi.url_scheme") == "https",
        },
        "data": plain(data), "instance": sids.instance_tag(), "pid": os.getpid(),
        "client_id": eio_sid, "transport": _transport(server, eio_sid),
    }


def _transport(server: Any, eio_sid: str) -> str:
    try:
        return str(server.eio.transport(eio_sid))
    except KeyError:  # the session is closing
        return ""


def fetch_sockets(manager: Any, namespace: str, room: Any) -> Iterator[dict[str, Any]]:
    for sid, eio_sid in selected(manager, namespace, room):
        yield socket_info(manager, sid, eio_sid, namespace)


def change_rooms(manager: Any, namespace: str, room: Any, rooms: list[Any], join: bool) -> int:
    """Make this worker's sockets in ``room`` join (or leave) each of ``rooms``; how many."""
    chosen = selected(manager, namespace, room)
    for sid, eio_sid in chosen:
        for name in rooms:
            if join:
                manager.basic_enter_room(sid, namespace, name, eio_sid=eio_sid)
            else:
                manager.basic_leave_room(sid, namespace, name)
    return len(chosen)


def disconnect_sockets(manager: Any, namespace: str, room: Any, close: bool) -> int:
    """Disconnect this worker's sockets in ``room`` from ``namespace`` (``close``: their
    whole connection, every namespace); how many."""
    chosen = selected(manager, namespace, room)
    server = manager.server
    for sid, eio_sid in chosen:
        if close:
            server.eio.disconnect(eio_sid)
        else:
            server.disconnect(sid, namespace=namespace, ignore_queue=True)
    return len(chosen)


def rooms_of(manager: Any, namespace: str, sid: str) -> list[list[Any]]:
    """[the rooms of ``sid``] if this worker holds it, else []."""
    if not manager.is_connected(sid, namespace):
        return []
    return [plain(manager.get_rooms(sid, namespace))]


def room_counts(manager: Any, namespace: str) -> list[list[Any]]:
    """[room, members held here] of every room of ``namespace``, less each sid's own room."""
    rooms = manager.rooms.get(namespace, {})
    return [[plain(name), len(members)] for name, members in list(rooms.items())
            if name is not None and len(members) and name not in members]
