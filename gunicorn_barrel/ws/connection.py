"""The WebSocket engine.io uses in a barrel worker: one greenlet per idle connection.

engine.io calls ``BarrelWebSocket(handler, server)(environ, start_response)``
for an upgrade (through the factory in ``compat.websocket_driver``); the
handler reads with ``wait()`` in the request's greenlet; packets are written
by whoever sends them (``send_now``) or, when some had to wait, by a drainer
greenlet that lives only while they do (``compat.engineio_websocket``). Reading happens in the
caller of ``wait()`` itself (simple-websocket adds a reader greenlet, a
selector and wsproto state per connection), and ``send()`` writes a frame
built in one step with ``sendall`` (simple-websocket's ``send`` may write
only part of a large frame).
"""
from __future__ import annotations

import io
import logging
import os
import socket
from typing import Any

import gevent.lock
import gevent.socket

from gunicorn_barrel.ws import deflate, frames

# The environ key of the client's raw socket on engine.io requests in a barrel
# worker (moved out of 'gunicorn.socket', see compat.engineio_lean).
SOCKET_KEY = "barrel.socket"

log = logging.getLogger("gunicorn_barrel.ws.connection")

_NO_BODY = io.BytesIO(b"")  # a WebSocket upgrade has no body; shared by every kept environ


class DetachedCount:
    """How many WebSockets of this worker read without a greenlet (``BarrelWebSocket.detach``):
    they hold no slot of gunicorn's connection pool, so the worker counts them itself."""

    def __init__(self) -> None:
        self.value = 0


detached = DetachedCount()

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
    if not frames.valid_client_key(environ.get("HTTP_SEC_WEBSOCKET_KEY", "")):
        return "bad Sec-WebSocket-Key"
    return None


def _opcode_and_payload(message: str | bytes) -> tuple[int, bytes]:
    if isinstance(message, str):
        return frames.OP_TEXT, message.encode("utf-8")
    return frames.OP_BINARY, bytes(message)


class _LastFrame:
    """The frame of the last packet written by send_now, with that packet.

    python-socketio sends one Packet object to every client of a broadcast,
    one client after the other: the frame is built once per broadcast, and
    nothing is stored on engine.io's packet.
    """

    __slots__ = ("packet", "frame")

    def __init__(self) -> None:
        self.packet: Any = None
        self.frame = b""


_last_frame = _LastFrame()


