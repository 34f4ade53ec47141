"""The per-worker bus client: PUSH to the broadcaster, SUB to its fan-out.

Created after fork, in the worker that uses it (never in the arbiter), with
zmq.green so that waiting on the bus yields to other greenlets. One listener
greenlet decodes every frame, puts each sender's frames in order and hands
them to the handlers of their channel. What this worker sends is kept until
the broadcaster's heartbeat acknowledges it, and resent to a new broadcaster.
What to do with each frame is ``protocol.ClientProtocol`` (sans-io); this
class owns the sockets, the greenlets and the clock. Closing ends both greenlets cleanly: ETERM/ENOTSOCK
mean "closed", not "retry".
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import gevent
import gevent.event
import gevent.lock
import zmq as zmq_plain
import zmq.green as zmq

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.api import BusClosed, Handler, call_handlers
from gunicorn_barrel.bus.sequencing import Inbox, Outbox
from gunicorn_barrel.bus.zeromq import fastzmq
from gunicorn_barrel.bus.zeromq.protocol import ClientProtocol
from gunicorn_barrel.runtime import endpoints

log = logging.getLogger("gunicorn_barrel.bus")

_CLOSED_ERRNOS = (zmq.ETERM, zmq.ENOTSOCK)
_TICK = 0.05


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
        self.pid = os.getpid()
        self.counters: Counter[str] = Counter()
        self.protocol = ClientProtocol(max_frame_size, gap_timeout, max_unacked, self.counters)
        self.origin = self.protocol.origin
        # Set at the first heartbeat: the SUB link works and our subscriptions
        # (sent before the heartbeat's, in order) are in effect at the broadcaster.
        self._live = gevent.event.Event()
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
        self._sub.setsockopt(zmq.SUBSCRIBE, channels.HEARTBEAT.encode())
        self._sub.setsockopt(zmq.SUBSCRIBE, wire.worker_topic(self.pid))  # see wire.WORKER_TOPIC
        self._push.connect(endpoints.pull_endpoint(runtime_dir))
        self._sub.connect(endpoints.pub_endpoint(runtime_dir))
        self._listener = gevent.spawn(self._listen)
        self._ticker = gevent.spawn(self._tick)

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler(frame)`` in the listener greenlet for each frame of ``channel``."""
        channels.check_user_channel(channel)
        if channel not in self._handlers:
            self._handlers[channel] = []
            # zmq topics match by prefix: subscribe to the exact topic and
            # filter again on delivery.
            self._sub.setsockopt(zmq.SUBSCRIBE, channel.encode())
        self._handlers[channel].append(handler)

    def publish(self, channel: str, payload: Mapping[str, Any]) -> None:
        """Send ``payload`` to every worker (this one included) subscribed to ``channel``.

        Raises wire.FrameTooLarge / wire.WireError for a payload that cannot
        travel, and BusClosed after close(). Never blocks the worker: the
        frame is kept until acknowledged and resent if it was lost.
        """
        if self._closed:
            raise BusClosed("the barrel bus client is closed")
        channels.check_user_channel(channel)
        parts = self.protocol.frame(channel, payload, time.monotonic())
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
        with self._in_order:
            now = time.monotonic()
            if frame.channel == channels.HEARTBEAT:
                self._live.set()
                echo = channels.echo_parts(frame.payload, self.pid)
                if echo is not None:
                    # Everything published before this heartbeat is in this process now.
                    self._send(echo)
                resend, ready = self.protocol.heartbeat(frame, now)
                for parts in resend:
                    self._send(parts)
            else:
                ready = self.protocol.received(frame, now)
            for each in ready:
                self._deliver(each)

    # What other modules read (the store's flush at exit, gunicorn_barrel.counters()).
    @property
    def outbox(self) -> Outbox[list[bytes]]:
        return self.protocol.outbox

    @property
    def inbox(self) -> Inbox[wire.Frame]:
        return self.protocol.inbox

    @property
    def epoch(self) -> bytes | None:
        return self.protocol.epoch

    @property
    def broadcaster_counters(self) -> dict[str, int]:
        return self.protocol.broadcaster_counters

    def wait_live(self, timeout: float | None = None) -> bool:
        """Wait for the broadcaster's first heartbeat on this client's SUB socket."""
        return bool(self._live.wait(timeout))

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
                for frame in self.protocol.expire(now):
                    self._deliver(frame)
            if self.inbox.gap_log and self.counters["gaps"] > self.counters["gaps_logged"]:
                self.counters["gaps_logged"] = self.counters["gaps"]
                stream, first, last = self.inbox.gap_log[-1]
                log.warning("bus gap: frames %s..%s of %s/%s never arrived (%s gaps so far)",
                            first, last, stream[0].hex(), stream[1], self.counters["gaps"])
            for parts in self.protocol.stalled(now):
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
        # At debug level: a worker logs all its counters at exit (worker.context).
        log.debug("bus client %s closed; counters %s", self.pid, dict(self.counters))


def connect(runtime_dir: str, max_frame_size: int, **options: Any) -> BusClient:
    """Create this worker's bus client (its context connects it to the bus port)."""
    return BusClient(runtime_dir, max_frame_size, **options)
