"""WebSocket frames (RFC 6455), sans-io: bytes in, messages out; frames out built in one step.

The server side only: client frames must be masked, server frames never are.
A protocol violation raises ``ProtocolError`` carrying the close code to
answer with (1002 protocol error, 1007 bad UTF-8, 1009 too big).
"""
from __future__ import annotations

import base64
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


class FrameParser:
    """Turns the bytes a client sends into events, enforcing RFC 6455 and a size limit."""

    def __init__(self, max_message_size: int, inflate: Inflate | None = None) -> None:
        self.max_message_size = max_message_size
        self.inflate = inflate  # set when permessage-deflate was negotiated
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode: int | None = None
        self._fragment_compressed = False
        self._fragment_size = 0

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while True:
            event = self._next_frame()
            if event is None:
                return events
            if event is not _PARTIAL:
                events.append(event)  # type: ignore[arg-type]

    def _next_frame(self) -> Event | object | None:
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
        if len(buf) < end:
            return None
        payload = unmask(bytes(buf[offset + 4:end]), bytes(buf[offset:offset + 4]))
        del buf[:end]
        if opcode in _CONTROL_OPCODES:
            return _control(opcode, payload)
        return self._data(fin, bool(rsv1), opcode, payload)

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
        if self._fragment_size + size > self.max_message_size:
            raise ProtocolError(CLOSE_TOO_BIG, f"message over {self.max_message_size} bytes")

    def _data(self, fin: int, compressed: bool, opcode: int, payload: bytes) -> Event | object:
        if opcode != OP_CONTINUATION:
            self._fragment_opcode, self._fragment_compressed = opcode, compressed
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if not fin:
            return _PARTIAL
        opcode, compressed = self._fragment_opcode or OP_TEXT, self._fragment_compressed
        data = b"".join(self._fragments)
        self._fragments, self._fragment_opcode, self._fragment_size = [], None, 0
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
