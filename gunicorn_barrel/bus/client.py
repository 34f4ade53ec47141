"""The per-worker bus client: PUSH to the broadcaster, SUB to its fan-out.

Created after fork, in the worker that uses it (never in the arbiter), with
zmq.green so that waiting on the bus yields to other greenlets. One listener
greenlet decodes every frame, puts each sender's frames in order (``Inbox``)
and hands them to the handlers of their channel. What this worker sends is
kept until the broadcaster's heartbeat acknowledges it, and resent to a new
broadcaster (``Outbox``). Closing ends both greenlets cleanly: ETERM/ENOTSOCK
mean "closed", not "retry".
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import gevent
import gevent.lock
import zmq as zmq_plain
import zmq.green as zmq

from gunicorn_barrel.bus import endpoints, fastzmq, wire
from gunicorn_barrel.bus.sequencing import Inbox, Outbox

log = logging.getLogger("gunicorn_barrel.bus")

Handler = Callable[[wire.Frame], None]

_CLOSED_ERRNOS = (zmq.ETERM, zmq.ENOTSOCK)
_TICK = 0.05
# A frame unacknowledged this long while heartbeats arrive was lost on the
# way (a full queue): send it again; receivers drop the duplicate.
_RESEND_AFTER = 1.0
_BROADCASTER_ALIVE_WITHIN = 0.5
# Frames delivered between two yields of the listener: a burst (a worker
# that was paused, a gap filled) must let the clients' writers drain their
# queues, or healthy clients would hit client_queue_limit.
_YIELD_EVERY = 32


class Bus(Protocol):
    """What manager.py, events.py and the store need of a worker's bus, whatever its backend."""

    origin: bytes
    pid: int
    counters: Counter[str]

    def subscribe(self, channel: str, handler: Handler) -> None: ...

    def publish(self, channel: str, payload: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def call_handlers(handlers: list[Handler], frame: wire.Frame, counters: Counter[str]) -> None:
    """Hand ``frame`` to its channel's handlers (in the listener greenlet), for either bus backend.

    A handler that raises is logged; the others still run. Every
    ``_YIELD_EVERY`` frames the listener yields (see there).
    """
    counters["frames_delivered"] += 1
    if counters["frames_delivered"] % _YIELD_EVERY == 0:
        gevent.sleep(0)
    for handler in handlers:
        try:
            handler(frame)
        except Exception:
            log.exception("bus handler for %s failed", frame.channel)


class BusClosed(RuntimeError):
    """The bus client was closed; nothing more can be published."""


class BusClient:
    """A worker's connection to the broadcaster."""

    def __init__(
        self,
        runtime_dir: str,
        max_frame_size: int,
        gap_timeout: float = 5.0,
        max_unacked: int = 100_000,
    ) -> None:
        self.runtime_dir = runtime_dir
        self.max_frame_size = max_frame_size
        self.origin = uuid.uuid4().bytes
        self.pid = os.getpid()
        self.counters: Counter[str] = Counter()
        self.outbox: Outbox[list[bytes]] = Outbox(max_unacked, self.counters)
        self.inbox: Inbox[wire.Frame] = Inbox(gap_timeout, max_unacked, self.counters)
        self.epoch: bytes | None = None
        # The broadcaster's federation counters, from its heartbeat (empty without federation).
        self.broadcaster_counters: dict[str, int] = {}
        self._last_heartbeat = 0.0
        self._handlers: dict[str, list[Handler]] = {}
        # Delivery yields now and then (see _YIELD_EVERY): one deliverer at a
        # time keeps each sender's frames in order.
        self._in_order = gevent.lock.Semaphore()
        self._closed = False
        self._ctx = zmq.Context()
        # The PUSH side never waits (NOBLOCK; what does not fit is resent
        # later), so it is a plain socket: cheaper per send than a green one,
        # and usable from a hub callback (see _flush).
        self._push = zmq_plain.Socket(self._ctx, zmq.PUSH)
        # Frames published since the last flush, as runs of one channel
        # (topic, bodies), in publish order: order across channels is kept.
        self._batches: list[tuple[bytes, list[bytes]]] = []
        self._flush_scheduled = False
        # Plain too: the listener waits on its descriptor with gevent
        # (fastzmq.wait_readable) and then drains it without blocking.
        self._sub = zmq_plain.Socket(self._ctx, zmq.SUB)
        for sock in (self._push, self._sub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, 50)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        self._sub.setsockopt(zmq.MAXMSGSIZE, max_frame_size)
        self._push.setsockopt(zmq.SNDHWM, 100_000)
        self._sub.setsockopt(zmq.RCVHWM, 100_000)
        self._sub.setsockopt(zmq.SUBSCRIBE, wire.HEARTBEAT_CHANNEL.encode())
        self._push.connect(endpoints.pull_endpoint(runtime_dir))
        self._sub.connect(endpoints.pub_endpoint(runtime_dir))
        self._listener = gevent.spawn(self._listen)
        self._ticker = gevent.spawn(self._tick)

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler(frame)`` in the listener greenlet for each frame of ``channel``."""
        if channel.startswith("\x00"):
            raise ValueError("channels starting with NUL are reserved for the bus")
        if channel not in self._handlers:
            self._handlers[channel] = []
            # zmq topics match by prefix: subscribe to the exact topic and
            # filter again on delivery.
            self._sub.setsockopt(zmq.SUBSCRIBE, channel.encode())
        self._handlers[channel].append(handler)

    def publish(self, channel: str, payload: dict[str, Any]) -> None:
        """Send ``payload`` to every worker (this one included) subscribed to ``channel``.

        Raises wire.FrameTooLarge / wire.WireError for a payload that cannot
        travel, and BusClosed after close(). Never blocks the worker: the
        frame is kept until acknowledged and resent if it was lost.
        """
        if self._closed:
            raise BusClosed("the barrel bus client is closed")
        if channel.startswith("\x00"):
            raise ValueError("channels starting with NUL are reserved for the bus")
        # The number is taken only once the frame is encoded: one skipped by
        # an emit that raised would be a gap for every receiver.
        seq = self.outbox.peek_seq(channel)
        parts = wire.encode(wire.Frame(channel, self.origin, seq, payload), self.max_frame_size)
        self.outbox.next_seq(channel)
        self.outbox.record(channel, seq, parts, time.monotonic())
        self.counters["frames_pushed"] += 1
        # Batched: frames published before this greenlet yields go out as
        # soon as it yields, consecutive frames of one channel as one message.
        if self._batches and self._batches[-1][0] == parts[0]:
            self._batches[-1][1].append(parts[1])
        else:
            self._batches.append((parts[0], [parts[1]]))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            gevent.get_hub().loop.run_callback(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batches, self._batches = self._batches, []
        for topic, bodies in batches:
            for start in range(0, len(bodies), wire.MAX_BATCH):
                self._send([topic, *bodies[start:start + wire.MAX_BATCH]])

    def _send(self, parts: list[bytes]) -> None:
        if self._closed:
            return
        try:
            fastzmq.send_parts(self._push, parts, fastzmq.NOBLOCK)
        except zmq.Again:
            # Kept in the outbox: the resend timer sends it again later.
            self.counters["push_queue_full"] += 1
        except zmq.ZMQError as exc:  # never raise in a hub callback
            log.error("bus send failed: %s", exc)

    def _listen(self) -> None:
        while not self._closed:
            try:
                parts = fastzmq.recv_parts(self._sub, fastzmq.NOBLOCK)
            except zmq.Again:
                fastzmq.wait_readable(self._sub, _TICK)
                continue
            except zmq.ZMQError as exc:
                if exc.errno in _CLOSED_ERRNOS or self._closed:
                    return
                log.error("bus receive failed: %s", exc)
                gevent.sleep(0.1)  # never spin on a persistent error
                continue
            self._receive(parts)

    def _receive(self, parts: list[bytes]) -> None:
        try:
            # Only the broadcaster publishes on our SUB socket (a 0700
            # directory's ipc socket), after checking every value.
            frame = wire.decode(parts, self.max_frame_size, check_values=False)
        except wire.WireError as exc:
            self.counters["frames_refused"] += 1
            log.warning("bus frame refused: %s", exc)
            return
        if frame.channel == wire.HEARTBEAT_CHANNEL:
            self._on_heartbeat(frame)
            return
        with self._in_order:
            now = time.monotonic()
            for ready in self.inbox.accept((frame.origin, frame.channel), frame.seq, frame, now):
                self._deliver(ready)

    def _on_heartbeat(self, frame: wire.Frame) -> None:
        self._last_heartbeat = time.monotonic()
        if frame.origin != self.epoch:
            if self.epoch is not None:
                # A new broadcaster: what the old one never published goes again.
                self.counters["broadcaster_restarts_seen"] += 1
                for parts in self.outbox.to_resend(self._last_heartbeat):
                    self._send(parts)
            self.epoch = frame.origin
        shared = frame.payload.get("counters")
        if isinstance(shared, dict):
            self.broadcaster_counters = shared
        acks = frame.payload.get("acks")
        if not isinstance(acks, dict):
            return
        mine = self.origin.hex() + "/"
        for key, seq in acks.items():
            if key.startswith(mine) and isinstance(seq, int):
                self.outbox.ack(key[len(mine):], seq)

    def _deliver(self, frame: wire.Frame) -> None:
        handlers = self._handlers.get(frame.channel)
        if handlers:
            call_handlers(handlers, frame, self.counters)

    def _tick(self) -> None:
        """Give up on gaps that waited too long; resend frames lost on the way."""
        while not self._closed:
            gevent.sleep(_TICK)
            now = time.monotonic()
            with self._in_order:
                for frame in self.inbox.expire(now):
                    self._deliver(frame)
            if self.inbox.gap_log and self.counters["gaps"] > self.counters["gaps_logged"]:
                self.counters["gaps_logged"] = self.counters["gaps"]
                stream, first, last = self.inbox.gap_log[-1]
                log.warning("bus gap: frames %s..%s of %s/%s never arrived (%s gaps so far)",
                            first, last, stream[0].hex(), stream[1], self.counters["gaps"])
            if now - self._last_heartbeat < _BROADCASTER_ALIVE_WITHIN:
                for parts in self.outbox.to_resend(now, older_than=_RESEND_AFTER):
                    self._send(parts)

    def close(self) -> None:
        """Stop the greenlets and close the sockets; safe to call twice."""
        if self._closed:
            return
        self._flush()  # what was published before close() still goes
        self._closed = True
        # Stop the greenlets before their sockets go away, so they never see
        # a closed socket and never have a reason to loop.
        gevent.killall([self._listener, self._ticker], block=True, timeout=1.0)
        self._sub.close()
        self._push.close()
        self._ctx.term()
        log.info("bus client %s closed; counters %s", self.pid, dict(self.counters))


_current: Bus | None = None


def connect(runtime_dir: str, max_frame_size: int, **options: Any) -> BusClient:
    """Create this worker's bus client (replacing one inherited across fork)."""
    client = BusClient(runtime_dir, max_frame_size, **options)
    install(client)
    return client


def install(client: Bus) -> None:
    """Make ``client`` this process's bus (another backend's ``connect`` calls this)."""
    global _current
    _current = client


def current() -> Bus:
    """This worker's bus client; a clear error when barrel hooks are missing."""
    if _current is None or _current.pid != os.getpid():
        raise RuntimeError(
            "no barrel bus in this process: run gunicorn with a config that "
            "calls gunicorn_barrel.hooks.install(globals()) (see example_confs/barrel_conf.py)"
        )
    return _current


def counters() -> dict[str, int]:
    """This process's bus counters (empty outside a barrel worker)."""
    if _current is None or _current.pid != os.getpid():
        return {}
    return dict(_current.counters)


def broadcaster_counters() -> dict[str, int]:
    """The federation counters of this worker's broadcaster, as of its last heartbeat."""
    if _current is None or _current.pid != os.getpid():
        return {}
    # A Redis bus has no broadcaster.
    return dict(getattr(_current, "broadcaster_counters", {}))


def close_current() -> None:
    global _current
    if _current is not None and _current.pid == os.getpid():
        _current.close()
    _current = None
