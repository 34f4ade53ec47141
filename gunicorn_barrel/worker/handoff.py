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

Who may hand a connection over: only the other workers of this arbiter. The
runtime directory is private (0700), and each connection's peer is checked
with ``SO_PEERCRED`` (same uid, and a process whose parent is our arbiter), so
another process of the same user cannot inject a client with a forged
address. What comes with a message is checked too: a descriptor that is not a
stream socket is closed, and the receiver goes on.

Latency: the sender stamps each message with its monotonic clock (one clock
for every process of the host), and the receiver observes the time to its
taking the connection (``barrel_handoff_latency_seconds``).
"""
from __future__ import annotations

import array
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent import socket as gsocket

from gunicorn_barrel.metrics import catalog, recorder
from gunicorn_barrel.worker.serve import Connection

log = logging.getLogger("gunicorn_barrel.worker.handoff")

_SEND_TIMEOUT = 1.0
_MAX_META = 1024
_BACKLOG = 128
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

Adopt = Callable[[socket.socket, Any, int, Connection], None]


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
        self._latency = recorder.process().histogram(catalog.metric("barrel_handoff_latency_seconds"))

    def _accept_peers(self) -> None:
        while True:
            try:
                peer, _ = self._sock.accept()
            except OSError:
                return  # closed
            try:
                refused = peer_refused(peer)
            except OSError as exc:
                refused = f"no peer credentials: {exc}"
            if refused is not None:
                log.warning("handoff connection refused: %s", refused)
                peer.close()
                continue
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
            addr, listener_index, conn, sent_at = _parse_meta(data)
        except (ValueError, KeyError, TypeError):
            os.close(fds[0])
            log.warning("handoff message refused: %r", data[:100])
            return
        try:
            client = gsocket.socket(fileno=fds[0])
        except OSError as exc:  # not a socket
            os.close(fds[0])
            log.warning("handoff refused a descriptor that is not a socket: %s", exc)
            return
        if client.type != socket.SOCK_STREAM:
            client.close()
            log.warning("handoff refused a socket that is not a stream")
            return
        self.received += 1
        if sent_at is not None and 0 <= time.monotonic() - sent_at < 3600:
            self._latency.observe(time.monotonic() - sent_at)
        self._adopt(client, addr, listener_index, conn)

    def close(self) -> None:
        self._acceptor.kill(block=True, timeout=1.0)
        gevent.killall(list(self._readers), block=True, timeout=1.0)
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _parse_meta(data: bytes) -> tuple[Any, int, Connection, float | None]:
    meta = json.loads(data)
    addr = tuple(meta["addr"]) if isinstance(meta["addr"], list) else meta["addr"]
    proxy_info = meta.get("proxy")
    if proxy_info is not None and not isinstance(proxy_info, dict):
        raise TypeError("proxy info must be a map")
    sent_at = meta.get("sent_at")
    sent_at = float(sent_at) if isinstance(sent_at, int | float) else None
    return addr, int(meta["listener"]), Connection(int(meta.get("served", 0)), proxy_info), sent_at


def peer_refused(peer: socket.socket) -> str | None:
    """Why the process at the other end of ``peer`` may not hand us connections, or None."""
    pid, uid, _gid = _PEERCRED.unpack(peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      _PEERCRED.size))
    if uid != os.geteuid():
        return f"peer pid {pid} runs as uid {uid}, not {os.geteuid()}"
    parent = _parent_pid(pid)
    if parent != os.getppid():
        return f"peer pid {pid} is not a worker of this arbiter (its parent is {parent})"
    return None


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # The command name may hold spaces and parentheses: the fields follow the last ")".
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _running(pid: int) -> bool:
    """Whether ``pid`` is alive and not exiting.

    A SIGKILLed worker shows as a zombie while its other threads (zeromq's)
    are still torn down; meanwhile its handoff socket still takes a
    connection, which is then reset when the socket goes. Without /proc
    nothing can be told: the handoff is tried.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split(None, 1)[0]
    except FileNotFoundError:
        return not _HAVE_PROC
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


_HAVE_PROC = os.path.exists("/proc/self/stat")


class HandoffSender:
    """Sends client connections to their owners, over one connection per owner."""

    def __init__(self, runtime_dir: str) -> None:
        self.runtime_dir = runtime_dir
        self._peers: dict[int, gsocket.socket] = {}
        self.sent = 0
        self.failed = 0

    def send(self, owner_pid: int, client: socket.socket, addr: Any, listener_index: int,
             conn: Connection) -> bool:
        """Hand ``client`` to worker ``owner_pid``; False if that worker is not there."""
        if not _running(owner_pid):
            self.failed += 1
            return False
        meta = json.dumps({"addr": addr, "listener": listener_index, "served": conn.served,
                           "proxy": conn.proxy_info, "sent_at": time.monotonic()}).encode()
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
