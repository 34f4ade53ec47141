"""The socket.io app the integration tests run under gunicorn.

Every cross-worker operation is triggered by a client event, so a test can
ask a client held by one worker to act on clients held by others.
"""
import os

import socketio

from gunicorn_barrel import BarrelManager

# Tests of engine.io's heartbeat shorten it through the environment;
# TEST_PLAIN_SOCKETIO runs python-socketio's own manager (under -k gevent), the
# reference that tests/test_call_args.py compares barrel with.
sio = socketio.Server(
    async_mode="gevent",
    client_manager=None if os.environ.get("TEST_PLAIN_SOCKETIO") else BarrelManager(
        connection_state_recovery=bool(os.environ.get("TEST_RECOVERY"))),
    ping_interval=float(os.environ.get("TEST_PING_INTERVAL", "25")),
    ping_timeout=float(os.environ.get("TEST_PING_TIMEOUT", "20")),
)


@sio.event
def whoami(sid, _data=None):
    return {"pid": os.getpid(), "sid": sid, "session": sio.get_session(sid)}


@sio.event
def broadcast(sid, data):
    sio.emit("news", data)
    return "ok"


@sio.event
def broadcast_skip_me(sid, data):
    sio.emit("news", data, skip_sid=sid)
    return "ok"


@sio.event
def emit_to(sid, data):
    sio.emit("direct", data["payload"], to=data["to"])
    return "ok"


@sio.event
def put_in_room(sid, data):
    sio.enter_room(data["sid"], data["room"])
    return "ok"


@sio.event
def take_from_room(sid, data):
    sio.leave_room(data["sid"], data["room"])
    return "ok"


@sio.event
def room_emit(sid, data):
    sio.emit("room_news", data["payload"], room=data["room"])
    return "ok"


@sio.event
def close_room(sid, data):
    sio.close_room(data["room"])
    return "ok"


@sio.event
def kick(sid, data):
    sio.disconnect(data["sid"])
    return "ok"


@sio.event
def ask(sid, data):
    """Server-to-client call() addressed to a sid that may live on another worker."""
    try:
        answer = sio.call("question", data["question"], to=data["to"], timeout=10)
    except socketio.exceptions.TimeoutError:
        return {"error": "timeout"}
    return {"answer": answer, "pid": os.getpid()}


@sio.event
def emit_with_ack(sid, data):
    """emit() with a callback, acknowledged by a client that may live on another worker."""
    from gevent.event import AsyncResult

    result = AsyncResult()
    sio.emit("question", data["question"], to=data["to"], callback=lambda *args: result.set(list(args)))
    return {"answer": result.get(timeout=10)}


@sio.event
def broadcast_big(sid, size):
    """Emit a payload of ``size`` bytes: over the frame limit it must fail loudly, reaching no one."""
    from gunicorn_barrel.bus.wire import FrameTooLarge

    try:
        sio.emit("news", {"big": b"x" * size})
    except FrameTooLarge as exc:
        return {"error": str(exc)}
    return "ok"


@sio.event
def join_stream(sid, _data=None):
    sio.enter_room(sid, "stream")
    return "ok"


@sio.event
def start_stream(sid, data):
    """Emit data["count"] numbered messages to room "stream" at data["rate"] per second,
    each padded with data.get("pad", 0) bytes of text."""
    import time

    import gevent

    pad = "x" * data.get("pad", 0)

    def run():
        start = time.monotonic()
        for n in range(data["count"]):
            delay = start + n / data["rate"] - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            sio.emit("seq", {"tag": data["tag"], "n": n, "pad": pad}, room="stream")

    gevent.spawn(run)
    return "started"


@sio.event
def bus_counters(sid, _data=None):
    import gunicorn_barrel
    from gunicorn_barrel.bus import api as client

    origin = getattr(client.port.connected(), "origin", b"")
    return {"pid": os.getpid(), "counters": gunicorn_barrel.counters(),
            "broadcaster": client.broadcaster_counters(), "origin": origin.hex()}


@sio.event
def store_op(sid, data):
    """Run one store call in this worker: {"op": name, "args": [...]} -> {"result"} or {"error"}."""
    from gunicorn_barrel.store import StoreError, get_store

    try:
        result = getattr(get_store(), data["op"])(*data.get("args", []))
    except StoreError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"result": result, "pid": os.getpid()}


_BAD_STORE_CALLS = {
    "set-of-ints": lambda store: store.set("k", {1, 2}),
    "object": lambda store: store.set("k", object()),
    "nan": lambda store: store.set("k", float("nan")),
    "too-large": lambda store: store.set("k", "x" * 70_000),
    "int-key": lambda store: store.set(5, "v"),
    "empty-key": lambda store: store.set("", "v"),
    "negative-ttl": lambda store: store.set("k", "v", -1),
    "incr-text": lambda store: store.incr("k:text"),
    "incr-float": lambda store: store.incr("k:count", 1.5),
}


@sio.event
def store_bad(sid, name):
    """Make one of the bad store calls above in this worker; report the error."""
    from gunicorn_barrel.store import StoreError, get_store

    try:
        _BAD_STORE_CALLS[name](get_store())
    except StoreError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"error": None}


@sio.event
def store_incr_many(sid, data):
    """incr data["key"] data["times"] times from this worker (several greenlets at once)."""
    import gevent

    from gunicorn_barrel.store import get_store

    store = get_store()
    per = data["times"] // 10
    jobs = [gevent.spawn(lambda: [store.incr(data["key"]) for _ in range(per)]) for _ in range(10)]
    gevent.joinall(jobs, raise_error=True)
    return {"pid": os.getpid(), "done": per * 10}


