"""An app that registers its cross-worker handlers at import, as README's "Shared state and events" shows.

gunicorn imports it before post_worker_init, and with --preload in the
arbiter before fork: events.on, store.watch and forward_to_room run before any
bus exists and must take effect in every worker once it connects.
"""
import os

import socketio

from gunicorn_barrel import BarrelManager, events
from gunicorn_barrel.store import get_store
from gunicorn_barrel.store.forward import forward_to_room

sio = socketio.Server(async_mode="gevent", client_manager=BarrelManager())
store = get_store()

# What this worker's import-time handlers saw.
events_seen = []
changes_seen = []


def on_announce(data):
    events_seen.append(data)
    # To this worker's own clients: each worker relays what it handled.
    sio.emit("announced", {"data": data, "worker": os.getpid()}, ignore_queue=True)


events.on("announce", on_announce)
store.watch("visits:", lambda change: changes_seen.append([change.op, change.key, change.value]))
forward_to_room(store, sio, "visits:", room="stats")


@sio.event
def whoami(sid, _data=None):
    return {"pid": os.getpid(), "sid": sid}


@sio.event
def join_stats(sid, _data=None):
    sio.enter_room(sid, "stats")
    return "ok"


@sio.event
def announce(sid, data):
    events.emit("announce", data)
    return "ok"


@sio.event
def visit(sid, key):
    return store.incr(key)


@sio.event
def seen(sid, _data=None):
    return {"pid": os.getpid(), "events": events_seen, "changes": changes_seen}


def plain_wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"plain route from {os.getpid()}".encode()]


wsgi = socketio.WSGIApp(sio, plain_wsgi)
