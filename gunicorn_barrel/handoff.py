"""Passing a client connection to the worker that owns its session (SCM_RIGHTS).

Each worker binds a unix datagram socket ``w-<pid>.sock`` in the instance's
runtime directory. A worker that peeked a request for another worker's
session sends the client socket's file descriptor there, with the client
address and the index of the listener it came in on. Nothing of the request
was read yet (we only peeked), so the owner serves it as if it had accepted
the connection itself. Why not proxy: a handed-off connection costs one
sendmsg and no copy of any byte afterwards, long-polls and upgrades included.
"""
from __future__ import annotations

import array
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent import socket as gsocket

log = logging.getLogger("gunicorn_barrel.handoff")

_SEND_TIMEOUT = 1.0
_MAX_META = 512

Adopt = Callable[[socket.socket, Any, int], None]


def endpoint(runtime_dir: str, pid: int) -> str:
    return os.path.join(runtime_dir, f"w-{pid}.sock")


class HandoffReceiver:
    """Receives connections handed to this worker and passes them to ``adopt``."""

    def __init__(self, runtime_dir: str, adopt: Adopt) -> None:
        self.path = endpoint(runtime_dir, os.getpid())
        self._adopt = adopt
        self._sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if os.path.exists(self.path):  # left by a dead worker whose pid we got
            os.unlink(self.path)
        self._sock.bind(self.path)
        self._loop = gevent.spawn(self._receive)
        self.received = 0

    def _receive(self) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self._sock, _MAX_META, 4)
            except OSError as exc:
                if self._sock.fileno() < 0:
                    return
                log.error("handoff receive failed: %s", exc)
                gevent.sleep(0.1)
                continue
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
        self._loop.kill(block=True, timeout=1.0)
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class HandoffSender:
    """Sends client connections to their owners."""

    def __init__(self, runtime_dir: str) -> None:
        self.runtime_dir = runtime_dir
        self._sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sent = 0
        self.failed = 0

    def send(self, owner_pid: int, client: socket.socket, addr: Any, listener_index: int) -> bool:
        """Hand ``client`` to worker ``owner_pid``; False if that worker is not there."""
        meta = json.dumps({"addr": addr, "listener": listener_index}).encode()
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [client.fileno()]))]
        path = endpoint(self.runtime_dir, owner_pid)
        deadline = time.monotonic() + _SEND_TIMEOUT
        delay = 0.0005
        while True:
            try:
                # MSG_DONTWAIT: a full owner queue (net.unix.max_dgram_qlen,
                # often 10) is not signalled as "not writable" on our side, and
                # gevent's own retry returns 0 without sending: we retry here.
                self._sock.sendmsg([meta], rights, socket.MSG_DONTWAIT, path)
                self.sent += 1
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                gevent.sleep(delay)
                delay = min(delay * 2, 0.02)
            except OSError as exc:  # no such worker (gone, or never was)
                log.debug("handoff to %s failed: %r", owner_pid, exc)
                break
        self.failed += 1
        return False

    def close(self) -> None:
        self._sock.close()
