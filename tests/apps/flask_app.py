"""A Flask + Flask-SocketIO app the integration tests run under gunicorn.

The same cross-worker operations as sio_app, written the Flask-SocketIO way
(``emit(..., broadcast=True)``, ``join_room(..., sid=...)``,
``socketio.call``, ``disconnect(sid=...)``), plus ordinary Flask routes that
must keep working next to the socket.io endpoint.
"""
from __future__ import annotations

import os
from typing import Any

import socketio as python_socketio
from flask import Flask, request
from flask_socketio import SocketIO, disconnect, emit, join_room, leave_room

from gunicorn_barrel import BarrelManager

app = Flask(__name__)
socketio = SocketIO(app, async_mode="gevent", client_manager=BarrelManager())


def _sid() -> str:
    return str(request.sid)  # type: ignore[attr-defined]  # set by Flask-SocketIO


@app.get("/ready-check")
def ready_check() -> str:
    return "ready"


@app.get("/plain")
def plain() -> dict[str, Any]:
    return {"route": "plain", "pid": os.getpid()}


@app.post("/announce")
def announce() -> dict[str, Any]:
    """A server-originated emit from an HTTP request (no socket.io context)."""
    socketio.emit("news", request.get_json())
    return {"announced": True, "pid": os.getpid()}


@socketio.on("whoami")
def whoami(_data: Any = None) -> dict[str, Any]:
    return {"pid": os.getpid(), "sid": _sid()}


@socketio.on("broadcast")
def broadcast(data: Any) -> str:
    emit("news", data, broadcast=True)
    return "ok"


@socketio.on("emit_to")
def emit_to(data: dict[str, Any]) -> str:
    emit("direct", data["payload"], to=data["to"])
    return "ok"


@socketio.on("put_in_room")
def put_in_room(data: dict[str, Any]) -> str:
    join_room(data["room"], sid=data["sid"], namespace="/")
    return "ok"


@socketio.on("take_from_room")
def take_from_room(data: dict[str, Any]) -> str:
    leave_room(data["room"], sid=data["sid"], namespace="/")
    return "ok"


@socketio.on("room_emit")
def room_emit(data: dict[str, Any]) -> str:
    socketio.emit("room_news", data["payload"], to=data["room"])
    return "ok"


@socketio.on("kick")
def kick(data: dict[str, Any]) -> str:
    disconnect(sid=data["sid"], namespace="/")
    return "ok"


@socketio.on("ask")
def ask(data: dict[str, Any]) -> dict[str, Any]:
    """Server-to-client call() addressed to a sid that may live on another worker."""
    try:
        answer = socketio.call("question", data["question"], to=data["to"], timeout=10)
    except python_socketio.exceptions.TimeoutError:
        return {"error": "timeout"}
    return {"answer": answer, "pid": os.getpid()}


wsgi = app
