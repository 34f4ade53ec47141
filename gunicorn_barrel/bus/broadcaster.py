"""The broadcaster side process: PULL what workers push, PUBlish it to every worker.

Started by the arbiter's supervisor (``gunicorn_barrel.sidecar``) as
``python -m gunicorn_barrel.bus.broadcaster``, so ``ps`` shows what it is.
It binds two ipc sockets in the instance's private runtime directory::

    workers --PUSH--> pull.sock [broadcaster] pub.sock --PUB--> every worker's SUB

It refuses (and counts) frames that fail ``wire.check`` so that garbage
written to the socket by another local process never reaches a worker. It
dies with the arbiter: the kernel sends it SIGTERM when the arbiter goes
(PR_SET_PDEATHSIG), and it also watches its parent pid.

With federation settings it also links to peer broadcasters over TCP
(``federation``): socket.io and event frames seen for the first time, from
a worker or a peer, are published here and forwarded to every other link.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence

import zmq

from gunicorn_barrel.bus import endpoints, fastzmq, keys, linkstate, wire
from gunicorn_barrel.bus.federation import Federation, FederationConfig, Link, parse_peers
from gunicorn_barrel.lifeline import signal_when_parent_dies

log = logging.getLogger("gunicorn_barrel.broadcaster")

HEARTBEAT_INTERVAL = 0.05
_ACK_TTL = 300.0  # forget senders silent this long (bounded heartbeat size)
# Links start this long after the broadcaster: after a restart, the workers'
# SUB sockets must be back before peers resend, or they would miss frames.
FEDERATION_SETTLE = 1.0
_FEDERATION_RETRY = 5.0


class _Published:
    """One sender's stream as published here: acknowledged only up to its first hole.

    A frame lost before it reached us (a full queue on the way) must not be
    acknowledged by a later one: the sender resends what is not acknowledged.
    """

    _MAX_AHEAD = 100_000

    def __init__(self, contiguous: int) -> None:
        self.contiguous = contiguous
        self.ahead: set[int] = set()
        self.last_seen = 0.0

    def add(self, seq: int, now: float) -> None:
        self.last_seen = now
        if seq <= self.contiguous:
            return  # a resend of what we already published
        self.ahead.add(seq)
        while self.contiguous + 1 in self.ahead:
            self.contiguous += 1
            self.ahead.remove(self.contiguous)
        if len(self.ahead) > self._MAX_AHEAD:  # a hole that will never fill: move past it
            self.contiguous = min(self.ahead)
            self.ahead.discard(self.contiguous)


class Broadcaster:
    """The forwarding loop, with its counters."""

    def __init__(
        self,
        runtime_dir: str,
        max_frame_size: int,
        parent_pid: int | None,
        federation: FederationConfig | None = None,
        settle: float = FEDERATION_SETTLE,
    ) -> None:
        self.runtime_dir = runtime_dir
        self.max_frame_size = max_frame_size
        self.parent_pid = parent_pid  # None: a standalone hub
        self.counters: Counter[str] = Counter()
        self.epoch = os.urandom(16)
        # (origin, channel) -> what it has published of that stream
        self._published: dict[tuple[bytes, bytes], _Published] = {}
        self._next_heartbeat = 0.0
        self._stopping = False
        self.federation: Federation | None = None
        self._pub: zmq.Socket | None = None
        self._seen = linkstate.SeenFilter()
        self._federation_at = time.monotonic() + settle
        if federation is not None:
            self.federation = Federation(federation, self.epoch, max_frame_size, self.counters,
                                         self._from_link)

    def stop(self, *_signal: object) -> None:
        self._stopping = True

    def run(self) -> None:
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pub = ctx.socket(zmq.PUB)
        try:
            # A peer that sends more than a frame's worth is cut off by libzmq
            # itself, before any Python code sees the bytes.
            pull.setsockopt(zmq.MAXMSGSIZE, self.max_frame_size)
            pub.setsockopt(zmq.SNDHWM, 100_000)
            pull.setsockopt(zmq.RCVHWM, 100_000)
            pub.bind(endpoints.pub_endpoint(self.runtime_dir))
            pull.bind(endpoints.pull_endpoint(self.runtime_dir))
            endpoints.mark_ready(self.runtime_dir, os.getpid())
            log.info("broadcaster %s ready in %s", os.getpid(), self.runtime_dir)
            self._pub = pub
            self._forward(ctx, pull, pub)
        finally:
            if self.federation is not None:
                self.federation.close()
            pull.close(linger=0)
            pub.close(linger=500)
            ctx.term()
            log.info("broadcaster %s stopped; counters %s", os.getpid(), dict(self.counters))

    def _forward(self, ctx: zmq.Context, pull: zmq.Socket, pub: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        federation = self.federation
        while not self._stopping:
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                log.warning("arbiter %s is gone; broadcaster exiting", self.parent_pid)
                return
            now = time.monotonic()
            if federation is not None:
                if not federation.started and now >= self._federation_at:
                    self._start_federation(ctx, poller, federation, now)
                federation.tick(now)
            if now >= self._next_heartbeat:
                self._heartbeat(pub, now)
            timeout_ms = max(1, int((self._next_heartbeat - now) * 1000))
            try:
                ready = poller.poll(timeout_ms)
            except zmq.ZMQError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            for sock, _event in ready:
                if sock is pull:
                    self._drain(pull, pub)
                elif federation is not None:
                    federation.handle(sock, time.monotonic())

    def _start_federation(self, ctx: zmq.Context, poller: zmq.Poller, federation: Federation,
                          now: float) -> None:
        try:
            federation.start(ctx)
        except zmq.ZMQError as exc:
            # The local bus goes on; the links are tried again (and frames queue meanwhile).
            self.counters["federation_start_failed"] += 1
            self._federation_at = now + _FEDERATION_RETRY
            log.error("federation: cannot start the links: %s; trying again in %.0f s",
                      exc, _FEDERATION_RETRY)
            return
        for sock in federation.sockets():
            poller.register(sock, zmq.POLLIN)

    def _drain(self, pull: zmq.Socket, pub: zmq.Socket) -> None:
        # Forward everything queued without returning to poll() between frames.
        for _ in range(10_000):
            try:
                parts = fastzmq.recv_parts(pull, fastzmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) == 2:
                self.relay(parts, pub)
            else:
                self.relay_batch(parts, pub)

    def relay(self, parts: Sequence[bytes], pub: zmq.Socket) -> None:
        try:
            self._check(parts)
        except wire.WireError as exc:
            self._refuse(exc)
            return
        self._publish(parts, pub)

    def relay_batch(self, parts: Sequence[bytes], pub: zmq.Socket) -> None:
        """Several frames of one channel pushed as one message: all published, or none."""
        try:
            frames = wire.split_batch(parts)
            for frame_parts in frames:
                self._check(frame_parts)
        except wire.WireError as exc:
            self._refuse(exc)
            return
        for frame_parts in frames:
            self._publish(frame_parts, pub)

    def _check(self, parts: Sequence[bytes]) -> None:
        # A full decode, not just the header: garbage behind a valid
        # header never reaches a worker.
        wire.decode(parts, self.max_frame_size)
        if parts[0][:1] == b"\x00":
            raise wire.MalformedFrame("channels starting with NUL are the broadcaster's own")

    def _publish(self, parts: Sequence[bytes], pub: zmq.Socket) -> None:
        fastzmq.send_parts(pub, parts)
        self.counters["frames_published"] += 1
        origin, seq = wire.origin_and_seq(parts[1])
        key = (origin, bytes(parts[0]))
        stream = self._published.get(key)
        if stream is None:
            stream = self._published[key] = _Published(contiguous=seq - 1)
        now = time.monotonic()
        stream.add(seq, now)
        if self.federation is not None and linkstate.federated(parts[0]) \
                and self._seen.first_time(origin, parts[0], seq, now):
            self.federation.forward(parts, None, now)

    def _from_link(self, parts: list[bytes], link: Link) -> None:
        """A frame from a peer: published here and passed on, the first time only."""
        try:
            wire.decode(parts, self.max_frame_size)
            if not linkstate.federated(parts[0]):
                raise wire.MalformedFrame(f"channel {parts[0][:20]!r} does not cross hosts")
        except wire.WireError as exc:
            self.counters["federation_frames_refused"] += 1
            if self.counters["federation_frames_refused"] <= 10:
                log.warning("refused a frame from federation peer %s: %s", link.name, exc)
            return
        origin, seq = wire.origin_and_seq(parts[1])
        now = time.monotonic()
        if not self._seen.first_time(origin, parts[0], seq, now):
            self.counters["federation_duplicates_dropped"] += 1
            return
        assert self._pub is not None and self.federation is not None
        self._pub.send_multipart(parts)
        self.counters["federation_frames_in"] += 1
        self.federation.forward(parts, link, now)

    def _refuse(self, exc: wire.WireError) -> None:
        self.counters["frames_refused"] += 1
        if self.counters["frames_refused"] <= 10:
            log.warning("refused a frame: %s", exc)

    def _heartbeat(self, pub: zmq.Socket, now: float) -> None:
        self._next_heartbeat = now + HEARTBEAT_INTERVAL
        acks = {}
        for (origin, channel), stream in list(self._published.items()):
            if now - stream.last_seen > _ACK_TTL:
                del self._published[(origin, channel)]
                continue
            acks[origin.hex() + "/" + channel.decode("utf-8", "replace")] = stream.contiguous
        payload: dict[str, object] = {"acks": acks}
        if self.federation is not None:
            # Workers see the federation's health (gunicorn_barrel.counters()).
            self._seen.expire(now)
            self.counters["federation_queued"] = self.federation.queued()
            payload["counters"] = {k: v for k, v in self.counters.items() if k.startswith("federation_")}
        frame = wire.Frame(wire.HEARTBEAT_CHANNEL, self.epoch, 0, payload)
        pub.send_multipart(wire.encode(frame, 64 * 1024 * 1024))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gunicorn_barrel.bus.broadcaster")
    parser.add_argument("--runtime-dir", required=True)
    parser.add_argument("--max-frame-size", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    add_federation_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
    )
    if not signal_when_parent_dies(args.parent_pid):
        raise SystemExit("broadcaster: the arbiter is already gone")
    broadcaster = Broadcaster(args.runtime_dir, args.max_frame_size, args.parent_pid,
                              federation_config(parser, args))
    signal.signal(signal.SIGTERM, broadcaster.stop)
    signal.signal(signal.SIGINT, broadcaster.stop)
    # gunicorn sends HUP/USR1/... to its whole process group on some paths;
    # none of them concerns the broadcaster.
    for name in ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTTIN", "SIGTTOU"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    try:
        broadcaster.run()
    finally:
        if os.getppid() != args.parent_pid:
            # The arbiter died without cleaning up: its runtime dir is ours to remove.
            endpoints.remove_runtime_dir(args.runtime_dir)


def add_federation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--federation-listen", default="", help="tcp://HOST:PORT to accept peers on")
    parser.add_argument("--federation-peers", default="", help="NAME=tcp://HOST:PORT,... to dial")
    parser.add_argument("--federation-keys", default="", help="key directory (see gunicorn-barrel-keys)")
    parser.add_argument("--federation-queue-limit", type=int, default=100_000,
                        help="frames kept per link while a peer is away")


def federation_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> FederationConfig | None:
    """The links asked for on the command line (None without any); exits with the reason if unusable."""
    if not args.federation_listen and not args.federation_peers:
        return None
    try:
        peers = parse_peers(args.federation_peers)
        ring = keys.load(args.federation_keys)
    except (ValueError, keys.KeyFileError) as exc:
        parser.exit(2, f"{parser.prog}: federation: {exc}\n")
    missing = [name for name, _ in peers if name not in ring.peers]
    if missing:
        parser.exit(2, f"{parser.prog}: federation: no public key for peer(s) {', '.join(missing)} "
                       f"in {args.federation_keys}/peers\n")
    return FederationConfig(ring, args.federation_listen or None, peers, args.federation_queue_limit)


if __name__ == "__main__":
    main()
