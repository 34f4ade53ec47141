"""The events a zeromq socket monitor sends (zmq_socket_monitor(3)), decoded. Sans-io.

pyzmq's own decoder lives in ``zmq.utils.monitor``, whose import pulls in
zmq.asyncio, asyncio and ssl (about 8 MB of a side process's memory); the
format is two frames, so barrel reads it itself.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

_HEAD = struct.Struct("=HI")  # the event id, 16 bits, then its value, 32 bits; no padding


class MonitorEvent(NamedTuple):
    event: int  # a zmq.EVENT_* constant
    value: int  # the event's value (an fd, an errno, a reconnect interval...)
    endpoint: bytes


def parse(parts: Sequence[bytes]) -> MonitorEvent:
    """The event of a monitor message; ValueError if it is not one."""
    if len(parts) != 2 or len(parts[0]) != _HEAD.size:
        raise ValueError(f"not a zeromq monitor event: {[bytes(p)[:16] for p in parts]!r}")
    event, value = _HEAD.unpack(parts[0])
    return MonitorEvent(event, value, bytes(parts[1]))