class BarrelWebSocket:
    """One server-side WebSocket connection, in the shape engine.io's drivers have.

    ``deflate_min_size``: with deflate negotiated, smaller messages go uncompressed.
    """

    def __init__(self, handler: Any, server: Any, deflate_min_size: int = 1024) -> None:
        self.handler = handler
        self.server = server
        self.deflate_min_size = deflate_min_size
        self._sock: Any = None
        self._parser: frames.FrameParser | None = None
        self._compress = False
        self._window_bits = 15  # of the messages it compresses (deflate.compress)
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
        # The greenlet writing what engine.io queued, while there is some
        # (compat.engineio_websocket); None when nothing waits.
        self.drainer: Any = None
        # Reading without a greenlet of its own (detach): the readable watcher
        # and what to call with each message and at the end.
        self.detached = False
        self._watcher: Any = None
        self._on_message: Any = None
        self._on_end: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        sock: Any = environ.get(SOCKET_KEY) or environ.get("gunicorn.socket")
        problem = "no raw socket in this server" if sock is None else upgrade_problem(environ)
        if problem is not None:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [problem.encode()]
        agreement = deflate.negotiate(environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", ""))
        head = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {frames.accept_key(environ['HTTP_SEC_WEBSOCKET_KEY'])}\r\n"
        )
        if agreement is not None:
            head += f"Sec-WebSocket-Extensions: {agreement.answer}\r\n"
            self._window_bits = agreement.window_bits
        sock.sendall((head + "\r\n").encode("latin-1"))
        # The request is over. python-socketio keeps its environ for the session's
        # life: it should not keep the request's socket, parser and body stream too.
        environ.pop(SOCKET_KEY, None)
        environ["wsgi.input"] = _NO_BODY
        self._sock = sock  # engine.io sets its timeout (ping interval + timeout)
        if type(sock) is gevent.socket.socket:  # not TLS: its OS socket is non-blocking
            self._raw = sock._sock
        self._compress = agreement is not None
        self._parser = frames.FrameParser(
            self.server.max_http_buffer_size, deflate.inflate if self._compress else None
        )
        try:
            self.handler(self)
        finally:
            if not self.detached:
                self.close()
        # The response was the 101 written above: gunicorn must write nothing.
        raise StopIteration()

    # -- reading without a greenlet ------------------------------------------

    def detach(self, on_message: Any, on_end: Any) -> bool:
        """Go on reading without the calling greenlet, which may then return; False if this
        connection cannot (TLS, or a serving loop that closes the socket when it returns).

        Whenever the socket is readable a short-lived greenlet reads what is
        there and calls ``on_message(data)`` for each message, in order
        (False from it ends the connection); at the end, ``on_end()`` runs
        in such a greenlet and the socket is closed.

        The connection goes on on a duplicate of its descriptor: the server
        that accepted it closes its own socket object when the request's
        greenlet returns (gevent's StreamServer, barrel's handoff loop).
        """
        if self._raw is None or self._closed:
            return False
        own = gevent.socket.socket(fileno=os.dup(self._sock.fileno()))
        own.settimeout(self._sock.gettimeout())
        self._sock, self._raw = own, own._sock
        self.detached = True
        detached.value += 1
        self._on_message, self._on_end = on_message, on_end
        self._watcher = gevent.get_hub().loop.io(self._raw.fileno(), 1)
        # What came with the last read (already parsed) is handled first.
        gevent.spawn(self._read_available)
        return True

    def _readable(self) -> None:
        # In the hub: one reading greenlet at a time keeps the messages in order.
        self._watcher.stop()
        gevent.spawn(self._read_available)

    def _read_available(self) -> None:
        while not self._closed:
            message = self._next_received()
            if message is not None:
                if self._on_message(message) is False:
                    self._closed = True
            elif not self._closed and not self._receive_available():
                self._watcher.start(self._readable)  # nothing more for now
                return
        self._end()

    def _receive_available(self) -> bool:
        """Read what the socket has without waiting; False when there is nothing yet."""
        assert self._parser is not None
        try:
            data = self._raw.recv(_RECV_BYTES)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if data:
            self._parser.receive(data)
        else:
            self._closed = True
        return True

    def _end(self) -> None:
        detached.value -= 1
        self._watcher.close()
        try:
            self._on_end()
        finally:
            self.close()
            self._sock.close()

    def set_timeout(self, seconds: float) -> None:
        """A read (or a write waiting for room) longer than this ends the connection."""
        self._sock.settimeout(seconds)

    def send(self, message: str | bytes) -> None:
        """Send one message; OSError once the connection is closed (ends engine.io's writer)."""
        if self._close_sent:
            raise OSError("WebSocket is closed")
        opcode, payload = _opcode_and_payload(message)
        compressed = self._compress and len(payload) >= self.deflate_min_size
        if compressed:
            payload = deflate.compress(payload, self._window_bits)
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
        """engine.io's writer took ``count`` packets to send (see compat.engineio_fast_paths)."""
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
        The frame is built once per broadcast (see _LastFrame).
        """
        if self._busy or self._unsent or self._raw is None or self._close_sent:
            return False
        last = _last_frame
        if pkt is last.packet:
            data = last.frame
        else:
            data = frames.frame(*_opcode_and_payload(pkt.encode()))
            last.packet, last.frame = pkt, data
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
        """The next message from the client, or None when the connection is over.

        Frames are handled in the order they came, as this is called: a ping
        is answered after the messages before it were returned (and echoed,
        if the app does), and a frame that breaks the protocol closes the
        connection only once the messages before it were returned.
        """
        while not self._closed:
            message = self._next_received()
            if message is not None:
                return message
            if not self._closed:
                self._receive()
        return None

    def _next_received(self) -> str | bytes | None:
        """The next message among the bytes already received, after answering the control
        frames before it; None when more bytes are needed or the connection is over."""
        assert self._parser is not None
        while not self._closed:
            try:
                event = self._parser.next_event()
            except frames.ProtocolError as exc:
                log.info("WebSocket closed: %s", exc)
                self._closed = True
                self.close(exc.code, exc.reason)
                return None
            if isinstance(event, frames.Message):
                return event.data
            if isinstance(event, frames.Ping):
                self._try_write(frames.frame(frames.OP_PONG, event.payload))
            elif isinstance(event, frames.Close):
                self._closed = True
                self.close(event.code)
            elif event is None:
                return None
        return None

    def _receive(self) -> None:
        assert self._parser is not None
        try:
            data = self._sock.recv(_RECV_BYTES)
        except OSError:  # includes the idle timeout engine.io set
            data = b""
        if data:
            self._parser.receive(data)
        else:
            self._closed = True

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

    def abort(self) -> None:
        """Cut the connection now, both ways (also unblocks a writer stuck on a client that does not read)."""
        if self._sock is None:
            return
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
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
