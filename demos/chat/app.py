"""Chat rooms served by several gunicorn workers, relayed by the barrel bus.

From the repository root::

    npm ci                  # once: the browser socket.io client, into node_modules/
    gunicorn -c example_confs/barrel_conf.py -w 4 -b 127.0.0.1:8000 demos.chat.app:wsgi

then open http://127.0.0.1:8000/ in a few browser tabs. Each tab shows the pid
of the worker holding its socket; people in the same room see each other's
messages whichever worker holds them.

Events (client -> server, each answered with an ack):
    join   {"room": name, "nick": nickname}  leave the current room, enter this one
    leave  (no data)                         leave the current room
    say    {"text": message}                 send to everyone in the current room
    whoami (no data)                         {"pid": worker pid, "sid": socket id}
Events (server -> client):
    hello  {"pid", "sid"}                    sent on connect (with "announcement": the
                                             latest one, when there was one)
    chat   {"room", "nick", "text", "pid"}   a message in the client's room
    system {"room", "text", "pid"}           someone joined or left the room
    announcement {"text", "n", "pid", "t"}   from the announcer side process, to everyone
                                             (run with example_confs/with_side_process.py)

The Socket.IO Admin UI (npm @socket.io/admin-ui, from node_modules) is served at
/admin-ui/ when CHAT_ADMIN_PASSWORD is set: log in as "admin" with that password
(server URL: this page's origin) to see every worker's sockets, each worker as a
server, and to make sockets of any worker join, leave or disconnect
(gunicorn_barrel.admin).

static/chat.js uses socket.io's default transports (long-polling, then the
upgrade to WebSocket): the barrel worker hands every request of a session to
the worker holding it, so both work on any number of workers.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import socketio

from demos.chat.announcer import EVENT as ANNOUNCEMENT
from gunicorn_barrel import BarrelManager, admin, events

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATIC = HERE / "static"
# Installed by `npm ci` from package.json / package-lock.json at the repo root.
SOCKETIO_CLIENT_JS = REPO / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
VENDOR_PATH = "/vendor/socket.io.min.js"
ADMIN_UI = REPO / "node_modules" / "@socket.io" / "admin-ui" / "ui" / "dist"
ADMIN_UI_PATH = "/admin-ui"

MAX_ROOM = 40
MAX_NICK = 24
MAX_TEXT = 500
# Rooms live in their own prefix, so a room can never be named like a sid
# (entering another client's sid room would receive that client's messages).
_ROOM_PREFIX = "chat:"

sio = socketio.Server(async_mode="gevent", client_manager=BarrelManager())
if os.environ.get("CHAT_ADMIN_PASSWORD"):
    admin.instrument(sio, auth={"username": "admin", "password": os.environ["CHAT_ADMIN_PASSWORD"]})
# The announcer side process's latest announcement, from its barrel event (every worker gets it).
_latest: dict[str, Any] = {}


def _remember_announcement(data: Any) -> None:
    if isinstance(data, dict):
        _latest["announcement"] = data


events.on(ANNOUNCEMENT, _remember_announcement)


def _clean(value: Any, limit: int) -> str | None:
    """``value`` stripped, or None when it is not a non-empty string up to ``limit`` characters."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > limit:
        return None
    return value


def _announce(room: str, text: str, skip_sid: str | None = None) -> None:
    sio.emit(
        "system", {"room": room, "text": text, "pid": os.getpid()},
        to=_ROOM_PREFIX + room, skip_sid=skip_sid,
    )


def _leave_current(sid: str, session: dict[str, Any]) -> str | None:
    room = session.get("room")
    if room is None:
        return None
    sio.leave_room(sid, _ROOM_PREFIX + room)
    session["room"] = None
    _announce(room, f"{session['nick']} left")
    return str(room)


@sio.event
def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    sio.save_session(sid, {"nick": None, "room": None})
    sio.emit("hello", {"pid": os.getpid(), "sid": sid, **_latest}, to=sid)


@sio.event
def disconnect(sid: str, reason: Any = None) -> None:
    session = sio.get_session(sid)
    room = session.get("room")
    if room is not None:
        _announce(room, f"{session['nick']} left", skip_sid=sid)


@sio.event
def whoami(sid: str, _data: Any = None) -> dict[str, Any]:
    return {"pid": os.getpid(), "sid": sid}


@sio.event
def join(sid: str, data: Any = None) -> dict[str, Any]:
    data = data if isinstance(data, dict) else {}
    room = _clean(data.get("room"), MAX_ROOM)
    nick = _clean(data.get("nick"), MAX_NICK)
    if room is None:
        return {"ok": False, "error": f"room: 1 to {MAX_ROOM} characters"}
    if nick is None:
        return {"ok": False, "error": f"nick: 1 to {MAX_NICK} characters"}
    with sio.session(sid) as session:
        if session.get("room") == room and session.get("nick") == nick:
            return {"ok": True, "room": room, "nick": nick, "pid": os.getpid()}
        _leave_current(sid, session)
        sio.enter_room(sid, _ROOM_PREFIX + room)
        session.update(room=room, nick=nick)
    _announce(room, f"{nick} joined")
    return {"ok": True, "room": room, "nick": nick, "pid": os.getpid()}


@sio.event
def leave(sid: str, _data: Any = None) -> dict[str, Any]:
    with sio.session(sid) as session:
        room = _leave_current(sid, session)
    if room is None:
        return {"ok": False, "error": "not in a room"}
    return {"ok": True, "room": room}


@sio.event
def say(sid: str, data: Any = None) -> dict[str, Any]:
    text = _clean(data.get("text") if isinstance(data, dict) else None, MAX_TEXT)
    if text is None:
        return {"ok": False, "error": f"text: 1 to {MAX_TEXT} characters"}
    session = sio.get_session(sid)
    room = session.get("room")
    if room is None:
        return {"ok": False, "error": "join a room first"}
    sio.emit(
        "chat", {"room": room, "nick": session["nick"], "text": text, "pid": os.getpid()},
        to=_ROOM_PREFIX + room,
    )
    return {"ok": True}


StartResponse = Callable[..., Any]


def fallback(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Whatever socket.io and the static files do not answer."""
    path = environ.get("PATH_INFO") or "/"
    if path == "/ready-check":
        return _text(start_response, "200 OK", "ready\n")
    if path == VENDOR_PATH:
        # static_files only serves files that exist: this is node_modules missing.
        return _text(
            start_response, "404 Not Found",
            f"{VENDOR_PATH} comes from the npm package socket.io-client, which is "
            f"not installed: run `npm ci` in {REPO} (looked for {SOCKETIO_CLIENT_JS}).\n",
        )
    return _text(start_response, "404 Not Found", "Not Found\n")


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(status, [
        ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))),
    ])
    return [data]


static_files = {
    "/": {"content_type": "text/html; charset=utf-8", "filename": str(STATIC / "index.html")},
    "/chat.js": {"content_type": "text/javascript; charset=utf-8", "filename": str(STATIC / "chat.js")},
    VENDOR_PATH: {"content_type": "text/javascript; charset=utf-8", "filename": str(SOCKETIO_CLIENT_JS)},
}
if os.environ.get("CHAT_ADMIN_PASSWORD"):
    static_files[ADMIN_UI_PATH] = str(ADMIN_UI)

wsgi = socketio.WSGIApp(sio, fallback, static_files=static_files)
