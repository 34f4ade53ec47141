"""The WebSocket engine.io uses in a barrel worker: two greenlets per connection, no more.

engine.io calls ``BarrelWebSocket(handler, server)(environ, start_response)``
for an upgrade; the handler reads with ``wait()`` in the request's greenlet
and engine.io's writer greenlet calls ``send()``. Reading happens in the
caller of ``wait()`` itself (simple-websocket adds a reader greenlet, a
selector and wsproto state per connection), and ``send()`` writes a frame
built in one step with ``sendall`` (simple-websocket's ``send`` may write
only part of a large frame).
"""
from __future__ import annotations

import collections
import logging
import socket
from typing import Any, ClassVar

import gevent.lock
import gevent.socket

from gunicorn_barrel.engineio_lean import SOCKET_KEY
from gunicorn_barrel.ws import deflate, frames

log = logging.getLogger("gunicorn_barrel.websocket")

_RECV_BYTES = 65536


def upgrade_problem(environ: dict[str, Any]) -> str | None:
    """Why this request is not a valid WebSocket upgrade, or None."""
    if environ.get("REQUEST_METHOD") != "GET":
        return "WebSocket upgrades use GET"
    if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
        return "missing 'Upgrade: websocket'"
    connection = {t.strip().lower() for t in environ.get("HTTP_CONNECTION", "").split(",")}
    if "upgrade" not in connection:
        return "missing 'Connection: Upgrade'"
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
        return "only WebSocket version 13 is supported"
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
    if len(key) != 24 or not key.endswith("=="):
        return "bad Sec-WebSocket-Key"
    return None


def _opcode_and_payload(message: str | bytes) -> tuple[int, bytes]:
    if isinstance(message, str):
        return frames.OP_TEXT, message.encode("utf-8")
    return frames.OP_BINARY, bytes(message)


