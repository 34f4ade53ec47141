"""Wrappers of engine.io's ``Socket.poll`` and ``Socket.send``: barrel WebSockets write sooner, in batches.

Two shortcuts in engine.io's WebSocket sending; neither changes the order of packets.

- Direct write: a packet for an upgraded client with nothing queued or in
  flight is written at once by the caller (one non-blocking send of a
  frame shared by every receiver), instead of queueing it and waking
  the client's writer greenlet. The common case while a server keeps up:
  the broadcast's last client gets it sooner, at less CPU.
- Batched write: when packets did queue up (a client's socket was full,
  a burst), the writer takes them all (``Socket.poll``) and sends them
  one by one; told how many, the WebSocket joins them into one write.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn_barrel.compat import shapes
from gunicorn_barrel.compat.engineio_websocket import kick
from gunicorn_barrel.compat.websocket_driver import open_websockets

ENGINEIO = "python-engineio"

Method = Callable[..., Any]

# What our wrappers read on an engine.io Socket.
SOCKET_ATTRIBUTES = ("queue", "upgraded", "closed", "closing", "sid", "server", "last_ping")


def check() -> None:
    """engine.io's Socket.poll/send, and what the wrappers read on a fresh Socket and Packet."""
    from engineio import packet
    from engineio.socket import Socket

    shapes.signature(ENGINEIO, Socket, "poll", "engineio.socket.Socket.poll", ("self",))
    shapes.signature(ENGINEIO, Socket, "send", "engineio.socket.Socket.send", ("self", "pkt"))
    eio_socket = shapes.fresh_engineio_socket()
    shapes.has_attributes(ENGINEIO, eio_socket, SOCKET_ATTRIBUTES, "a new engineio.socket.Socket")
    shapes.has_attributes(ENGINEIO, eio_socket.queue, ("qsize", "get_nowait", "task_done"),
                          "engine.io's gevent queue")
    shapes.has_attributes(ENGINEIO, packet.Packet(packet.MESSAGE, "x"), ("packet_type", "encode"),
                          "an engineio.packet.Packet")
    shapes.attribute(ENGINEIO, packet, "PING", "engineio.packet.PING")


def direct_poll(poll: Method) -> Method:
    """``Socket.poll`` that tells the client's WebSocket how many packets its writer took."""

    def barrel_poll(self: Any) -> Any:
        ws = open_websockets.get(self)
        if ws is not None:
            ws.flush()
        packets = poll(self)
        # Only the WebSocket writer polls once the session is upgraded.
        if ws is not None and self.upgraded:
            ws.writer_took(len(packets))
        return packets

    return barrel_poll


def direct_send(send: Method) -> Method:
    """``Socket.send`` that writes at once to a WebSocket with nothing queued before the packet,
    and otherwise queues it and has the WebSocket's drainer write it (``engineio_websocket``)."""
    def barrel_send(self: Any, pkt: Any) -> None:
        ws = open_websockets.get(self)
        if ws is None or not self.upgraded:
            send(self, pkt)
            return
        if not self.closed and not self.queue.qsize() and ws.send_now(pkt):
            return
        send(self, pkt)
        kick(self, ws)

    return barrel_send