@sio.event
def store_cas_race(sid, data):
    """Try compare_and_set(key, None, my pid): True for the one winner."""
    from gunicorn_barrel.store import get_store

    return {"pid": os.getpid(), "won": get_store().compare_and_set(data["key"], None, os.getpid())}


_watched = {}


@sio.event
def store_watch(sid, data):
    """Start recording changes of data["prefix"] in this worker."""
    from gunicorn_barrel.store import get_store

    log = _watched.setdefault(data["prefix"], [])
    get_store().watch(data["prefix"], lambda change: log.append([change.op, change.key, change.value]))
    return {"pid": os.getpid()}


@sio.event
def store_watched(sid, data):
    return {"pid": os.getpid(), "changes": _watched.get(data["prefix"], [])}


_events_seen = {}


@sio.event
def ev_subscribe(sid, name):
    from gunicorn_barrel import events

    seen = _events_seen.setdefault(name, [])
    events.on(name, seen.append)
    return {"pid": os.getpid()}


@sio.event
def ev_emit(sid, data):
    from gunicorn_barrel import events

    for i in range(data["count"]):
        events.emit(data["name"], {"from": os.getpid(), "i": i})
    return "ok"


@sio.event
def ev_seen(sid, name):
    return {"pid": os.getpid(), "seen": _events_seen.get(name, [])}


@sio.event
def store_forward(sid, data):
    """Forward changes under data["prefix"] to data["room"] (called once in each worker)."""
    from gunicorn_barrel.store import get_store
    from gunicorn_barrel.store.forward import forward_to_room

    forward_to_room(get_store(), sio, data["prefix"], data["room"])
    sio.enter_room(sid, data["room"])
    return {"pid": os.getpid()}


def plain_wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"plain route from {os.getpid()}".encode()]


wsgi = socketio.WSGIApp(sio, plain_wsgi)
# The same socket.io server under a custom path, beside the plain WSGI app.
wsgi_custom_path = socketio.WSGIApp(sio, plain_wsgi, socketio_path="custom/rt")


# What "args" carries for each shape of emit data (none, one, several, binary).
ARG_SHAPES = {"none": None, "one": {"a": 1}, "several": (1, "two", [3]), "binary": (b"\x00\xff", "x")}


@sio.event
def emit_args(sid, shape):
    if shape == "none":
        sio.emit("args")
    else:
        sio.emit("args", ARG_SHAPES[shape])
    return "ok"


@sio.event
def emit_burst(sid, count):
    """Emit ``count`` numbered "news" without yielding: the bus pushes them in batches."""
    for n in range(count):
        sio.emit("news", {"burst": n})
    return "ok"


# -- the cluster API (gunicorn_barrel.cluster), each call made in the worker holding the client --

_server_events = []


def _cluster():
    from gunicorn_barrel.cluster import Cluster

    return Cluster(sio)


def _reply(reply):
    return {"value": reply.value, "answered": reply.answered, "missing": reply.missing,
            "errors": list(reply.errors), "pid": os.getpid()}


if not os.environ.get("TEST_PLAIN_SOCKETIO"):
    _on_server_event = _cluster().on

    @_on_server_event("whoami")
    def _server_whoami(tag):
        from gunicorn_barrel.runtime import sids

        return {"pid": os.getpid(), "instance": sids.instance_tag(), "tag": tag}

    @_on_server_event("record")
    def _server_record(*args):
        _server_events.append(list(args))

    @_on_server_event("fail")
    def _server_fail():
        raise RuntimeError("this handler fails on purpose")


@sio.event
def save_session(sid, data):
    sio.save_session(sid, data)
    return "ok"


@sio.event
def cluster(sid, data):
    """One call of the cluster API: {"call": name, "args": [...], "kwargs": {...}}."""
    import dataclasses

    api = _cluster()
    call = data["call"]
    if call == "server_count":
        return {"value": api.server_count(), "pid": os.getpid()}
    if call == "server_side_emit":
        api.server_side_emit(*data["args"])
        return {"value": None, "pid": os.getpid()}
    reply = getattr(api, call)(*data.get("args", []), **data.get("kwargs", {}))
    if call == "fetch_sockets":
        reply = dataclasses.replace(reply, value=[dataclasses.asdict(s) for s in reply.value])
    elif call == "room_counts":
        reply = dataclasses.replace(reply, value=sorted(reply.value.items()))
    return _reply(reply)


@sio.event
def server_events_seen(sid, _data=None):
    return {"pid": os.getpid(), "seen": _server_events}


@sio.event
def cut_stream(sid, _data=None):
    """Shut down (both ways) the TCP connections of this worker's clients in room "stream", as a
    network failure would: the clients reconnect, the worker keeps their sessions."""
    import socket

    from gunicorn_barrel.compat.websocket_driver import websocket_of

    cut = 0
    for _sid, eio_sid in list(sio.manager.get_participants("/", "stream")):
        eio_socket = sio.eio.sockets.get(eio_sid)
        ws = websocket_of(eio_socket) if eio_socket is not None else None
        if ws is not None:
            ws._sock.shutdown(socket.SHUT_RDWR)
            cut += 1
    return {"pid": os.getpid(), "cut": cut}
