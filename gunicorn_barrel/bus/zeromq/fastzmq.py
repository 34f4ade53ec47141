"""Multipart send and receive with plain int flags, and a gevent wait on a plain socket.

pyzmq's flag constants are ``enum.IntFlag``s: ``zmq.SNDMORE | flags`` builds
a new enum member, about 3 µs, and ``send_multipart`` does it for every part.
At thousands of bus frames a second that was a tenth of a worker's time
(profiled with py-spy), so the hot paths use ints. The bus client also waits
for its SUB socket with gevent directly on zeromq's file descriptor instead
of through zmq.green, whose per-message state checks cost as much again.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

NOBLOCK = int(zmq.NOBLOCK)
SNDMORE = int(zmq.SNDMORE)
RCVMORE = int(zmq.RCVMORE)
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)


def send_parts(sock: zmq.Socket, parts: Sequence[bytes], flags: int = 0) -> None:
    """``sock.send_multipart(parts, flags)`` without enum arithmetic.

    zeromq queues a multipart message whole or not at all: with NOBLOCK,
    zmq.Again can only come from the first part.
    """
    last = len(parts) - 1
    more = flags | SNDMORE
    for index, part in enumerate(parts):
        sock.send(part, more if index < last else flags)


def recv_parts(sock: zmq.Socket, flags: int = 0) -> list[bytes]:
    """``sock.recv_multipart(flags)`` without enum arithmetic."""
    parts = [sock.recv(flags)]
    while sock.getsockopt(RCVMORE):
        parts.append(sock.recv(flags))
    return parts


def wait_readable(sock: zmq.Socket, timeout: float) -> None:
    """Block this greenlet until ``sock`` may have a message (or ``timeout`` passed).

    zeromq's descriptor is edge-triggered: it signals changes of the socket's
    events, which must be read (getsockopt EVENTS) before waiting on it.
    """
    import gevent.socket

    if int(sock.getsockopt(EVENTS)) & POLLIN:
        return
    fd: Any = sock.getsockopt(zmq.FD)
    try:
        gevent.socket.wait_read(fd, timeout=timeout)
    except gevent.socket.timeout:
        pass
