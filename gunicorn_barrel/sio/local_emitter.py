"""Emit from a process beside the workers (a side process) over the instance's own bus.

    from gunicorn_barrel.sio.local_emitter import LocalEmitter

    with LocalEmitter() as em:                  # in a side process: its instance's bus
        em.emit("news", {"title": "report ready"})
        em.event("cache-clear", {"why": "import done"})
        em.flush(5)                             # True once the broadcaster took every message

It is one more sender on the zmq bus, as a worker is: frames PUSHed to the
broadcaster's ipc socket in the runtime directory, numbered per channel
with their base, kept until the broadcaster's heartbeat acknowledges them
and sent again to a broadcaster that restarted (or when one stays
unacknowledged while heartbeats arrive), by the workers' own rules
(``bus.zeromq.protocol.SenderProtocol``). Every worker delivers them to its
clients once, in the order they were emitted (``bus.sequencing``). Plain
pyzmq, no gevent: one thread of its own owns the sockets and keeps reading
the heartbeats, so a process that sleeps between emits costs the
broadcaster nothing and its messages are resent even while it sleeps. Make
it in the process that uses it (after any fork); close() (or leaving the
``with`` block) flushes first. Once the arbiter is gone (nothing will
acknowledge anything), flush() returns False at once: a side process that
stops gracefully on the SIGTERM it gets when the arbiter dies does not wait
for a bus that is gone too.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import zmq

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.zeromq.protocol import SenderProtocol
from gunicorn_barrel.runtime import endpoints, side_env
from gunicorn_barrel.sio.emitting import EmitterBase, EmitterClosed

__all__ = ["EmitterClosed", "LocalEmitter"]

_POLL_MS = 100
_JOIN = 2.0


class LocalEmitter(EmitterBase):
    """A sender on the instance's zmq bus, for a process on its host."""

    def __init__(self, runtime_dir: str | None = None, max_frame_size: int | None = None,
                 channel: str = channels.DEFAULT_SIO_NAME, max_unacked: int = 100_000,
                 arbiter_pid: int | None = None) -> None:
        """Without ``runtime_dir``, the instance of this side process (``GUNICORN_BARREL_*``);
        ``arbiter_pid``: its gunicorn arbiter (from there too by default)."""
        super().__init__(channel)
        if runtime_dir is None or max_frame_size is None:
            found = _instance()
            runtime_dir = runtime_dir or found.runtime_dir
            max_frame_size = max_frame_size or found.max_frame_size
            arbiter_pid = arbiter_pid or found.arbiter_pid
        self.runtime_dir = runtime_dir
        self.max_frame_size = max_frame_size
        self.counters: Counter[str] = Counter()
        self._protocol = SenderProtocol(max_frame_size, max_unacked, self.counters)
        self.origin = self._protocol.origin
        self._pending: deque[list[bytes]] = deque()  # numbered, not pushed yet
        self._changed = threading.Condition()  # guards the above and _closed; notified on acks
        self._closed = False
        self._stopping = False
        self._arbiter: int | None = None  # a pidfd: readable once the arbiter is gone
        self._orphaned = False
        if arbiter_pid is not None:
            try:
                self._arbiter = os.pidfd_open(arbiter_pid)
            except ProcessLookupError:
                self._orphaned = True
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="barrel-local-emitter", daemon=True)
        self._thread.start()

    @property
    def unacked(self) -> int:
        """Messages the broadcaster has not acknowledged yet."""
        with self._changed:
            return self._protocol.outbox.unacked_count()

    def _send(self, channel: str, payload: Mapping[str, Any]) -> None:
        with self._changed:
            if self._closed:
                raise EmitterClosed("the LocalEmitter is closed")
            # Raises WireError / FrameTooLarge here, for a message that cannot travel.
            self._pending.append(self._protocol.frame(channel, payload, time.monotonic()))
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the thread has wake-ups enough

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the broadcaster acknowledged every message; False if some still are not
        (at once when the arbiter is gone)."""
        with self._changed:
            outbox = self._protocol.outbox
            self._changed.wait_for(lambda: self._orphaned or not outbox.unacked_count(), timeout)
            return not outbox.unacked_count()

    def close(self, timeout: float = 10.0) -> bool:
        """Flush (up to ``timeout`` s), then stop the thread and close the sockets."""
        with self._changed:
            if self._closed:
                return not self._protocol.outbox.unacked_count()
        try:
            return self.flush(timeout)
        finally:
            with self._changed:
                self._closed = True
            self._stopping = True
            self._wake()
            self._thread.join(_JOIN)
            for fd in (self._wake_r, self._wake_w, self._arbiter):
                if fd is not None:
                    os.close(fd)

    # -- the thread that owns the sockets ---------------------------------------------

    def _run(self) -> None:
        ctx = zmq.Context()
        push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        try:
            for sock in (push, sub):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RECONNECT_IVL, 50)
                sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
            push.setsockopt(zmq.SNDHWM, 100_000)
            sub.setsockopt(zmq.MAXMSGSIZE, self.max_frame_size)
            sub.setsockopt(zmq.SUBSCRIBE, channels.HEARTBEAT.encode())
            push.connect(endpoints.pull_endpoint(self.runtime_dir))
            sub.connect(endpoints.pub_endpoint(self.runtime_dir))
            poller = zmq.Poller()
            poller.register(sub, zmq.POLLIN)
            poller.register(self._wake_r, zmq.POLLIN)
            if self._arbiter is not None:
                poller.register(self._arbiter, zmq.POLLIN)
            while not self._stopping:
                ready = dict(poller.poll(_POLL_MS))
                if self._arbiter is not None and self._arbiter in ready:
                    poller.unregister(self._arbiter)
                    with self._changed:
                        self._orphaned = True
                        self._changed.notify_all()
                self._drain_wake()
                self._read_heartbeats(sub, push)
                self._push_pending(push)
                self._resend_stalled(push)
        finally:
            push.close()
            sub.close()
            ctx.term()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _push(self, push: zmq.Socket, frames: list[list[bytes]]) -> None:
        for parts in frames:
            try:
                push.send_multipart(parts, zmq.NOBLOCK)
            except zmq.Again:
                # Kept in the outbox: resent once it stays unacknowledged.
                self.counters["push_queue_full"] += 1

    def _push_pending(self, push: zmq.Socket) -> None:
        with self._changed:
            frames = list(self._pending)
            self._pending.clear()
        self._push(push, frames)

    def _read_heartbeats(self, sub: zmq.Socket, push: zmq.Socket) -> None:
        while True:
            try:
                parts = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                # Only the broadcaster publishes there (a 0700 directory's socket).
                frame = wire.decode(parts, self.max_frame_size, check_values=False)
            except wire.WireError:
                self.counters["frames_refused"] += 1
                continue
            if frame.channel != channels.HEARTBEAT:
                continue
            self._on_heartbeat(frame, push)

    def _on_heartbeat(self, frame: wire.Frame, push: zmq.Socket) -> None:
        with self._changed:
            again = self._protocol.acknowledged(frame, time.monotonic())
            self._changed.notify_all()
        self._push(push, again)

    def _resend_stalled(self, push: zmq.Socket) -> None:
        with self._changed:
            again = self._protocol.stalled(time.monotonic())
        self._push(push, again)


def _instance() -> side_env.SideInstance:
    found = side_env.current()
    if found is None:
        raise RuntimeError(
            f"LocalEmitter: this process was not started as a barrel side process ({side_env.RUNTIME_DIR} "
            "is not set): declare it in the gunicorn config (hooks.SideProcess), or pass runtime_dir=")
    if found.bus != "zmq":
        raise RuntimeError(
            "LocalEmitter: this instance's bus is Redis, which has no broadcaster to send to; "
            "use gunicorn_barrel.side.emitter(), which publishes to Redis")
    return found
