"""WebSocket frames (RFC 6455), sans-io: bytes in, messages out; frames out built in one step.

The server side only: client frames must be masked, server frames never are.
A protocol violation raises ``ProtocolError`` carrying the close code to
answer with (1002 protocol error, 1007 bad UTF-8, 1009 too big).
"""
from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import hashlib
import struct
from collections.abc import Callable

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_BAD_DATA, CLOSE_TOO_BIG = 1000, 1002, 1007, 1009
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


class ProtocolError(Exception):
    """The peer broke the protocol; close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Message:
    data: str | bytes


@dataclasses.dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclasses.dataclass(frozen=True)
class Pong:
    payload: bytes


@dataclasses.dataclass(frozen=True)
class Close:
    code: int
    reason: str


Event = Message | Ping | Pong | Close


def valid_client_key(client_key: str) -> bool:
    """RFC 6455 4.1: the key is 16 random bytes, base64-encoded (24 ASCII characters)."""
    try:
        raw = base64.b64decode(client_key.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        return False
    return len(raw) == 16


def accept_key(client_key: str) -> str:
    """The Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key."""
    digest = hashlib.sha1(client_key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """One unfragmented, unmasked frame: header and payload in one bytes object."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return _SHORT.pack(first, 126, size) + payload
    return _LONG.pack(first, 127, size) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason.encode("utf-8")[:120])


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking key, as one big-integer operation."""
    size = len(payload)
    if not size:
        return b""
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(size, "little")


Inflate = Callable[[bytes, int], bytes]


# A fragmented message may have at most max_message_size / this many
# fragments (and at least _MIN_FRAGMENTS): one-byte or empty fragments cannot
# keep a message open, each costing a header, until the session times out.
BYTES_PER_FRAGMENT = 64
_MIN_FRAGMENTS = 128


@dataclasses.dataclass(slots=True)
class _DataFrame:
    """A data frame whose header was read and whose payload is still arriving."""

    fin: bool
    compressed: bool
    opcode: int
    size: int
    key: bytes
    done: int = 0  # payload bytes read so far

    def key_from_here(self) -> bytes:
        """The masking key rotated to where the next payload byte falls in its 4-byte cycle."""
        shift = self.done % 4
        return self.key[shift:] + self.key[:shift] if shift else self.key


class FrameParser:
    """Turns the bytes a client sends into events, in order, enforcing RFC 6455 and a size limit.

    ``receive()`` adds bytes, ``next_event()`` takes the events out one at a
    time: every event before a frame that breaks the protocol comes out
    before the ProtocolError does, so that the messages a client sent before
    its bad frame are answered first (as RFC 6455 expects when it says to
    fail the connection at the bad frame). A data frame's payload is taken
    as it arrives, not when the frame is complete: the UTF-8 of a text
    message that arrives in pieces is checked piece by piece, and an
    invalid sequence fails the connection where it occurs.
    """

    def __init__(self, max_message_size: int, inflate: Inflate | None = None) -> None:
        self.max_message_size = max_message_size
        self.max_fragments = max(_MIN_FRAGMENTS, max_message_size // BYTES_PER_FRAGMENT)
        self.inflate = inflate  # set when permessage-deflate was negotiated
        self._buffer = bytearray()
        self._frame: _DataFrame | None = None  # a data frame's payload being read
        # The message being reassembled: its bytes in one buffer (memory
        # follows its size, not its number of fragments or pieces).
        self._fragments = bytearray()
        self._fragment_count = 0
        self._fragment_opcode: int | None = None
        self._fragment_compressed = False
        # Checks the UTF-8 of an uncompressed text message arriving in pieces.
        self._utf8: codecs.IncrementalDecoder | None = None

    def receive(self, data: bytes) -> None:
        self._buffer += data

    def next_event(self) -> Event | None:
        """The next event of the bytes received so far, or None until more arrive.

        Raises ProtocolError when the next frame breaks the protocol (every
        event before it has been returned).
        """
        while True:
            if self._frame is None:
                header = self._next_header()
                if header is None or not isinstance(header, _DataFrame):
                    return header
                self._frame = header
            event = self._payload(self._frame)
            if event is None:
                return None
            if event is not _PARTIAL:
                return event  # type: ignore[return-value]

    def feed(self, data: bytes) -> list[Event]:
        """receive(data), then every event there is: all of them, or ProtocolError (for tests)."""
        self.receive(data)
        events: list[Event] = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def _next_header(self) -> _DataFrame | Event | None:
        """A data frame's header (consumed), the event of a frame taken whole, or None for more bytes."""
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        fin, rsv1, opcode = first & 0x80, first & 0x40, first & 0x0F
        if first & 0x30:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits RSV2/RSV3 set")
        if not second & 0x80:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        size, offset = second & 0x7F, 2
        if size == 126:
            if len(buf) < 4:
                return None
            size, offset = struct.unpack_from("!H", buf, 2)[0], 4
        elif size == 127:
            if len(buf) < 10:
                return None
            size, offset = struct.unpack_from("!Q", buf, 2)[0], 10
        self._check_header(fin, rsv1, opcode, size)
        end = offset + 4 + size
        if opcode in _CONTROL_OPCODES or (fin and opcode != OP_CONTINUATION and len(buf) >= end):
            # Taken whole: a control frame (125 bytes at most, waited for) and
            # the common case, a message in one frame that is all here.
            if len(buf) < end:
                return None
            payload = unmask(bytes(buf[offset + 4:end]), bytes(buf[offset:offset + 4]))
            del buf[:end]
            if opcode in _CONTROL_OPCODES:
                return _control(opcode, payload)
            return self._message(opcode, bool(rsv1), payload)
        if len(buf) < offset + 4:
            return None
        key = bytes(buf[offset:offset + 4])
        del buf[:offset + 4]
        return _DataFrame(bool(fin), bool(rsv1), opcode, size, key)

    def _check_header(self, fin: int, rsv1: int, opcode: int, size: int) -> None:
        if opcode in _CONTROL_OPCODES:
            if not fin or size > 125 or rsv1:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "bad control frame")
            return
        if opcode not in _DATA_OPCODES:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if opcode == OP_CONTINUATION:
            if self._fragment_opcode is None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            if rsv1:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "RSV1 on a continuation frame")
        elif self._fragment_opcode is not None:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        if rsv1 and self.inflate is None:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "RSV1 set without permessage-deflate")
        # Refused from the header, before a byte of an oversized payload is buffered.
        if len(self._fragments) + size > self.max_message_size:
            raise ProtocolError(CLOSE_TOO_BIG, f"message over {self.max_message_size} bytes")
        if self._fragment_count >= self.max_fragments:
            raise ProtocolError(CLOSE_TOO_BIG, f"message in more than {self.max_fragments} fragments")

    def _payload(self, frame: _DataFrame) -> Event | object | None:
        """Take what has arrived of ``frame``'s payload: its message, _PARTIAL, or None for more bytes."""
        buf = self._buffer
        count = min(len(buf), frame.size - frame.done)
        if not count and frame.done < frame.size:
            return None
        piece = unmask(bytes(buf[:count]), frame.key_from_here())
        del buf[:count]
        frame.done += count
        self._started(frame)
        if frame.done < frame.size:
            self._take(piece, final=False)
            return _PARTIAL
        self._frame = None
        self._take(piece, final=frame.fin)
        self._fragment_count += 1
        if not frame.fin:
            return _PARTIAL
        opcode, compressed = self._fragment_opcode or OP_TEXT, self._fragment_compressed
        data = bytes(self._fragments)
        self._fragments.clear()
        self._fragment_count, self._fragment_opcode, self._utf8 = 0, None, None
        return self._message(opcode, compressed, data)

    def _started(self, frame: _DataFrame) -> None:
        """Open the message of ``frame`` if it is its first frame and not open yet."""
        if frame.opcode == OP_CONTINUATION or self._fragment_opcode is not None:
            return
        self._fragment_opcode, self._fragment_compressed = frame.opcode, frame.compressed
        if frame.opcode == OP_TEXT and not frame.compressed:
            self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def _take(self, piece: bytes, final: bool) -> None:
        """Add a piece of the open message's payload, checking its UTF-8 as far as it goes."""
        if self._utf8 is not None:
            try:
                self._utf8.decode(piece, final=final)
            except UnicodeDecodeError:
                raise ProtocolError(CLOSE_BAD_DATA, "text message is not UTF-8") from None
        self._fragments += piece

    def _message(self, opcode: int, compressed: bool, data: bytes) -> Event:
        if compressed:
            assert self.inflate is not None
            data = self.inflate(data, self.max_message_size)
        if opcode == OP_BINARY:
            return Message(data)
        try:
            return Message(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(CLOSE_BAD_DATA, "text message is not UTF-8") from None


_PARTIAL = object()


def _control(opcode: int, payload: bytes) -> Event:
    if opcode == OP_PING:
        return Ping(payload)
    if opcode == OP_PONG:
        return Pong(payload)
    if not payload:
        return Close(CLOSE_NORMAL, "")
    if len(payload) == 1:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "close frame of one byte")
    code = struct.unpack_from("!H", payload)[0]
    if code < 1000 or code in (1004, 1005, 1006, 1015) or 1015 < code < 3000 or code >= 5000:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        return Close(code, payload[2:].decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError(CLOSE_BAD_DATA, "close reason is not UTF-8") from None
