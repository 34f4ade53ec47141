"""Emit socket.io events (and barrel events) from outside gunicorn: cron jobs, other services.

    from gunicorn_barrel.sio.emitter import Emitter

    with Emitter("tcp://hub.example:7000", keys="/etc/barrel/cron-keys") as em:
        em.emit("news", {"title": "nightly report ready"})           # every client
        em.emit("alert", {"level": 2}, room="ops")                   # one room
        em.event("cache-clear", {"why": "import done"})              # gunicorn_barrel.events

An Emitter is a send-only federation peer (plain pyzmq, no gevent): it dials
a hub's or a broadcaster's ``federation_listen`` endpoint with a CURVE key
pair of its own (made by ``gunicorn-barrel-keys``; its public key goes into
the listener's emitters/ directory, the listener's public key into the
emitter's peers/). Messages use the BarrelManager format, so every worker
of every linked instance delivers them to its clients. ``flush()`` (called
by ``close()`` and on leaving the ``with`` block) waits until the listener
has acknowledged every message, resending across a reconnect; it returns
False, with the count of unacknowledged messages in ``unacked``, when the
listener cannot be reached in time.

A process on the instance's own host (a side process declared in the config)
uses ``gunicorn_barrel.side`` instead: no keys, the instance's own bus.
"""
from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

import zmq

from gunicorn_barrel.bus import wire
from gunicorn_barrel.bus.sequencing import FirstUnacked, Numbering
from gunicorn_barrel.federation import keys as barrel_keys
from gunicorn_barrel.federation import linkstate
from gunicorn_barrel.sio.emitting import EmitterBase


class Emitter(EmitterBase):
    """A send-only link to a hub or broadcaster, for processes outside gunicorn."""

    def __init__(
        self,
        endpoint: str,
        keys: str,
        peer: str | None = None,
        channel: str = "socketio",
        max_frame_size: int = 1024 * 1024,
        queue_limit: int = 100_000,
    ) -> None:
        """``keys``: this emitter's key directory; ``peer``: the listener's key name in its
        peers/ (may be omitted when there is only one); ``channel``: the BarrelManager's."""
        ring = barrel_keys.load(keys)
        if peer is None:
            if len(ring.peers) != 1:
                raise ValueError(f"{keys}/peers holds {len(ring.peers)} keys: say which peer= to use")
            peer = next(iter(ring.peers))
        if peer not in ring.peers:
            raise ValueError(f"no public key for peer {peer!r} in {keys}/peers")
        super().__init__(channel)
        self.ring = ring
        self.max_frame_size = max_frame_size
        self.origin = uuid.uuid4().bytes
        self.counters: Counter[str] = Counter()
        self._epoch = os.urandom(linkstate.EPOCH_SIZE)
        self._out = linkstate.Outgoing(self._epoch, queue_limit, self.counters)
        self._numbering = Numbering()
        # A frame counts as acknowledged once the listener acknowledged its link message
        # (it publishes a frame as it receives it): the frames' base (wire).
        self._unacked_seqs = FirstUnacked()
        self._out.refresh = self._rebase
        self._peer_epoch = b""
        self._heard_at = float("-inf")
        self._next_hello = 0.0
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.curve_serverkey = ring.peers[peer]
        self._sock.curve_publickey = ring.public
        self._sock.curve_secretkey = ring.secret
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        self._sock.connect(endpoint)

    @property
    def unacked(self) -> int:
        return len(self._out.unacked)

    def _send(self, channel: str, payload: Mapping[str, Any]) -> None:
        # Raises WireError / FrameTooLarge here, for a message that cannot travel.
        seq = self._numbering.peek(channel)
        base = self._unacked_seqs.base(channel, seq, done_below=self._out.base())
        parts = wire.encode(wire.Frame(channel, self.origin, seq, payload, base=base), self.max_frame_size)
        self._numbering.take(channel)
        message = self._out.add(parts, time.monotonic())
        self._unacked_seqs.sent(channel, seq, self._out.seq)
        if message is not None and not self._try_send(message):
            self._out.block(self._out.seq)
        self._pump(0)

    def _rebase(self, parts: list[bytes]) -> list[bytes]:
        """A frame going again, with the base of now (what was acknowledged since is not waited for)."""
        channel = bytes(parts[0]).decode("utf-8")
        next_seq = self._numbering.peek(channel)
        return wire.rebase(parts, self._unacked_seqs.base(channel, next_seq, done_below=self._out.base()))

    def _try_send(self, message: bytes) -> bool:
        try:
            self._sock.send(message, zmq.NOBLOCK)
        except zmq.Again:
            return False  # not connected: kept, sent in order when the listener says hello
        return True

    def _flush_unacked(self, now: float) -> None:
        for seq, message in self._out.unblock(now):
            if not self._try_send(message):
                self._out.block(seq)
                return

    def _pump(self, timeout: float) -> None:
        """Say hello, read the listener's hellos (acks), resend; for up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= self._next_hello:
                self._next_hello = now + linkstate.HELLO_INTERVAL
                self._try_send(linkstate.encode_hello(linkstate.Hello(
                    self._epoch, self.ring.node, False, b"", 0)))
                if now - self._heard_at < linkstate.PEER_ALIVE_WITHIN:
                    if self._out.blocked:
                        self._flush_unacked(now)
                    elif self._out.stalled(now):
                        for message in self._out.resend(now, older_than=linkstate.RESEND_AFTER):
                            self._try_send(message)
            wait = min(deadline, self._next_hello) - now
            if self._sock.poll(max(0, int(wait * 1000)), zmq.POLLIN):
                self._receive()
            if time.monotonic() >= deadline:
                return
            if timeout and not self._out.unacked:
                return

    def _receive(self) -> None:
        while True:
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if len(parts) != 1:
                    raise linkstate.LinkMessageError("expected one part")
                message = linkstate.decode(parts[0])
            except linkstate.LinkMessageError:
                self.counters["messages_refused"] += 1
                continue
            if not isinstance(message, linkstate.Hello):
                continue  # we asked for no frames
            self._heard_at = time.monotonic()
            self._out.ack(message.ack_epoch, message.ack_seq, self._heard_at)
            if message.epoch != self._peer_epoch:
                self._peer_epoch = message.epoch  # a new listener: it gets everything again
                self._out.block()
            if self._out.blocked:
                self._flush_unacked(self._heard_at)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the listener acknowledged every message; False if some still are not."""
        if self._out.unacked:
            self._pump(timeout)
        return not self._out.unacked

    def close(self, timeout: float = 10.0) -> bool:
        """Flush, then close the socket; returns what flush() returned."""
        try:
            return self.flush(timeout)
        finally:
            self._sock.close(linger=0)
            self._ctx.term()
