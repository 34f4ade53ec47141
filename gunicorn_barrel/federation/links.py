"""Federation links: a broadcaster's TCP links to peer broadcasters, hubs and emitters.

A broadcaster may listen (a ROUTER socket, CURVE server) and dial peers (one
DEALER socket each, CURVE client); either way a link carries frames both
ways. The protocol and the bookkeeping are in ``linkstate`` (sans-io); this
module owns the sockets, the CURVE authentication (a ZAP handler that admits
the public keys in the key directory's peers/ and emitters/ and logs every refusal) and
the socket monitors that log links going up, down, or failing their
handshake. The broadcaster's loop polls ``sockets()`` along with its own
and calls ``handle()``, ``forward()`` and ``tick()``.

Every configured peer has its link, and its queue, from the start, whichever
side dials: the peers in ``federation_peers`` (dialed) and, on a listener,
every other key in the key directory's peers/ (expected to dial in). So frames
made before a link first comes up, or while a peer restarts, are kept for it
(up to ``queue_limit``) and sent when it says hello. Keys in emitters/ are
admitted too, but get a link only when they connect: they send, never receive.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import zmq
from zmq.utils import z85

from gunicorn_barrel.federation import linkstate
from gunicorn_barrel.federation.keys import KeyRing
from gunicorn_barrel.runtime import zmq_monitor

log = logging.getLogger("gunicorn_barrel.federation")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_MONITORED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
# A refused peer retries every few hundred ms: log the first ones, then a sample.
_LOG_FIRST = 10
_LOG_EVERY = 100


@dataclasses.dataclass(frozen=True)
class FederationConfig:
    """Where to listen, whom to dial, which keys, how much to keep per link."""

    keys: KeyRing
    listen: str | None
    peers: Sequence[tuple[str, str]]  # (peer name in keys/peers, tcp endpoint)
    queue_limit: int


class Link:
    """One peer: what we owe it (out), what we acknowledge to it (incoming), how to reach it."""

    def __init__(self, name: str, out: linkstate.Outgoing, sock: zmq.Socket | None,
                 route: bytes | None = None, wants_data: bool = True) -> None:
        self.name = name
        self.out = out
        self.incoming = linkstate.Incoming()
        self.sock = sock
        self.route = route  # ROUTER side: the peer's current routing id
        self.wants_data = wants_data
        self.peer_epoch = b""
        self.heard_at = float("-inf")
        # What our HELLO acknowledges: what arrived, once the local workers hold it (``delivery``).
        self.ack: tuple[bytes, int] = (b"", 0)

    def is_up(self, now: float) -> bool:
        """The peer said hello lately and nothing waits behind an unsent frame."""
        return bool(self.peer_epoch) and now - self.heard_at < linkstate.PEER_ALIVE_WITHIN \
            and not self.out.blocked

    def send(self, message: bytes, counters: Counter[str], is_data: bool = True) -> bool:
        if self.sock is None or (self.sock.socket_type == zmq.ROUTER and self.route is None):
            return False
        try:
            if self.route is not None:
                # Only the first part can fail: a multipart message is queued whole or not at all.
                self.sock.send(self.route, _MORE)
                self.sock.send(message, _LAST)
            else:
                self.sock.send(message, _LAST)
        except zmq.Again:
            if is_data:
                counters["federation_send_blocked"] += 1  # kept: resent later
            return False
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            return False  # the peer's connection is gone: kept, resent when it is back
        return True


# Plain ints: pyzmq's send_multipart combines enum flags per part, costly on the hot path.
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)


class Federation:
    """The links of one broadcaster; frames arrive through ``on_frame(parts, link)``."""

    def __init__(self, config: FederationConfig, epoch: bytes, max_frame_size: int,
                 counters: Counter[str], on_frame: Callable[[list[bytes], Link], None]) -> None:
        self.config = config
        self.epoch = epoch
        self.max_frame_size = max_frame_size
        self.counters = counters
        self.on_frame = on_frame
        self.names = {key: name for name, key in config.keys.peers.items()}
        self.names.update({key: name for name, key in config.keys.emitters.items()})
        # Links exist (and queue) from the start, before their sockets.
        self.dialed = [Link(name, self._outgoing(), None) for name, _ in config.peers]
        self.accepted: dict[str, Link] = {}  # node -> link, peers that dial us
        if config.listen:
            dialed = {name for name, _ in config.peers}
            for name, key in config.keys.peers.items():
                if name not in dialed:
                    self.accepted[key.decode("ascii")] = Link(name, self._outgoing(), None)
        self._routes: dict[bytes, Link] = {}
        self._router: zmq.Socket | None = None
        self._zap: zmq.Socket | None = None
        self._monitors: dict[zmq.Socket, str] = {}
        self._monitored_links: dict[zmq.Socket, Link] = {}  # a dialed link's monitor -> the link
        self._next_hello = 0.0
        self.started = False

    def _outgoing(self) -> linkstate.Outgoing:
        return linkstate.Outgoing(self.epoch, self.config.queue_limit, self.counters)

    def links(self) -> list[Link]:
        return [*self.dialed, *self.accepted.values()]

    # -- sockets -----------------------------------------------------------

    def start(self, ctx: zmq.Context) -> None:
        """Bind the listener and dial the peers (the broadcaster calls it once its workers are back).

        On failure (the port is taken) every socket made so far is closed and
        the error raised: the caller may try again later.
        """
        try:
            self._start(ctx)
        except zmq.ZMQError:
            self.close()
            self._router = self._zap = None
            self._monitors = {}
            self._monitored_links = {}
            for link in self.links():
                link.sock = None
            raise

    def _start(self, ctx: zmq.Context) -> None:
        keys = self.config.keys
        if self.config.listen:
            # The ZAP handler must exist before the first handshake, or
            # libzmq would admit any CURVE client.
            self._zap = ctx.socket(zmq.REP)
            self._zap.bind(ZAP_ENDPOINT)
            router = self._router = ctx.socket(zmq.ROUTER)
            router.curve_server = True
            router.curve_secretkey = keys.secret
            router.curve_publickey = keys.public
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._configure(router)
            self._monitor(router, f"listener {self.config.listen}")
            router.bind(self.config.listen)
            for link in self.accepted.values():
                link.sock = router
            log.info("federation: listening on %s (node %s, %s peer key(s), %s emitter key(s))",
                     self.config.listen, keys.node, len(keys.peers), len(keys.emitters))
        for link, (name, endpoint) in zip(self.dialed, self.config.peers, strict=True):
            dealer = ctx.socket(zmq.DEALER)
            dealer.curve_serverkey = keys.peers[name]
            dealer.curve_secretkey = keys.secret
            dealer.curve_publickey = keys.public
            # Fail sends while disconnected (kept in the link's queue) instead
            # of piling them up in a pipe to a peer that may have restarted.
            dealer.setsockopt(zmq.IMMEDIATE, 1)
            self._configure(dealer)
            self._monitor(dealer, f"peer {name} ({endpoint})", link)
            dealer.connect(endpoint)
            link.sock = dealer
            log.info("federation: dialing peer %s at %s", name, endpoint)
        self.started = True

    def _configure(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        # Cut off, inside libzmq, a peer that sends more than a frame's worth.
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame_size + 1024)
        # A dead peer (cable cut, host gone) is noticed without waiting for TCP.
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)

    def _monitor(self, sock: zmq.Socket, what: str, link: Link | None = None) -> None:
        monitor = sock.get_monitor_socket(_MONITORED)
        self._monitors[monitor] = what
        if link is not None:
            self._monitored_links[monitor] = link

    def sockets(self) -> list[zmq.Socket]:
        socks = [link.sock for link in self.dialed if link.sock is not None]
        socks += [s for s in (self._router, self._zap) if s is not None]
        return socks + list(self._monitors)

    def close(self) -> None:
        for sock in self.sockets():
            sock.close(linger=0)

    # -- receiving ---------------------------------------------------------

    def handle(self, sock: zmq.Socket, now: float) -> None:
        """Read what ``sock`` has (a bounded batch, so no socket starves the others)."""
        for _ in range(1000):
            try:
                if sock is self._router:
                    # Only the listener needs frames with metadata (the peer's authenticated key).
                    self._on_router_message(sock.recv_multipart(zmq.NOBLOCK, copy=False), now)
                    continue
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if sock is self._zap:
                self._authenticate(parts)
            elif sock in self._monitors:
                self._on_event(self._monitors[sock], parts, self._monitored_links.get(sock))
            else:
                link = next(x for x in self.dialed if x.sock is sock)
                self._on_message(link, parts, now)

    def _on_router_message(self, parts: list[zmq.Frame], now: float) -> None:
        if len(parts) != 2:
            self._refuse_message(linkstate.LinkMessageError(f"{len(parts) - 1} parts, expected 1"))
            return
        route = parts[0].bytes
        link = self._routes.get(route)
        try:
            message = linkstate.decode(parts[1].bytes)
        except linkstate.LinkMessageError as exc:
            self._refuse_message(exc)
            return
        if isinstance(message, linkstate.Hello):
            # The node name must be the CURVE key this connection proved it holds.
            if parts[1].get("User-Id") != message.node:
                self._refuse_message(
                    linkstate.LinkMessageError("HELLO names a key it did not authenticate with"))
                return
            link = self.accepted.get(message.node)
            if link is None:
                name = self.names.get(message.node.encode("ascii"), message.node[:8])
                link = self.accepted[message.node] = Link(name, self._outgoing(), self._router)
            if link.route != route:
                # A new connection: what the old one carried may be lost.
                self._routes.pop(link.route or b"", None)
                link.route = route
                self._routes[route] = link
                link.out.block()
            if link.wants_data and not message.wants_data:
                link.out.discard()  # a send-only emitter: kept for nothing
            link.wants_data = message.wants_data
        if link is None:
            # DATA before HELLO (a reconnect): use the frame, acknowledge it later.
            assert isinstance(message, linkstate.Data)
            self.counters["federation_data_before_hello"] += 1
            self.on_frame(message.frame, _UNKNOWN)
            return
        self._process(link, message, now)

    def _on_message(self, link: Link, parts: list[bytes], now: float) -> None:
        try:
            if len(parts) != 1:
                raise linkstate.LinkMessageError(f"{len(parts)} parts, expected 1")
            message = linkstate.decode(parts[0])
        except linkstate.LinkMessageError as exc:
            self._refuse_message(exc)
            return
        self._process(link, message, now)

    def _process(self, link: Link, message: linkstate.Hello | linkstate.Data, now: float) -> None:
        link.heard_at = now
        if isinstance(message, linkstate.Data):
            link.incoming.received(message.epoch, message.seq, message.base)
            self.on_frame(message.frame, link)
            return
        link.out.ack(message.ack_epoch, message.ack_seq, now)
        if message.epoch != link.peer_epoch:
            if link.peer_epoch:
                self.counters["federation_peer_restarts_seen"] += 1
            log.info("federation: peer %s is up (epoch %s); resending %s unacknowledged frame(s)",
                     link.name, message.epoch.hex()[:8], len(link.out.unacked))
            link.peer_epoch = message.epoch
            link.out.block()  # a new peer: everything unacknowledged goes again
        if link.out.blocked:
            self._flush(link, now)

    def _flush(self, link: Link, now: float) -> None:
        """Send what waits, in order; new frames wait again if a send fails."""
        for seq, data in link.out.unblock(now):
            if not link.send(data, self.counters):
                link.out.block(seq)
                return

    def _refuse_message(self, exc: Exception) -> None:
        self.counters["federation_messages_refused"] += 1
        if self._should_log("federation_messages_refused"):
            log.warning("federation: refused a link message: %s", exc)

    def _should_log(self, counter: str) -> bool:
        n = self.counters[counter]
        return n <= _LOG_FIRST or n % _LOG_EVERY == 0

    # -- authentication and events ----------------------------------------

    def _authenticate(self, request: list[bytes]) -> None:
        """Answer one ZAP request: admit the CURVE keys of peers/ and emitters/, refuse and log the rest."""
        assert self._zap is not None
        if len(request) < 6:  # not from libzmq; REP still owes a reply
            self._zap.send_multipart([b"1.0", b"", b"500", b"bad ZAP request", b"", b""])
            return
        version, request_id, _domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        key = z85.encode(credentials[0]) if mechanism == b"CURVE" and len(credentials) == 1 \
            and len(credentials[0]) == 32 else b""
        if key and self.config.keys.is_authorized(key):
            self._zap.send_multipart([version, request_id, b"200", b"OK", key, b""])
            return
        self.counters["federation_peers_refused"] += 1
        if self._should_log("federation_peers_refused"):
            log.warning(
                "federation: refused a peer from %s: its public key %s is not in the key "
                "directory's peers/ or emitters/ (%s refusal(s) so far)", address.decode("ascii", "replace"),
                key.decode("ascii") if key else f"({mechanism.decode('ascii', 'replace')})",
                self.counters["federation_peers_refused"])
        self._zap.send_multipart([version, request_id, b"400", b"key not authorized", b"", b""])

    def _on_event(self, what: str, message: list[bytes], link: Link | None) -> None:
        event = zmq_monitor.parse(message)
        kind = event.event
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            log.info("federation: %s: link up (%s)", what, _endpoint(event))
            if link is not None:
                link.out.block()  # a new connection: what the old one carried may be lost
        elif kind == zmq.EVENT_DISCONNECTED:
            log.warning("federation: %s: link down (%s)", what, _endpoint(event))
        elif kind & _HANDSHAKE_FAILED:
            self.counters["federation_handshakes_failed"] += 1
            if self._should_log("federation_handshakes_failed"):
                log.warning("federation: %s: handshake failed (%s, %s): wrong or unauthorized key?",
                            what, _endpoint(event), _event_name(kind, event.value))

    # -- sending -----------------------------------------------------------

    def forward(self, frame: Sequence[bytes], source: Link | None, now: float) -> None:
        """Send a frame seen for the first time to every link but the one it came from."""
        for link in self.links():
            if link is source or not link.wants_data:
                continue
            message = link.out.add(frame, now)
            if message is None:
                continue  # waits behind unsent frames
            if link.send(message, self.counters):
                self.counters["federation_frames_out"] += 1
            else:
                link.out.block(link.out.seq)

    def tick(self, now: float) -> None:
        """Every HELLO_INTERVAL: say hello (with acks) on each link; resend what waited too long."""
        if not self.started or now < self._next_hello:
            return
        self._next_hello = now + linkstate.HELLO_INTERVAL
        node = self.config.keys.node
        for link in self.links():
            hello = linkstate.Hello(self.epoch, node, True, *link.ack)
            link.send(linkstate.encode_hello(hello), self.counters, is_data=False)
            if now - link.heard_at >= linkstate.PEER_ALIVE_WITHIN:
                continue
            if link.out.blocked:
                self._flush(link, now)
            elif link.out.stalled(now):
                for data in link.out.resend(now, older_than=linkstate.RESEND_AFTER):
                    link.send(data, self.counters)

    def received(self) -> dict[Link, tuple[bytes, int]]:
        """Per link, what arrived from the peer so far (epoch, contiguous link seq)."""
        return {link: (link.incoming.epoch, link.incoming.contiguous) for link in self.links()}

    def acknowledge(self, safe: Mapping[Link, tuple[bytes, int]] | None) -> None:
        """Set what each link's HELLO acknowledges: ``safe`` (``delivery.LocalDelivery.safe``),
        or, None, everything that arrived (no local worker to wait for)."""
        for link in self.links():
            if safe is None:
                link.ack = (link.incoming.epoch, link.incoming.contiguous)
            elif link in safe:
                link.ack = safe[link]

    def queued(self) -> int:
        return sum(len(link.out.unacked) for link in self.links())

    def status(self, now: float) -> list[dict[str, object]]:
        """Each link's state, for the broadcaster's status file (and the tests that wait on it)."""
        return [{"name": link.name, "dialed": link in self.dialed, "up": link.is_up(now),
                 "wants_data": link.wants_data, "queued": len(link.out.unacked)}
                for link in self.links()]


class _Unknown(Link):
    """Stands for 'a link we cannot name yet': a frame from it is forwarded to every link."""

    def __init__(self) -> None:
        super().__init__("?", linkstate.Outgoing(os.urandom(16), 1, Counter()), None)


_UNKNOWN = _Unknown()


def _endpoint(event: zmq_monitor.MonitorEvent) -> str:
    return event.endpoint.decode("utf-8", "replace")


def _event_name(kind: int, value: int) -> str:
    names: dict[int, str] = {
        zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused by the peer",
        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error",
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no detail",
    }
    return f"{names.get(kind, kind)}, code {value}"
