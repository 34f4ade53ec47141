"""Passing a client connection to the worker that owns its session (SCM_RIGHTS).

Each worker listens on a unix SOCK_SEQPACKET socket ``w-<pid>.sock`` in the
instance's runtime directory. A worker that peeked a request for another
worker's session sends the client socket's file descriptor there, with the
client address and the index of the listener it came in on, over a
connection it keeps to that worker. Nothing of the request was read yet (we
only peeked), so the owner serves it as if it had accepted the connection
itself. Why not proxy: a handed-off connection costs one sendmsg and no copy
of any byte afterwards, long-polls and upgrades included.

Why SEQPACKET: message boundaries (one message, one descriptor) with a
connection's flow control. Datagram sockets queue only
``net.unix.max_dgram_qlen`` (often 10) messages per receiver and do not tell
the sender when there is room again.
"""
from __future__ import annotations

import array
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import gevent
from gevent import socket as gsocket

log = logging.getLogger("gunicorn_barrel.handoff")

_SEND_TIMEOUT = 1.0
_MAX_META = 512
_BACKLOG = 128

Adopt = Callable[[socket.socket, Any, int], None]


def endpoint(runtime_dir: str, pid: int) -> str:
    return os.path.join(runtime_dir, f"w-{pid}.sock")


class HandoffReceiver:
    """Receives connections handed to this worker and passes them to ``adopt``."""

    def __init__(self, runtime_dir: str, adopt: Adopt) -> None:
        self.path = endpoint(runtime_dir, os.getpid())
        self._adopt = adopt
        self._sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if os.path.exists(self.path):  # left by a dead worker whose pid we got
            os.unlink(self.path)
        self._sock.bind(self.path)
        self._sock.listen(_BACKLOG)
        self._readers: set[gevent.Greenlet] = set()
        self._acceptor = gevent.spawn(self._accept_peers)
        self.received = 0

    def _accept_peers(self) -> None:
        while True:
            try:
                peer, _ = self._sock.accept()
            except OSError:
                return  # closed
            reader = gevent.spawn(self._read, peer)
            self._readers.add(reader)
            reader.link(self._readers.discard)

    def _read(self, peer: gsocket.socket) -> None:
        with peer:
            while True:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(peer, _MAX_META, 4)
                except OSError:
                    return
                if not data and not fds:
                    return  # the sending worker went away
                self._accept(data, fds)

    def _accept(self, data: bytes, fds: list[int]) -> None:
        if len(fds) != 1:
            for fd in fds:  # a stray message: close what came with it
                os.close(fd)
            return
        try:
            meta = json.loads(data)
            addr = tuple(meta["addr"]) if isinstance(meta["addr"], list) else meta["addr"]
            listener_index = int(meta["listener"])
        except (ValueError, KeyError, TypeError):
            os.close(fds[0])
            log.warning("handoff message refused: %r", data[:100])
            return
        self.received += 1
        self._adopt(gsocket.socket(fileno=fds[0]), addr, listener_index)

    def close(self) -> None:
        self._acceptor.kill(block=True, timeout=1.0)
        gevent.killall(list(self._readers), block=True, timeout=1.0)
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class HandoffSender:
    """Sends client connections to their owners, over one connection per owner."""

    def __init__(self, runtime_dir: str) -> None:
        self.runtime_dir = runtime_dir
        self._peers: dict[int, gsocket.socket] = {}
        self.sent = 0
        self.failed = 0

    def send(self, owner_pid: int, client: socket.socket, addr: Any, listener_index: int) -> bool:
        """Hand ``client`` to worker ``owner_pid``; False if that worker is not there."""
        meta = json.dumps({"addr": addr, "listener": listener_index}).encode()
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [client.fileno()]))]
        for attempt in (1, 2):  # a cached connection may be to a worker that has died
            try:
                with gevent.Timeout(_SEND_TIMEOUT):
                    peer = self._peer(owner_pid)
                    # gevent's sendmsg returns 0 without sending after a
                    # second EAGAIN: wait for room ourselves instead.
                    while True:
                        try:
                            peer.sendmsg([meta], rights, socket.MSG_DONTWAIT)
                            break
                        except BlockingIOError:
                            gsocket.wait_write(peer.fileno())
                self.sent += 1
                return True
            except (OSError, gevent.Timeout) as exc:
                self._forget(owner_pid)
                if attempt == 2 or isinstance(exc, (gevent.Timeout, FileNotFoundError,
                                                    ConnectionRefusedError)):
                    log.debug("handoff to %s failed: %r", owner_pid, exc)
                    break
        self.failed += 1
        return False

    def _peer(self, owner_pid: int) -> gsocket.socket:
        peer = self._peers.get(owner_pid)
        if peer is None:
            peer = gsocket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                peer.connect(endpoint(self.runtime_dir, owner_pid))
            except OSError:
                peer.close()
                raise
            self._peers[owner_pid] = peer
        return peer

    def _forget(self, owner_pid: int) -> None:
        peer = self._peers.pop(owner_pid, None)
        if peer is not None:
            peer.close()

    def close(self) -> None:
        for pid in list(self._peers):
            self._forget(pid)
