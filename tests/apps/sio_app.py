"""The socket.io app the integration tests run under gunicorn.

Every cross-worker operation is triggered by a client event, so a test can
ask a client held by one worker to act on clients held by others.
"""
import os

import socketio

from gunicorn_barrel import BarrelManager

sio = socketio.Server(async_mode="gevent", client_manager=BarrelManager())


@sio.event
def whoami(sid, _data=None):
    return {"pid": os.getpid(), "sid": sid}


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

    return {"pid": os.getpid(), "counters": gunicorn_barrel.counters()}


def plain_wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"plain route from {os.getpid()}".encode()]


wsgi = socketio.WSGIApp(sio, plain_wsgi)
# The same socket.io server under a custom path, beside the plain WSGI app.
wsgi_custom_path = socketio.WSGIApp(sio, plain_wsgi, socketio_path="custom/rt")
