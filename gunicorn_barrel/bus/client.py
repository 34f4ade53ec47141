"""The per-worker bus client: PUSH to the broadcaster, SUB to its fan-out.

Created after fork, in the worker that uses it (never in the arbiter), with
zmq.green so that waiting on the bus yields to other greenlets. One listener
greenlet decodes every frame and hands it to the handlers of its channel.
Closing ends the listener cleanly: ETERM/ENOTSOCK mean "closed", not "retry".
"""
from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent
import zmq.green as zmq

from gunicorn_barrel.bus import endpoints, wire

log = logging.getLogger("gunicorn_barrel.bus")

Handler = Callable[[wire.Frame], None]

_CLOSED_ERRNOS = (zmq.ETERM, zmq.ENOTSOCK)


class BusClosed(RuntimeError):
    """The bus client was closed; nothing more can be published."""


class BusClient:
    """A worker's connection to the broadcaster."""

    def __init__(self, runtime_dir: str, max_frame_size: int) -> None:
        self.runtime_dir = runtime_dir
        self.max_frame_size = max_frame_size
        self.origin = uuid.uuid4().bytes
        self.pid = os.getpid()
        self.counters: Counter[str] = Counter()
        self._seq = 0
        self._handlers: dict[str, list[Handler]] = {}
        self._closed = False
        self._ctx = zmq.Context()
        self._push = self._ctx.socket(zmq.PUSH)
        self._sub = self._ctx.socket(zmq.SUB)
        for sock in (self._push, self._sub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, 50)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        self._sub.setsockopt(zmq.MAXMSGSIZE, max_frame_size)
        self._push.setsockopt(zmq.SNDHWM, 100_000)
        self._sub.setsockopt(zmq.RCVHWM, 100_000)
        self._push.connect(endpoints.pull_endpoint(runtime_dir))
        self._sub.connect(endpoints.pub_endpoint(runtime_dir))
        self._listener = gevent.spawn(self._listen)

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler(frame)`` in the listener greenlet for each frame of ``channel``."""
        if channel not in self._handlers:
            self._handlers[channel] = []
            # zmq topics match by prefix: subscribe to the exact topic and
            # filter again on delivery.
            self._sub.setsockopt(zmq.SUBSCRIBE, channel.encode())
        self._handlers[channel].append(handler)

    def publish(self, channel: str, payload: dict[str, Any]) -> None:
        """Send ``payload`` to every worker (this one included) subscribed to ``channel``.

        Raises wire.FrameTooLarge / wire.WireError for a payload that cannot
        travel, and BusClosed after close(). Never blocks the worker: when the
        broadcaster is away, zeromq queues up to the high-water mark.
        """
        if self._closed:
            raise BusClosed("the barrel bus client is closed")
        self._seq += 1
        parts = wire.encode(
            wire.Frame(channel=channel, origin=self.origin, seq=self._seq, payload=payload),
            self.max_frame_size,
        )
        try:
            self._push.send_multipart(parts, zmq.NOBLOCK)
        except zmq.Again:
            self.counters["frames_dropped_hwm"] += 1
            log.warning("bus queue full; frame on %s dropped", channel)
            return
        self.counters["frames_pushed"] += 1

    def _listen(self) -> None:
        while not self._closed:
            try:
                parts = self._sub.recv_multipart()
            except zmq.ZMQError as exc:
                if exc.errno in _CLOSED_ERRNOS or self._closed:
                    return
                log.error("bus receive failed: %s", exc)
                gevent.sleep(0.1)  # never spin on a persistent error
                continue
            self._dispatch(parts)

    def _dispatch(self, parts: list[bytes]) -> None:
        try:
            frame = wire.decode(parts, self.max_frame_size)
        except wire.WireError as exc:
            self.counters["frames_refused"] += 1
            log.warning("bus frame refused: %s", exc)
            return
        handlers = self._handlers.get(frame.channel)
        if not handlers:
            return
        self.counters["frames_delivered"] += 1
        for handler in handlers:
            try:
                handler(frame)
            except Exception:
                log.exception("bus handler for %s failed", frame.channel)

    def close(self) -> None:
        """Stop the listener and close the sockets; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        # Stop the listener before its socket goes away, so it never sees a
        # closed socket and never has a reason to loop.
        self._listener.kill(block=True, timeout=1.0)
        self._sub.close()
        self._push.close()
        self._ctx.term()
        log.info("bus client %s closed; counters %s", self.pid, dict(self.counters))


_current: BusClient | None = None


def connect(runtime_dir: str, max_frame_size: int) -> BusClient:
    """Create this worker's bus client (replacing one inherited across fork)."""
    global _current
    _current = BusClient(runtime_dir, max_frame_size)
    return _current


def current() -> BusClient:
    """This worker's bus client; a clear error when barrel hooks are missing."""
    if _current is None or _current.pid != os.getpid():
        raise RuntimeError(
            "no barrel bus in this process: run gunicorn with a config that "
            "calls gunicorn_barrel.hooks.install(globals()) (see example_confs/barrel_conf.py)"
        )
    return _current


def close_current() -> None:
    global _current
    if _current is not None and _current.pid == os.getpid():
        _current.close()
    _current = None
