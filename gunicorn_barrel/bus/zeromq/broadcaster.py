"""The broadcaster side process: PULL what workers push, PUBlish it to every worker.

Started by the arbiter's supervisor (``gunicorn_barrel.arbiter.supervisor``) as
``python -m gunicorn_barrel.bus.zeromq.broadcaster``, so ``ps`` shows what it is.
It binds two ipc sockets in the instance's private runtime directory::

    workers --PUSH--> pull.sock [broadcaster] pub.sock --XPUB--> every worker's SUB

(An XPUB publishes as a PUB does; it also tells which workers are subscribed,
written with the federation links' state to a status file: ``status``.)

It refuses (and counts) frames that fail ``wire.check`` so that garbage
written to the socket by another local process never reaches a worker. It
dies with the arbiter: the kernel sends it SIGTERM when the arbiter goes
(PR_SET_PDEATHSIG), and it also watches its parent pid.

With federation settings it also links to peer broadcasters over TCP
(``federation``): socket.io and event frames seen for the first time, from
a worker or a peer, are published here and forwarded to every other link.
Every configured peer is queued for from the start, whichever side dials
(``federation.links``).
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Sequence

import zmq

from gunicorn_barrel.bus import channels, wire
from gunicorn_barrel.bus.zeromq import fastzmq
from gunicorn_barrel.bus.zeromq.protocol import Published
from gunicorn_barrel.bus.zeromq.status import StatusFile, Subscribers
from gunicorn_barrel.config import arguments, values
from gunicorn_barrel.config.settings import BROADCASTER
from gunicorn_barrel.federation import keys, linkstate
from gunicorn_barrel.federation.delivery import STALE_AFTER, LocalDelivery
from gunicorn_barrel.federation.links import Federation, FederationConfig, Link
from gunicorn_barrel.metrics import catalog, recorder, snapshots
from gunicorn_barrel.runtime import endpoints, logs
from gunicorn_barrel.runtime.lifeline import signal_when_parent_dies

log = logging.getLogger("gunicorn_barrel.broadcaster")

HEARTBEAT_INTERVAL = 0.05
_ACK_TTL = 300.0  # forget senders silent this long (bounded heartbeat size)
# Links start this long after a first start (a restart starts them as soon as
# the workers are back, see status.Subscribers.all_back).
FEDERATION_SETTLE = 1.0
_FEDERATION_RETRY = 5.0
# A hole in a sender's stream this far behind will never fill (protocol.Published).
_MAX_AHEAD = 100_000


class Broadcaster:
    """The forwarding loop, with its counters."""

    def __init__(
        self,
        runtime_dir: str,
        max_frame_size: int,
        parent_pid: int | None,
        federation: FederationConfig | None = None,
        settle: float = FEDERATION_SETTLE,
        worker_wait: float = STALE_AFTER,
    ) -> None:
        self.runtime_dir = runtime_dir
        self.max_frame_size = max_frame_size
        self.parent_pid = parent_pid  # None: a standalone hub
        self.counters: Counter[str] = Counter()
        self.epoch = os.urandom(16)
        # What it has published of each stream: the heartbeat's acknowledgements.
        self.published = Published(_ACK_TTL, _MAX_AHEAD)
        self._next_heartbeat = 0.0
        self._stopping = False
        self.federation: Federation | None = None
        self._pub: zmq.Socket | None = None
        self._seen = linkstate.SeenFilter()
        self._federation_at = time.monotonic() + settle
        self.subscribers = Subscribers()
        self._delivery: LocalDelivery[Link] = LocalDelivery(worker_wait)
        self._status = StatusFile(runtime_dir)
        self._metrics = snapshots.Writer(runtime_dir, catalog.BROADCASTER, recorder.process())
        if federation is not None:
            self.federation = Federation(federation, self.epoch, max_frame_size, self.counters,
                                         self._from_link)

    def stop(self, *_signal: object) -> None:
        self._stopping = True

    def run(self) -> None:
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pub = ctx.socket(zmq.XPUB)
        try:
            # A peer that sends more than a frame's worth is cut off by libzmq
            # itself, before any Python code sees the bytes.
            pull.setsockopt(zmq.MAXMSGSIZE, self.max_frame_size)
            pub.setsockopt(zmq.SNDHWM, 100_000)
            pull.setsockopt(zmq.RCVHWM, 100_000)
            pub.bind(endpoints.pub_endpoint(self.runtime_dir))
            pull.bind(endpoints.pull_endpoint(self.runtime_dir))
            if self.subscribers.await_previous(endpoints.read_status(self.runtime_dir), time.monotonic()):
                self._federation_at = 0.0  # a restart: links once the workers are back
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
            self._metrics.remove()
            log.info("broadcaster %s stopped; counters %s", os.getpid(), dict(self.counters))

    def _forward(self, ctx: zmq.Context, pull: zmq.Socket, pub: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(pub, zmq.POLLIN)  # subscription messages
        reading = False
        federation = self.federation
        while not self._stopping:
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                log.warning("arbiter %s is gone; broadcaster exiting", self.parent_pid)
                return
            now = time.monotonic()
            if not reading and self.subscribers.all_back(now):
                poller.register(pull, zmq.POLLIN)
                reading = True
                # Every worker back hears this epoch before any frame comes from it.
                self._next_heartbeat = now
            if federation is not None:
                if not federation.started and reading and now >= self._federation_at:
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
                elif sock is pub:
                    self._subscriptions(pub)
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

    def _subscriptions(self, pub: zmq.Socket) -> None:
        for _ in range(1000):
            try:
                message = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.subscribers.on_message(message)

    def _drain(self, pull: zmq.Socket, pub: zmq.Socket) -> None:
        # Forward everything queued without returning to poll() between frames.
        for _ in range(10_000):
            try:
                parts = fastzmq.recv_parts(pull, fastzmq.NOBLOCK)
            except zmq.Again:
                return
            if parts[0] == channels.ECHO_TOPIC:
                self._echoed(parts)
            elif len(parts) == 2:
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
        if channels.is_reserved(parts[0]):
            raise wire.MalformedFrame("channels starting with NUL are the broadcaster's own")

    def _publish(self, parts: Sequence[bytes], pub: zmq.Socket) -> None:
        fastzmq.send_parts(pub, parts)
        self.counters["frames_published"] += 1
        origin, seq, base = wire.origin_seq_base(parts[1])
        now = time.monotonic()
        self.published.add(origin, parts[0], seq, base, now)
        if self.federation is not None and channels.crosses_hosts(parts[0]) \
                and self._seen.first_time(origin, parts[0], seq, now):
            self.federation.forward(parts, None, now)

    def _from_link(self, parts: list[bytes], link: Link) -> None:
        """A frame from a peer: published here and passed on, the first time only."""
        try:
            wire.decode(parts, self.max_frame_size)
            if not channels.crosses_hosts(parts[0]):
                raise wire.MalformedFrame(f"channel {parts[0][:20]!r} does not cross hosts")
        except wire.WireError as exc:
            self.counters["federation_frames_refused"] += 1
            if self.counters["federation_frames_refused"] <= 10:
                log.warning("refused a frame from federation peer %s: %s", link.name, exc)
            return
        origin, seq, base = wire.origin_seq_base(parts[1])
        now = time.monotonic()
        if not self._seen.first_time(origin, parts[0], seq, now):
            self.counters["federation_duplicates_dropped"] += 1
            return
        assert self._pub is not None and self.federation is not None
        self._pub.send_multipart(parts)
        # In the heartbeat too: our receivers learn where the stream was published up to.
        self.published.add(origin, parts[0], seq, base, now)
        self.counters["federation_frames_in"] += 1
        self.federation.forward(parts, link, now)

    def _echoed(self, parts: Sequence[bytes]) -> None:
        echo = channels.decode_echo(parts)
        if echo is None:
            self._refuse(wire.MalformedFrame("a heartbeat echo that does not parse"))
            return
        self._delivery.echoed(*echo, time.monotonic())

    def _refuse(self, exc: wire.WireError) -> None:
        self.counters["frames_refused"] += 1
        if self.counters["frames_refused"] <= 10:
            log.warning("refused a frame: %s", exc)

    def _heartbeat(self, pub: zmq.Socket, now: float) -> None:
        self._next_heartbeat = now + HEARTBEAT_INTERVAL
        shared = None
        links: list[dict[str, object]] = []
        echo: int | None = None
        if self.federation is not None:
            # Links acknowledge only what every worker read (federation.delivery).
            self.federation.acknowledge(self._delivery.safe(self.subscribers.pids, now))
            echo = self._delivery.mark(self.federation.received())
            # Workers see the federation's health (gunicorn_barrel.counters()).
            self._seen.expire(now)
            links = self.federation.status(now)
            self.counters["federation_queued"] = self.federation.queued()
            self.counters["federation_links_up"] = sum(1 for link in links if link["up"])
            shared = {k: v for k, v in self.counters.items() if k.startswith("federation_")}
        payload = channels.heartbeat_payload(self.published.acks(now), shared, self.published.tops(), echo)
        frame = wire.Frame(channels.HEARTBEAT, self.epoch, 0, payload)
        pub.send_multipart(wire.encode(frame, 64 * 1024 * 1024))
        self._status.update({"pid": os.getpid(), "epoch": self.epoch.hex(),
                             "workers": sorted(self.subscribers.pids), "links": links}, now)
        if self._metrics.due(now):
            self._record(links)
            self._metrics.write(now)

    def _record(self, links: list[dict[str, object]]) -> None:
        """This broadcaster's numbers, for its metrics snapshot."""
        rec = recorder.process()
        rec.copy_counters(self.counters, catalog.BROADCASTER)
        rec.series(catalog.metric("barrel_broadcaster_subscribers")).value = len(self.subscribers.pids)
        for link in links:
            labels = (str(link["name"]), "dial" if link["dialed"] else "listen")
            rec.series(catalog.metric("barrel_federation_link_up"), *labels).value = 1 if link["up"] else 0
            queued = link["queued"]
            rec.series(catalog.metric("barrel_federation_link_queued_frames"), *labels).value = \
                queued if isinstance(queued, int) else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = arguments.parser("gunicorn_barrel.bus.zeromq.broadcaster", BROADCASTER)
    args = parser.parse_args(argv)
    logs.side_process_logging()  # into gunicorn's error log, through the supervisor
    if not signal_when_parent_dies(args.parent_pid):
        raise SystemExit("broadcaster: the arbiter is already gone")
    broadcaster = Broadcaster(args.runtime_dir, args.max_frame_size, args.parent_pid,
                              federation_config(parser, args), worker_wait=args.federation_worker_wait)
    signal.signal(signal.SIGTERM, broadcaster.stop)
    signal.signal(signal.SIGINT, broadcaster.stop)
    # gunicorn sends HUP/USR1/... to its whole process group on some paths;
    # none of them concerns the broadcaster.
    for name in ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTTIN", "SIGTTOU"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    try:
        broadcaster.run()
    finally:
        endpoints.remove_if_orphaned(args.runtime_dir, args.parent_pid)


def federation_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> FederationConfig | None:
    """The links asked for on the command line (None without any); exits with the reason if unusable."""
    if not args.federation_listen and not args.federation_peers:
        return None
    try:
        peers = values.parse_peers(args.federation_peers)
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