class BarrelWebSocket:
    """One server-side WebSocket connection, in the shape engine.io's drivers have."""

    # Set by gunicorn_barrel.websocket.use_barrel_websocket from the settings.
    deflate_min_size: ClassVar[int] = 1024
    on_open: ClassVar[Any] = None  # called with (environ, raw socket)

    def __init__(self, handler: Any, server: Any) -> None:
        self.handler = handler
        self.server = server
        self._sock: Any = None
        self._parser: frames.FrameParser | None = None
        self._compress = False
        self._received: collections.deque[str | bytes] = collections.deque()
        self._write_lock = gevent.lock.Semaphore()
        self._busy = False  # a write is waiting for socket buffer space
        self._raw: Any = None  # the OS socket under gevent's, when plain TCP
        self._close_sent = False
        self._closed = False
        # Packets engine.io's writer took from its queue and has not sent:
        # nothing may overtake them, and a batch of them goes in one write.
        self._unsent = 0
        self._batching = False
        self._pending: list[bytes] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        sock: Any = environ.get(SOCKET_KEY) or environ.get("gunicorn.socket")
        problem = "no raw socket in this server" if sock is None else upgrade_problem(environ)
        if problem is not None:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [problem.encode()]
        extensions = deflate.negotiate(environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", ""))
        head = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {frames.accept_key(environ['HTTP_SEC_WEBSOCKET_KEY'])}\r\n"
        )
        if extensions is not None:
            head += f"Sec-WebSocket-Extensions: {extensions}\r\n"
        sock.sendall((head + "\r\n").encode("latin-1"))
        self._sock = sock  # engine.io sets its timeout (ping interval + timeout)
        if type(sock) is gevent.socket.socket:  # not TLS: its OS socket is non-blocking
            self._raw = sock._sock
        self._compress = extensions is not None
        self._parser = frames.FrameParser(
            self.server.max_http_buffer_size, deflate.inflate if self._compress else None
        )
        if self.on_open is not None:
            self.on_open(environ, sock)
        eio_socket = getattr(self.handler, "__self__", None)
        if eio_socket is not None:
            eio_socket.barrel_websocket = self  # see engineio_fast_paths()
        try:
            self.handler(self)
        finally:
            self.close()
        # The response was the 101 written above: gunicorn must write nothing.
        raise StopIteration()

    def send(self, message: str | bytes) -> None:
        """Send one message; OSError once the connection is closed (ends engine.io's writer)."""
        if self._close_sent:
            raise OSError("WebSocket is closed")
        opcode, payload = _opcode_and_payload(message)
        compressed = self._compress and len(payload) >= self.deflate_min_size
        if compressed:
            payload = deflate.compress(payload)
        data = frames.frame(opcode, payload, rsv1=compressed)
        if self._unsent:
            self._unsent -= 1
            if self._batching:
                self._pending.append(data)
                if self._unsent:
                    return
                self._batching = False
                data = b"".join(self._pending)
                self._pending.clear()
        self._write(data)

    def writer_took(self, count: int) -> None:
        """engine.io's writer took ``count`` packets to send (see engineio_fast_paths)."""
        self.flush()
        self._unsent = count
        self._batching = count > 1

    def flush(self) -> None:
        self._unsent, self._batching = 0, False
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._try_write(data)  # a broken connection shows at the next send()

    def send_now(self, pkt: Any) -> bool:
        """Write engine.io packet ``pkt`` at once if nothing is queued or in flight before it.

        False means: queue it the usual way (the writer greenlet sends it).
        The frame is built once per packet and kept on it: python-socketio
        sends one Packet object to all the clients of a broadcast.
        """
        if self._busy or self._unsent or self._raw is None or self._close_sent:
            return False
        data = pkt.__dict__.get("barrel_frame")
        if data is None:
            data = frames.frame(*_opcode_and_payload(pkt.encode()))
            pkt.barrel_frame = data
        if self._compress and len(data) >= self.deflate_min_size:
            return False  # goes compressed, through the writer
        try:
            sent = self._raw.send(data)
        except OSError:  # full, or broken (the reader or the writer will see it)
            return False
        if sent < len(data):
            self._busy = True  # nothing may overtake the rest
            gevent.spawn(self._write_rest, data[sent:])
        return True

    def _write_rest(self, rest: bytes) -> None:
        with self._write_lock:
            try:
                self._sock.sendall(rest)
            except OSError:
                self._closed = self._close_sent = True
            finally:
                self._busy = False

    def wait(self) -> str | bytes | None:
        """The next message from the client, or None when the connection is over."""
        while not self._received:
            if self._closed:
                return None
            try:
                data = self._sock.recv(_RECV_BYTES)
            except OSError:  # includes the idle timeout engine.io set
                data = b""
            if not data:
                self._closed = True
                return None
            self._handle(data)
        return self._received.popleft()

    def _handle(self, data: bytes) -> None:
        assert self._parser is not None
        try:
            events = self._parser.feed(data)
        except frames.ProtocolError as exc:
            log.info("WebSocket closed: %s", exc)
            self._closed = True
            self.close(exc.code, exc.reason)
            return
        for event in events:
            if isinstance(event, frames.Message):
                self._received.append(event.data)
            elif isinstance(event, frames.Ping):
                self._try_write(frames.frame(frames.OP_PONG, event.payload))
            elif isinstance(event, frames.Close):
                self._closed = True
                self.close(event.code)
                return

    def close(self, code: int = frames.CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame (once) and stop reading."""
        if self._close_sent or self._sock is None:
            return
        self._close_sent = True
        self._try_write(frames.close_frame(code, reason))
        try:
            # Wakes a wait() blocked in recv: the session ends without waiting
            # for the client's close frame or a timeout.
            self._sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _write(self, data: bytes) -> None:
        if not self._busy and self._raw is not None:
            # Fast path: one non-blocking send on the OS socket. Most frames
            # go out whole; what does not waits below, the gevent way.
            try:
                sent = self._raw.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        # The writer greenlet and the reader (pongs, close) share the socket:
        # whoever must wait for room holds the lock, the others queue behind.
        with self._write_lock:
            self._busy = True
            try:
                self._sock.sendall(data)
            finally:
                self._busy = False

    def _try_write(self, data: bytes) -> None:
        try:
            self._write(data)
        except OSError:
            self._closed = self._close_sent = True


def engineio_fast_paths() -> None:
    """Two shortcuts in engine.io's WebSocket sending; neither changes the order of packets.

    - Direct write: a packet for an upgraded client with nothing queued or in
      flight is written at once by the caller (one non-blocking send of a
      frame shared by every receiver), instead of queueing it and waking
      the client's writer greenlet. The common case while a server keeps up:
      the broadcast's last client gets it sooner, at less CPU.
    - Batched write: when packets did queue up (a client's socket was full,
      a burst), the writer takes them all (``Socket.poll``) and sends them
      one by one; told how many, the WebSocket joins them into one write.
    """
    from engineio.packet import PING
    from engineio.socket import Socket

    if getattr(Socket.poll, "__barrel_fast__", False):
        return
    original_poll, original_send = Socket.poll, Socket.send

    def poll(self: Any) -> Any:
        ws = self.__dict__.get("barrel_websocket")
        if ws is not None:
            ws.flush()
        packets = original_poll(self)
        # Only the WebSocket writer polls once the session is upgraded.
        if ws is not None and self.upgraded:
            ws.writer_took(len(packets))
        return packets

    def send(self: Any, pkt: Any) -> None:
        ws = self.__dict__.get("barrel_websocket")
        # PINGs always queue: the writer waits on its queue for at most
        # ping_interval + ping_timeout, then takes the client for dead.
        if (ws is not None and pkt.packet_type != PING and self.upgraded and not self.closed
                and not self.queue.qsize() and ws.send_now(pkt)):
            return
        original_send(self, pkt)

    poll.__barrel_fast__ = send.__barrel_fast__ = True  # type: ignore[attr-defined]
    Socket.poll, Socket.send = poll, send
