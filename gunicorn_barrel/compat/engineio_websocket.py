"""engine.io's WebSocket session without a writer greenlet (``Socket._websocket_handler``).

engine.io serves a WebSocket with two greenlets: the request's, reading, and
a writer that waits on the session's queue for as long as the connection
lives. An idle connection so keeps a second greenlet, its saved stack and
its share of the interpreter's frame stack (issue 16: the largest items of
an idle connection's memory after the reader's). Here the writer exists only
while packets wait:

- a packet goes out at once, written by whoever sends it, when nothing is
  queued or in flight before it (``engineio_fast_paths.direct_send``);
- otherwise it is queued as engine.io does, and ``kick`` starts a drainer
  greenlet if none runs: it writes what the queue holds, in order and as one
  batch, and ends when the queue is empty;
- the end of the queue (engine.io's ``None``, put by ``Socket.close``) makes
  the drainer write what came before it, then the WebSocket's close frame.

The protocol is engine.io's own, in our words: on an upgrade from polling,
the client's ``2probe`` PING is answered with ``3probe``, the pending poll is
ended with a NOOP, and the UPGRADE packet completes it; then each message
read is given to ``Socket.receive``. A client that sends nothing for
``ping_interval + ping_timeout`` (no PONG) times out in the read, whose
socket timeout engine.io's rule sets. Any other WebSocket (not barrel's)
gets engine.io's own handler.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent

from gunicorn_barrel.compat import shapes
from gunicorn_barrel.compat.versions import IncompatibleLibrary
from gunicorn_barrel.compat.websocket_driver import forget, open_websockets
from gunicorn_barrel.ws.connection import BarrelWebSocket

ENGINEIO = "python-engineio"

Method = Callable[..., Any]

# What the handler reads or sets on an engine.io Socket and its server.
SOCKET_ATTRIBUTES = ("queue", "connected", "upgrading", "upgraded", "closed", "closing", "sid", "server")
SERVER_ATTRIBUTES = ("max_http_buffer_size", "ping_interval", "ping_timeout", "logger", "reason")


def check() -> None:
    """What the handler uses of engine.io (Socket state, receive/close, packets, exceptions) and gevent."""
    from engineio import exceptions, packet
    from engineio.socket import Socket

    shapes.signature(ENGINEIO, Socket, "receive", "engineio.socket.Socket.receive", ("self", "pkt"))
    shapes.accepts(ENGINEIO, Socket, "close", "engineio.socket.Socket.close",
                   ("self", "wait", "abort", "reason"))
    eio_socket = shapes.fresh_engineio_socket()
    shapes.has_attributes(ENGINEIO, eio_socket, SOCKET_ATTRIBUTES, "a new engineio.socket.Socket")
    shapes.has_attributes(ENGINEIO, eio_socket.server, SERVER_ATTRIBUTES, "an engineio.Server")
    shapes.has_attributes(ENGINEIO, eio_socket.server.reason, ("TRANSPORT_CLOSE",), "engineio.Server.reason")
    shapes.has_attributes(ENGINEIO, eio_socket.queue, ("put", "get_nowait", "task_done", "qsize"),
                          "engine.io's gevent queue")
    for name in ("PING", "PONG", "NOOP", "UPGRADE"):
        shapes.attribute(ENGINEIO, packet, name, f"engineio.packet.{name}")
    for name in ("UnknownPacketError", "SocketIsClosedError"):
        shapes.attribute(ENGINEIO, exceptions, name, f"engineio.exceptions.{name}")
    # An idle WebSocket waits on an io watcher (BarrelWebSocket.detach).
    shapes.accepts("gevent", gevent.get_hub().loop, "io", "gevent's loop.io", ("fd", "events"))
    probe = packet.Packet(encoded_packet="2probe")
    if (probe.packet_type, probe.data) != (packet.PING, "probe"):
        raise IncompatibleLibrary(ENGINEIO, "engineio.packet.Packet no longer decodes '2probe'")


def serving_without_writer(handler: Method) -> Method:
    """``Socket._websocket_handler`` that serves barrel WebSockets without a writer greenlet."""

    def barrel_websocket_handler(self: Any, ws: Any) -> Any:
        if not isinstance(ws, BarrelWebSocket):
            return handler(self, ws)
        return _serve(self, ws)

    return barrel_websocket_handler


def closing_with_drain(close: Method) -> Method:
    """``Socket.close`` that has a barrel WebSocket's drainer write the end of the queue."""

    def barrel_close(self: Any, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        ws = open_websockets.get(self)
        if ws is None or not self.upgraded:
            return close(self, wait, abort, reason)  # the polling path takes the end of the queue
        was_open = not self.closed and not self.closing
        close(self, False, abort, reason)  # queues the end: engine.io's None
        if was_open:
            kick(self, ws)
            if wait:
                self.queue.join()
        return None

    return barrel_close


def kick(eio_socket: Any, ws: BarrelWebSocket) -> None:
    """Packets were queued for ``ws``: make sure a drainer greenlet writes them."""
    if ws.drainer is None:
        ws.drainer = gevent.spawn(_drain, eio_socket, ws)


def _drain(eio_socket: Any, ws: BarrelWebSocket) -> None:
    """Write what is queued, in order, until the queue is empty or ends."""
    queue = eio_socket.queue
    try:
        while True:
            packets = []
            ended = False
            while queue.qsize():
                pkt = queue.get_nowait()
                queue.task_done()
                if pkt is None:
                    ended = True
                    break
                packets.append(pkt)
            if not packets and not ended:
                return
            ws.writer_took(len(packets))
            for pkt in packets:
                ws.send(pkt.encode())  # the last one writes the batch (and may wait for room)
            if ended:
                ws.close()
                return
    except OSError:  # the connection broke: the reader sees it too
        ws.close()
    finally:
        ws.drainer = None


def _serve(self: Any, ws: BarrelWebSocket) -> list[Any]:
    from engineio import packet

    server = self.server

    def next_message() -> Any:  # during the upgrade, as engine.io's handler does
        data = ws.wait()
        if data and len(data) > server.max_http_buffer_size:
            raise ValueError("packet is too large")
        return data

    ws.set_timeout(server.ping_interval + server.ping_timeout)
    if self.connected:
        # An upgrade from long-polling: packets wait in the queue meanwhile.
        self.upgrading = True
        probe = packet.Packet(encoded_packet=next_message())
        if probe.packet_type != packet.PING or probe.data != "probe":
            server.logger.info("%s: Failed websocket upgrade, no PING packet", self.sid)
            self.upgrading = False
            return []
        ws.send(packet.Packet(packet.PONG, data="probe").encode())
        self.queue.put(packet.Packet(packet.NOOP))  # ends the pending poll
        upgrade = next_message()
        if packet.Packet(encoded_packet=upgrade).packet_type != packet.UPGRADE:
            server.logger.info("%s: Failed websocket upgrade, expected UPGRADE packet, received %s "
                               "instead.", self.sid, upgrade)
            self.upgraded = self.upgrading = False
            return []
        self.upgraded = True
        self.upgrading = False
    else:
        self.connected = self.upgraded = True
    server.logger.info("%s: Upgrade to websocket successful", self.sid)
    kick(self, ws)  # what was queued before the upgrade
    if ws.detach(lambda message: _received(self, message), lambda: _finish(self, ws)):
        return []  # read when readable, without this greenlet (BarrelWebSocket.detach)
    while True:
        try:
            message = ws.wait()  # its size is checked once, in _received
        except Exception as exc:
            if not self.closed:
                server.logger.info('%s: Unexpected error "%s", closing connection', self.sid, exc)
            break
        if message is None or not _received(self, message):
            break  # closed by the client, or timed out
    _finish(self, ws)
    return []


def _received(self: Any, message: Any) -> bool:
    """Give one message of the client to engine.io; False ends the connection."""
    from engineio import exceptions, packet

    server = self.server
    if len(message) > server.max_http_buffer_size:
        server.logger.info('%s: Unexpected error "packet is too large", closing connection', self.sid)
        return False
    try:
        self.receive(packet.Packet(encoded_packet=message))
    except exceptions.UnknownPacketError:
        pass
    except exceptions.SocketIsClosedError:
        server.logger.info("Receive error -- socket is closed")
        return False
    except Exception:
        server.logger.exception("Unknown receive error")
        return False
    return True


def _finish(self: Any, ws: BarrelWebSocket) -> None:
    """The connection is over: what is still queued goes out before the close frame, as with
    engine.io's writer, then the session closes."""
    self.queue.put(None)
    kick(self, ws)
    drainer = ws.drainer
    if drainer is not None:
        drainer.join()
    self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
    forget(self, ws)
